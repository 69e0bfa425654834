//! Every variable that the README documents for `control-plane` reaches the configuration,
//! with no subcommand (what `cargo run --release` runs) and with each subcommand; flags win
//! over the environment, which wins over the file; a file's unknown key is named.
//!
//! One test in this binary: it sets process environment variables, so nothing may run beside it.

use std::path::{Path, PathBuf};

use clap::Parser;
use control_plane::cli::{Cli, Cmd, TokenArgs};
use control_plane::config::{Config, LocalSettings};

const SECRET: &str = "0123456789abcdef0123456789abcdef-secret";

/// One documented variable (or a pair that only works together) and what it must change.
struct Case {
    vars: &'static [(&'static str, &'static str)],
    /// `local`'s own: checked with no subcommand and with `local` only.
    local_only: bool,
    check: fn(&Config, Option<&LocalSettings>) -> bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case { vars: &[("HTTP_ADDR", "127.0.0.1:9443")], local_only: false, check: |c, _| c.http_addr.to_string() == "127.0.0.1:9443" },
        Case { vars: &[("DATA_DIR", "/tmp/cp-config-test-data")], local_only: false, check: |c, _| c.data_dir == Path::new("/tmp/cp-config-test-data") },
        Case { vars: &[("API_KEY", "APIfromenv"), ("API_SECRET", SECRET)], local_only: false, check: |c, _| c.api_key == "APIfromenv" && c.api_secret == SECRET },
        Case { vars: &[("NODE_SECRET", "node-secret-from-env")], local_only: false, check: |c, _| c.node_secret == "node-secret-from-env" },
        Case { vars: &[("TLS_CERT", "/etc/x/cert.pem"), ("TLS_KEY", "/etc/x/key.pem")], local_only: false, check: |c, _| c.tls == Some((PathBuf::from("/etc/x/cert.pem"), PathBuf::from("/etc/x/key.pem"))) },
        Case { vars: &[("PUBLIC_IP", "203.0.113.7,198.51.100.2")], local_only: false, check: |c, _| c.public_ip.len() == 2 && c.public_ip[0].to_string() == "203.0.113.7" },
        Case { vars: &[("OPEN_JOIN", "false")], local_only: false, check: |c, _| !c.open_join },
        Case { vars: &[("OPEN_JOIN", "true")], local_only: false, check: |c, _| c.open_join },
        Case { vars: &[("INVITE_SECRET", "invite-from-the-env"), ("OPEN_JOIN", "true")], local_only: false, check: |c, _| c.invite.as_deref() == Some("invite-from-the-env") },
        Case { vars: &[("DEFAULT_MAX_PARTICIPANTS", "12")], local_only: false, check: |c, _| c.default_max_participants == 12 },
        Case { vars: &[("AUTO_CREATE_ROOMS", "false")], local_only: false, check: |c, _| !c.auto_create_rooms },
        Case { vars: &[("CORE_BUSY_LIMIT", "70")], local_only: false, check: |c, _| c.core_busy_limit == 70 },
        Case { vars: &[("TURN_SECRET", "turn-secret-from-env")], local_only: false, check: |c, _| c.turn.as_ref().is_some_and(|t| t.secret == "turn-secret-from-env") },
        Case { vars: &[("TURN_HOST", "turn.example.com"), ("TURN_SECRET", "s")], local_only: false, check: |c, _| c.turn.as_ref().is_some_and(|t| t.host == "turn.example.com") },
        Case { vars: &[("TURN_PORT", "3479"), ("TURN_SECRET", "s")], local_only: false, check: |c, _| c.turn.as_ref().is_some_and(|t| t.port == 3479) },
        Case { vars: &[("TURNS_PORT", "5350"), ("TURN_SECRET", "s")], local_only: false, check: |c, _| c.turn.as_ref().is_some_and(|t| t.tls_port == 5350) },
        Case { vars: &[("TURN_CREDENTIAL_TTL", "600"), ("TURN_SECRET", "s")], local_only: false, check: |c, _| c.turn.as_ref().is_some_and(|t| t.ttl == 600) },
        Case { vars: &[("MAX_CONNECTIONS", "321")], local_only: false, check: |c, _| c.max_connections == 321 },
        Case { vars: &[("MAX_CONNECTIONS_PER_IP", "7")], local_only: false, check: |c, _| c.max_connections_per_ip == 7 },
        Case { vars: &[("WEBHOOK_URLS", "http://127.0.0.1:9/a,https://hooks.example.com/b")], local_only: false, check: |c, _| c.webhook_urls.len() == 2 && c.webhook_urls[1].host_str() == Some("hooks.example.com") },
        Case { vars: &[("MEDIA_PORT_BASE", "41000")], local_only: true, check: |_, l| l.is_some_and(|l| l.media_port_base == 41000) },
        Case { vars: &[("MEDIA_CORES", "1")], local_only: true, check: |_, l| l.is_some_and(|l| l.media_cores == Some(1)) },
        Case { vars: &[("FORCE_EPOLL", "true")], local_only: true, check: |_, l| l.is_some_and(|l| l.force_epoll) },
        Case { vars: &[("NO_RELAY", "true")], local_only: true, check: |c, l| l.is_some_and(|l| l.no_relay) && c.turn.is_none() },
        Case { vars: &[("MEDIA_PLANE_BIN", "/opt/mp")], local_only: true, check: |_, l| l.is_some_and(|l| l.media_plane_bin == Some(PathBuf::from("/opt/mp"))) },
        Case { vars: &[("RELAY_BIN", "/opt/relay")], local_only: true, check: |_, l| l.is_some_and(|l| l.relay_bin == Some(PathBuf::from("/opt/relay"))) },
    ]
}

