//! coturn-style configuration files: one `name=value` or bare `name` per line, `#` comments.

/// A line that is neither `name=value` nor `name`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: expected `name=value` or `name`")]
pub struct ConfError {
    /// 1-based line number.
    pub line: usize,
}

/// Turns the file into command-line arguments (`--name value`, `--name`), placed before the
/// real command line so that flags given there win.
pub fn file_args(text: &str) -> Result<Vec<String>, ConfError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (line, None),
        };
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(ConfError { line: n + 1 });
        }
        out.push(format!("--{k}"));
        if let Some(v) = v {
            out.push(v.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_coturn_file() {
        let text = "# coturn\nlistening-port=3479\nrealm = \"example.org\"\nuse-auth-secret\nstatic-auth-secret=s3cret # inline\n\nuser=alice:pw\n";
        assert_eq!(
            file_args(text).unwrap(),
            ["--listening-port", "3479", "--realm", "example.org", "--use-auth-secret", "--static-auth-secret", "s3cret", "--user", "alice:pw"]
        );
        assert_eq!(file_args("good=1\nnot a key\n"), Err(ConfError { line: 2 }));
    }
}
