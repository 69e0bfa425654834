//! Configuration: flags, environment and an optional TOML file (flags and environment win),
//! validated into [`Config`] with clear errors.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::secret;

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The TOML file is malformed or has unknown keys.
    #[error("invalid config file {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    /// A value is invalid.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The secrets file could not be written or read.
    #[error("secrets file {0}: {1}")]
    Secrets(PathBuf, String),
}

/// Server options shared by `serve` and `local` (all optional so that the file can fill them).
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// TOML configuration file (keys as the long flags, with underscores).
    #[arg(long, env = "CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTPS/WSS listen address [default: 0.0.0.0:8443].
    #[arg(long, env = "HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Directory for generated certificates and secrets [default: ./data].
    #[arg(long, env = "DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// API key for the REST API and token issuer (generated when unset).
    #[arg(long, env = "API_KEY")]
    pub api_key: Option<String>,
    /// API secret, at least 32 characters (generated when unset).
    #[arg(long, env = "API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
    /// Secret that media-plane nodes present on the control link (generated when unset).
    #[arg(long, env = "NODE_SECRET", hide_env_values = true)]
    pub node_secret: Option<String>,
    /// PEM certificate chain; with --tls-key, replaces the generated development certificate.
    #[arg(long, env = "TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Public address(es) of this host: covered by the development certificate and, in
    /// `local` mode, advertised by the media plane. Comma-separated.
    #[arg(long, env = "PUBLIC_IP", value_delimiter = ',')]
    pub public_ip: Option<Vec<IpAddr>>,
    /// Let the web app mint its own tokens at /app/token [default: true in local, false in serve].
    #[arg(long, env = "OPEN_JOIN")]
    pub open_join: Option<bool>,
    /// The secret the open join asks for; the printed app URL carries it [default: generated
    /// once and stored in secrets.toml].
    #[arg(long, env = "INVITE_SECRET", hide_env_values = true)]
    pub invite_secret: Option<String>,
    /// Participant limit of rooms created by a join (0: none) [default: 0].
    #[arg(long, env = "DEFAULT_MAX_PARTICIPANTS")]
    pub default_max_participants: Option<u32>,
    /// Create rooms on first join [default: true].
    #[arg(long, env = "AUTO_CREATE_ROOMS")]
    pub auto_create_rooms: Option<bool>,
    /// A media core busier than this (percent of its time, as it last reported) takes no new
    /// participant; 100 turns the check off [default: 85].
    #[arg(long, env = "CORE_BUSY_LIMIT")]
    pub core_busy_limit: Option<u16>,
    /// Shared secret of the TURN relay's REST credentials (coturn's static-auth-secret);
    /// generated in local mode. Without it, clients get no TURN servers.
    #[arg(long, env = "TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Host name or address clients use for STUN/TURN [default: the first --public-ip, or the primary address].
    #[arg(long, env = "TURN_HOST")]
    pub turn_host: Option<String>,
    /// TURN port for UDP and TCP [default: 3478].
    #[arg(long, env = "TURN_PORT")]
    pub turn_port: Option<u16>,
    /// TURN over TLS port [default: 5349].
    #[arg(long, env = "TURNS_PORT")]
    pub turns_port: Option<u16>,
    /// Lifetime of TURN credentials handed to clients, in seconds [default: 21600].
    #[arg(long, env = "TURN_CREDENTIAL_TTL")]
    pub turn_credential_ttl: Option<u64>,
    /// Concurrent HTTPS/WSS connections in total (lowered to fit the open-files limit) [default: 10000].
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Concurrent HTTPS/WSS connections from one address (an IPv6 /64) [default: 200].
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<u32>,
    /// URLs that receive webhook events (POST, signed with the API secret). Comma-separated.
    #[arg(long, env = "WEBHOOK_URLS", value_delimiter = ',')]
    pub webhook_urls: Option<Vec<String>>,
}