/// The environment variables of the README's `control-plane` table.
fn documented() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let start = readme.find("`serve` runs the control plane alone").expect("the control-plane options");
    let end = start + readme[start..].find("`media-plane` (started by").expect("the media-plane options");
    let mut vars = Vec::new();
    for row in readme[start..end].lines().filter(|l| l.starts_with("| `")) {
        let env = row.split('|').nth(2).unwrap_or_default();
        vars.extend(env.split(',').map(|v| v.trim().trim_matches('`').to_string()).filter(|v| !v.is_empty()));
    }
    vars
}

fn clear(names: &[String]) {
    for n in names {
        std::env::remove_var(n);
    }
}

/// Parses `args` in the current environment and resolves the command's configuration.
fn resolve(args: &[&str]) -> Result<(Config, Option<LocalSettings>), String> {
    let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
    match cli.into_command() {
        Cmd::Local(l) => l.resolve().map(|(c, l)| (c, Some(l))).map_err(|e| e.to_string()),
        Cmd::Serve { server } | Cmd::Token(TokenArgs { server, .. }) => server.resolve(false).map(|c| (c, None)).map_err(|e| e.to_string()),
    }
}

#[test]
fn documented_variables_flags_and_the_file_reach_every_command() {
    let dir = std::env::temp_dir().join(format!("cp-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let mut all: Vec<String> = documented();
    let cases = cases();
    // Every documented variable is checked here.
    for var in &all {
        assert!(cases.iter().any(|c| c.vars.iter().any(|(n, _)| n == var)) || var == "CONFIG", "README documents {var}, which this test does not check");
    }
    all.extend(cases.iter().flat_map(|c| c.vars.iter().map(|(n, _)| n.to_string())));
    all.sort();
    all.dedup();
    let modes: [&[&str]; 4] = [&["control-plane"], &["control-plane", "local"], &["control-plane", "serve"], &["control-plane", "token", "--room", "r", "--identity", "i"]];
    let mut checked = 0;
    for case in &cases {
        for mode in modes {
            if case.local_only && mode.len() > 1 && mode[1] != "local" {
                continue;
            }
            clear(&all);
            std::env::set_var("DATA_DIR", data);
            for (n, v) in case.vars {
                std::env::set_var(n, v);
            }
            let (cfg, local) = resolve(mode).unwrap_or_else(|e| panic!("{:?} with {:?}: {e}", mode, case.vars));
            assert!((case.check)(&cfg, local.as_ref()), "{:?} with {:?} not honored: {cfg:?} {local:?}", mode, case.vars);
            checked += 1;
        }
    }
    assert!(checked >= 4 * 20 + 2 * 6);

    // CONFIG names the file; flags win over the environment, which wins over the file.
    clear(&all);
    let file = dir.join("c.toml");
    std::fs::write(&file, format!("data_dir = {data:?}\nhttp_addr = \"127.0.0.1:9000\"\ndefault_max_participants = 9\nmedia_cores = 1\nno_relay = true\n")).unwrap();
    std::env::set_var("CONFIG", &file);
    for mode in modes {
        let (cfg, _) = resolve(mode).unwrap();
        assert_eq!((cfg.http_addr.port(), cfg.default_max_participants), (9000, 9), "{mode:?}: the file");
    }
    let (_, local) = resolve(&["control-plane"]).unwrap();
    let local = local.unwrap();
    assert!(local.media_cores == Some(1) && local.no_relay, "local's keys from the file: {local:?}");
    std::env::set_var("HTTP_ADDR", "127.0.0.1:9001");
    assert_eq!(resolve(&["control-plane"]).unwrap().0.http_addr.port(), 9001, "the environment over the file");
    assert_eq!(resolve(&["control-plane", "--http-addr", "127.0.0.1:9002"]).unwrap().0.http_addr.port(), 9002, "a flag over both");
    assert_eq!(resolve(&["control-plane", "serve", "--http-addr", "127.0.0.1:9003"]).unwrap().0.http_addr.port(), 9003);

    // A key the file does not know is an error that names it.
    std::fs::write(&file, "htp_addr = \"127.0.0.1:9000\"\n").unwrap();
    for mode in modes {
        let err = resolve(mode).unwrap_err();
        assert!(err.contains("htp_addr"), "{mode:?}: {err}");
    }
    clear(&all);
    let _ = std::fs::remove_dir_all(&dir);
}
