//! Secrets: random ones, and comparing them without leaking where they differ.

/// A random alphanumeric secret of `len` characters (about 5.95 bits each).
pub fn random(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect()
}

/// Constant-time comparison of two secrets.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_secrets_differ_and_compare() {
        let (a, b) = (super::random(32), super::random(32));
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert!(super::equal(a.as_bytes(), a.as_bytes()));
        assert!(!super::equal(a.as_bytes(), b.as_bytes()));
        assert!(!super::equal(b"abc", b"abcd"));
    }
}