/// The same keys as [`ServerArgs`] and [`LocalArgs`], from the TOML file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    http_addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    api_key: Option<String>,
    api_secret: Option<String>,
    node_secret: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    public_ip: Option<Vec<IpAddr>>,
    open_join: Option<bool>,
    invite_secret: Option<String>,
    default_max_participants: Option<u32>,
    auto_create_rooms: Option<bool>,
    core_busy_limit: Option<u16>,
    turn_secret: Option<String>,
    turn_host: Option<String>,
    turn_port: Option<u16>,
    turns_port: Option<u16>,
    turn_credential_ttl: Option<u64>,
    max_connections: Option<u32>,
    max_connections_per_ip: Option<u32>,
    webhook_urls: Option<Vec<String>>,
    // `local` only; `serve` ignores them, so that one file serves both.
    media_plane_bin: Option<PathBuf>,
    media_port_base: Option<u16>,
    media_cores: Option<usize>,
    force_epoll: Option<bool>,
    relay_bin: Option<PathBuf>,
    no_relay: Option<bool>,
}

/// `local`'s own options: its children, the media plane and the relay. Given without a
/// subcommand too, as `cargo run --release` does.
#[derive(Debug, Clone, Default, Args)]
pub struct LocalArgs {
    /// Server options.
    #[command(flatten)]
    pub server: ServerArgs,
    /// media-plane binary [default: next to this executable, built by cargo if missing].
    #[arg(long, env = "MEDIA_PLANE_BIN")]
    pub media_plane_bin: Option<PathBuf>,
    /// UDP port of media core 0; core i uses base + i (0: free ports) [default: 50000].
    #[arg(long, env = "MEDIA_PORT_BASE")]
    pub media_port_base: Option<u16>,
    /// Media cores to use [default: all].
    #[arg(long, env = "MEDIA_CORES")]
    pub media_cores: Option<usize>,
    /// Run the media plane and relay on epoll instead of io_uring.
    #[arg(long, env = "FORCE_EPOLL")]
    pub force_epoll: bool,
    /// relay binary [default: next to this executable, built by cargo if missing].
    #[arg(long, env = "RELAY_BIN")]
    pub relay_bin: Option<PathBuf>,
    /// Do not start the TURN relay.
    #[arg(long, env = "NO_RELAY")]
    pub no_relay: bool,
}

/// `local`'s options, merged over the file and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSettings {
    /// media-plane binary, if given.
    pub media_plane_bin: Option<PathBuf>,
    /// UDP port of media core 0.
    pub media_port_base: u16,
    /// Media cores, if limited.
    pub media_cores: Option<usize>,
    /// epoll instead of io_uring.
    pub force_epoll: bool,
    /// relay binary, if given.
    pub relay_bin: Option<PathBuf>,
    /// No TURN relay.
    pub no_relay: bool,
}

impl LocalArgs {
    /// Merges flags/environment over the file over defaults, for the server and the children.
    pub fn resolve(&self) -> Result<(Config, LocalSettings), ConfigError> {
        let file = self.server.read_file()?;
        let mut cfg = self.server.resolve_with(&file, true)?;
        let local = LocalSettings {
            media_plane_bin: self.media_plane_bin.clone().or(file.media_plane_bin),
            media_port_base: self.media_port_base.or(file.media_port_base).unwrap_or(50000),
            media_cores: self.media_cores.or(file.media_cores),
            force_epoll: self.force_epoll || file.force_epoll.unwrap_or(false),
            relay_bin: self.relay_bin.clone().or(file.relay_bin),
            no_relay: self.no_relay || file.no_relay.unwrap_or(false),
        };
        if local.no_relay {
            cfg.turn = None;
        }
        Ok((cfg, local))
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub http_addr: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// API key and secret, and whether they were just generated.
    pub api_key: String,
    /// API secret.
    pub api_secret: String,
    /// Node secret.
    pub node_secret: String,
    /// Whether secrets were generated on this run.
    pub generated_secrets: bool,
    /// Real certificate and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Public addresses.
    pub public_ip: Vec<IpAddr>,
    /// Open join for the web app.
    pub open_join: bool,
    /// The open join's invite secret (set whenever the open join is on).
    pub invite: Option<String>,
    /// Default participant limit.
    pub default_max_participants: u32,
    /// Auto-create rooms.
    pub auto_create_rooms: bool,
    /// Busy share (percent) from which a media core takes no new participant.
    pub core_busy_limit: u16,
    /// TURN relay settings handed to clients.
    pub turn: Option<TurnConfig>,
    /// Concurrent connections in total.
    pub max_connections: u32,
    /// Concurrent connections per source address.
    pub max_connections_per_ip: u32,
    /// Webhook receivers.
    pub webhook_urls: Vec<reqwest::Url>,
}

/// Where clients find the TURN relay and how their credentials are made.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// Shared REST secret.
    pub secret: String,
    /// Host in the ICE server URLs.
    pub host: String,
    /// UDP/TCP port.
    pub port: u16,
    /// TLS port.
    pub tls_port: u16,
    /// Credential lifetime in seconds.
    pub ttl: u64,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct Secrets {
    api_key: Option<String>,
    api_secret: Option<String>,
    node_secret: Option<String>,
    turn_secret: Option<String>,
    invite_secret: Option<String>,
}

fn load_secrets(path: &Path) -> Result<Secrets, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(t) => toml::from_str(&t).map_err(|e| ConfigError::Secrets(path.into(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Secrets::default()),
        Err(e) => Err(ConfigError::Secrets(path.into(), e.to_string())),
    }
}

fn store_secrets(path: &Path, s: &Secrets) -> Result<(), ConfigError> {
    let err = |e: String| ConfigError::Secrets(path.into(), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let text = toml::to_string(s).map_err(|e| err(e.to_string()))?;
    certs::write_secret_file(path, &text).map_err(|e| err(e.to_string()))
}

impl ServerArgs {
    /// Merges flags/environment over the file over defaults, validates, and fills secrets
    /// (from the data directory, or newly generated and stored there).
    pub fn resolve(&self, local_mode: bool) -> Result<Config, ConfigError> {
        self.resolve_with(&self.read_file()?, local_mode)
    }

    /// The `--config` file, or an empty one. An unknown key is an error that names it.
    fn read_file(&self) -> Result<FileConfig, ConfigError> {
        match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read(p.clone(), e))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse(p.clone(), e))
            }
            None => Ok(FileConfig::default()),
        }
    }

    fn resolve_with(&self, file: &FileConfig, local_mode: bool) -> Result<Config, ConfigError> {
        let file = file.clone();
        let data_dir = self.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("data"));
        let api_key = self.api_key.clone().or(file.api_key);
        let api_secret = self.api_secret.clone().or(file.api_secret);
        let node_secret = self.node_secret.clone().or(file.node_secret);
        if api_key.is_some() != api_secret.is_some() {
            return Err(ConfigError::Invalid("--api-key and --api-secret must be set together".into()));
        }
        if let Some(s) = &api_secret {
            if s.len() < 32 {
                return Err(ConfigError::Invalid("--api-secret must be at least 32 characters".into()));
            }
        }
        if node_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(ConfigError::Invalid("--node-secret must be at least 16 characters".into()));
        }
        let tls_cert = self.tls_cert.clone().or(file.tls_cert);
        let tls_key = self.tls_key.clone().or(file.tls_key);
        let tls = match (tls_cert, tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(ConfigError::Invalid("--tls-cert and --tls-key must be set together".into())),
        };

        let secrets_path = data_dir.join("secrets.toml");
        let mut stored = load_secrets(&secrets_path)?;
        let mut generated = false;
        let (api_key, api_secret) = match (api_key, api_secret) {
            (Some(k), Some(s)) => (k, s),
            _ => {
                if stored.api_key.is_none() || stored.api_secret.is_none() {
                    stored.api_key = Some(format!("API{}", secret::random(12)));
                    stored.api_secret = Some(secret::random(48));
                    generated = true;
                }
                (stored.api_key.clone().unwrap_or_default(), stored.api_secret.clone().unwrap_or_default())
            }
        };
        let node_secret = match node_secret {
            Some(s) => s,
            None => {
                if stored.node_secret.is_none() {
                    stored.node_secret = Some(secret::random(48));
                    generated = true;
                }
                stored.node_secret.clone().unwrap_or_default()
            }
        };
        let mut turn_secret = self.turn_secret.clone().or(file.turn_secret);
        if turn_secret.is_none() && local_mode {
            if stored.turn_secret.is_none() {
                stored.turn_secret = Some(secret::random(40));
                generated = true;
            }
            turn_secret = stored.turn_secret.clone();
        }
        let open_join = self.open_join.or(file.open_join).unwrap_or(local_mode);
        let mut invite = self.invite_secret.clone().or(file.invite_secret);
        if invite.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(ConfigError::Invalid("--invite-secret must be at least 16 characters".into()));
        }
        if invite.is_none() && open_join {
            if stored.invite_secret.is_none() {
                stored.invite_secret = Some(secret::random(24));
                generated = true;
            }
            invite = stored.invite_secret.clone();
        }
        if generated {
            store_secrets(&secrets_path, &stored)?;
        }
        let public_ip: Vec<std::net::IpAddr> = self.public_ip.clone().or(file.public_ip).unwrap_or_default();
        let turn = match turn_secret {
            Some(secret) => {
                let host = self
                    .turn_host
                    .clone()
                    .or(file.turn_host)
                    .or_else(|| public_ip.first().map(|i| i.to_string()))
                    .or_else(|| crate::launch::primary_ipv4().map(|i| i.to_string()))
                    .unwrap_or_else(|| "127.0.0.1".to_string());
                Some(TurnConfig {
                    secret,
                    host,
                    port: self.turn_port.or(file.turn_port).unwrap_or(3478),
                    tls_port: self.turns_port.or(file.turns_port).unwrap_or(5349),
                    ttl: self.turn_credential_ttl.or(file.turn_credential_ttl).unwrap_or(21600),
                })
            }
            None => None,
        };
        let webhook_urls = webhook_urls(self.webhook_urls.clone().or(file.webhook_urls).unwrap_or_default())?;
        Ok(Config {
            http_addr: self.http_addr.or(file.http_addr).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443))),
            data_dir,
            api_key,
            api_secret,
            node_secret,
            generated_secrets: generated,
            tls,
            public_ip,
            open_join,
            invite: invite.filter(|_| open_join),
            default_max_participants: self.default_max_participants.or(file.default_max_participants).unwrap_or(0),
            auto_create_rooms: self.auto_create_rooms.or(file.auto_create_rooms).unwrap_or(true),
            core_busy_limit: self.core_busy_limit.or(file.core_busy_limit).unwrap_or(85).min(100),
            turn,
            max_connections: self.max_connections.or(file.max_connections).unwrap_or(10_000).max(1),
            max_connections_per_ip: self.max_connections_per_ip.or(file.max_connections_per_ip).unwrap_or(200).max(1),
            webhook_urls,
        })
    }
}

/// Parses webhook URLs: absolute `http` or `https` URLs, blanks skipped.
fn webhook_urls(given: Vec<String>) -> Result<Vec<reqwest::Url>, ConfigError> {
    let mut urls = Vec::new();
    for u in given.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
        let url = reqwest::Url::parse(u).map_err(|e| ConfigError::Invalid(format!("webhook URL {u:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ConfigError::Invalid(format!("webhook URL {u:?}: must be an http or https URL with a host")));
        }
        urls.push(url);
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> ServerArgs {
        ServerArgs { data_dir: Some(dir.to_path_buf()), ..Default::default() }
    }

    #[test]
    fn generates_secrets_once_and_reuses_them() {
        let dir = std::env::temp_dir().join(format!("cp-cfg-{}", secret::random(8)));
        let a = args(&dir).resolve(true).unwrap();
        assert!(a.generated_secrets && a.api_secret.len() >= 32);
        let b = args(&dir).resolve(true).unwrap();
        assert!(!b.generated_secrets);
        assert_eq!((a.api_key, a.api_secret, a.node_secret), (b.api_key, b.api_secret, b.node_secret));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn flags_override_file_and_bad_values_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("cp-cfg-{}", secret::random(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "http_addr = \"127.0.0.1:9000\"\ndefault_max_participants = 7\n").unwrap();
        let mut a = args(&dir);
        a.config = Some(file.clone());
        a.http_addr = Some("127.0.0.1:9001".parse().unwrap());
        let c = a.resolve(false).unwrap();
        assert_eq!(c.http_addr.port(), 9001);
        assert_eq!(c.default_max_participants, 7);
        assert!(!c.open_join);

        std::fs::write(&file, "htp_addr = 1\n").unwrap();
        assert!(matches!(a.resolve(false), Err(ConfigError::Parse(..))));
        let mut b = args(&dir);
        b.api_key = Some("k".into());
        assert!(matches!(b.resolve(false), Err(ConfigError::Invalid(_))));
        b.api_secret = Some("short".into());
        assert!(b.resolve(false).unwrap_err().to_string().contains("at least 32"));
        let mut w = args(&dir);
        w.webhook_urls = Some(vec!["ftp://x/".into()]);
        assert!(w.resolve(false).unwrap_err().to_string().contains("webhook URL"));
        w.webhook_urls = Some(vec!["http://127.0.0.1:9/hook".into(), " ".into()]);
        assert_eq!(w.resolve(false).unwrap().webhook_urls.len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
