//! Starting the HTTPS server, and the `local` mode that also supervises a media-plane node.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use std::time::Duration;

use anyhow::{bail, Context};
use hyper_util::rt::TokioTimer;

use crate::accept::GatedAcceptor;
use crate::config::Config;
use limits::{Gate, Limits};
use crate::state::{App, Settings};

/// The machine's primary IPv4 address, if any.
pub fn primary_ipv4() -> Option<IpAddr> {
    if_addrs::get_if_addrs().ok()?.into_iter().find(|i| !i.is_loopback() && i.ip().is_ipv4()).map(|i| i.ip())
}

/// A bound HTTPS server ready to run.
pub struct Prepared {
    /// Shared state.
    pub app: Arc<App>,
    /// Bound address.
    pub addr: SocketAddr,
    /// The development CA, when generated certificates are in use.
    pub ca: Option<PathBuf>,
    listener: TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
    limits: HttpLimits,
}

/// Pending connections the kernel queues before the server accepts them: nginx's 511 and
/// more, so that a burst of connections (a flash crowd, or a flood the limits then close)
/// is not left half-open on the clients' side as it is behind std's 128.
pub const LISTEN_BACKLOG: i32 = 1024;

/// A non-blocking TCP listener on `addr` with [`LISTEN_BACKLOG`].
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Loads or generates certificates, builds the state and binds the listener.
pub fn prepare(cfg: &Config) -> anyhow::Result<Prepared> {
    let paths = match &cfg.tls {
        Some((cert, key)) => certs::CertPaths { cert: cert.clone(), key: key.clone(), ca: None },
        None => {
            let mut extra: Vec<String> = cfg.public_ip.iter().map(|i| i.to_string()).collect();
            if let Some(ip) = primary_ipv4() {
                extra.push(ip.to_string());
            }
            if !cfg.http_addr.ip().is_unspecified() {
                extra.push(cfg.http_addr.ip().to_string());
            }
            let (paths, generated) = certs::ensure_dev(&cfg.data_dir.join("certs"), &certs::default_names(&extra))?;
            if generated {
                if let Some(ca) = &paths.ca {
                    println!("{}", certs::trust_instructions(ca));
                }
            }
            paths
        }
    };
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(certs::server_config(&paths)?));
    let settings = Settings {
        auto_create_rooms: cfg.auto_create_rooms,
        default_max_participants: cfg.default_max_participants,
        open_join: cfg.open_join,
        invite: cfg.invite.clone(),
        demo_token_ttl: 6 * 3600,
        turn: cfg.turn.clone(),
        core_busy_limit: cfg.core_busy_limit * 10,
        webhooks: cfg.webhook_urls.clone(),
    };
    let app = App::new(settings, cfg.api_key.clone(), cfg.api_secret.clone(), cfg.node_secret.clone());
    let listener = listen(cfg.http_addr).with_context(|| format!("binding {}", cfg.http_addr))?;
    let addr = listener.local_addr()?;
    // Each connection holds a descriptor; keep some for the rest of the process.
    let files = limits::open_files::raise();
    let total = cfg.max_connections.min(u32::try_from(files.saturating_sub(256)).unwrap_or(u32::MAX)).max(1);
    if total < cfg.max_connections {
        tracing::warn!(files, total, "the open-files limit lowers --max-connections");
    }
    let limits = HttpLimits::with_connections(Limits { total, per_source: cfg.max_connections_per_ip });
    Ok(Prepared { app, addr, ca: paths.ca, listener, tls, limits })
}

impl Prepared {
    /// Serves HTTPS until the process ends.
    pub async fn serve(self) -> anyhow::Result<()> {
        let router = crate::server::router(self.app);
        serve_https(self.listener, self.tls, router, self.limits).await?;
        Ok(())
    }
}

/// Serves `router` over HTTPS on `listener` within `limits`: connections are admitted per
/// source before TLS, the handshake and the request headers have deadlines, and a connection
/// that reads nothing for the idle time is closed.
pub async fn serve_https(
    listener: TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
    router: axum::Router,
    limits: HttpLimits,
) -> std::io::Result<()> {
    let gated = GatedAcceptor::new(Gate::new(limits.connections), limits.idle);
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls).handshake_timeout(limits.handshake).acceptor(gated);
    let mut server = axum_server::from_tcp(listener)?.acceptor(acceptor);
    // hyper's header deadline only runs with a timer.
    server.http_builder().http1().timer(TokioTimer::new()).header_read_timeout(limits.headers);
    server.http_builder().http2().timer(TokioTimer::new()).keep_alive_interval(limits.idle / 2);
    server.serve(router.into_make_service_with_connect_info::<SocketAddr>()).await
}

/// Deadlines and connection limits of the HTTPS listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Concurrent connections, in total and per source.
    pub connections: Limits,
    /// Time to finish the TLS handshake.
    pub handshake: Duration,
    /// Time to send a request's headers (HTTP/1.1).
    pub headers: Duration,
    /// A connection that reads nothing for this long is closed.
    pub idle: Duration,
}

impl HttpLimits {
    /// The defaults, with the given connection limits: 10 s for the handshake and for headers
    /// (nginx allows 60 s for headers; browsers send them at once), 75 s idle (nginx's
    /// keep-alive time; signaling pings every 15 s).
    pub fn with_connections(connections: Limits) -> Self {
        HttpLimits { connections, handshake: Duration::from_secs(10), headers: Duration::from_secs(10), idle: Duration::from_secs(75) }
    }
}

impl Prepared {
    /// Certificate and key files in use (generated development ones or real ones).
    pub fn cert_paths(cfg: &Config) -> (PathBuf, PathBuf) {
        match &cfg.tls {
            Some((c, k)) => (c.clone(), k.clone()),
            None => (cfg.data_dir.join("certs").join("server.pem"), cfg.data_dir.join("certs").join("server.key")),
        }
    }
}

/// Options of the media-plane child in `local` mode.
#[derive(Debug, Clone)]
pub struct ChildOptions {
    /// Path of the media-plane binary (default: next to this executable).
    pub bin: Option<PathBuf>,
    /// UDP port of core 0 (0: any free ports).
    pub port_base: u16,
    /// Cores to use (default: all).
    pub cores: Option<usize>,
    /// Force the epoll fallback.
    pub force_epoll: bool,
}

/// The sibling binary `name` next to this executable, built by cargo when missing.
fn sibling_bin(name: &str, given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(b) = given {
        return Ok(b.clone());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let bin = dir.join(name);
    if !bin.exists() {
        // Under `cargo run`, build the sibling binary with the same profile.
        let Ok(cargo) = std::env::var("CARGO") else {
            bail!("{} not found: build it with `cargo build --release -p {name}`", bin.display());
        };
        let release = dir.ends_with("release");
        println!("building {name} ({})...", if release { "release" } else { "debug" });
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", name]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().with_context(|| format!("running cargo build -p {name}"))?;
        if !status.success() {
            bail!("building {name} failed");
        }
    }
    Ok(bin)
}

/// Makes the child die with this launcher, even when the launcher is killed.
fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: prctl is async-signal-safe and only changes this child's own settings.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The media plane's UDP ports in `local` mode, as an inclusive range: its cores' ports from
/// the base, or, with base 0, the kernel's ephemeral range it binds from.
fn media_ports(opts: &ChildOptions) -> (u16, u16) {
    if opts.port_base == 0 {
        let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
        let mut it = text.split_whitespace().filter_map(|w| w.parse::<u16>().ok());
        return match (it.next(), it.next()) {
            (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
            _ => (32768, 60999),
        };
    }
    let cores = opts.cores.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    (opts.port_base, opts.port_base.saturating_add(u16::try_from(cores).unwrap_or(u16::MAX).saturating_sub(1)))
}

/// Relay ports that stay clear of the media plane's: the relay refuses its own ports as peers.
fn relay_ports((_, hi): (u16, u16)) -> (u16, u16) {
    if hi < 61000 {
        (61000, 65535)
    } else {
        (20000, 29999)
    }
}

/// Spawns the TURN relay with the control plane's REST secret, on the configured ports. Peers
/// on loopback and on this host's addresses are reachable on the media plane's ports and the
/// relay's own relay range (two relayed clients) only.
pub fn spawn_relay(cfg: &Config, relay_bin: Option<&PathBuf>, media: &ChildOptions) -> anyhow::Result<Option<tokio::process::Child>> {
    let Some(turn) = &cfg.turn else { return Ok(None) };
    let bin = sibling_bin("relay", relay_bin)?;
    let (cert, key) = Prepared::cert_paths(cfg);
    let media = media_ports(media);
    let relay = relay_ports(media);
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.env("TURN_STATIC_AUTH_SECRET", &turn.secret)
        .args(["--use-auth-secret", "--realm", "conference"])
        .args(["--listening-port", &turn.port.to_string(), "--tls-listening-port", &turn.tls_port.to_string()])
        .arg("--cert")
        .arg(cert)
        .arg("--pkey")
        .arg(key)
        // The SFU runs on this machine, so the relay must reach loopback and local peers, but
        // only on the SFU's ports (not DNS, the control plane or the relay itself).
        .arg("--allow-loopback-peers")
        .args(["--allowed-peer-ports", &format!("{}-{}", media.0, media.1), "--allowed-peer-ports", &format!("{}-{}", relay.0, relay.1)])
        .args(["--min-port", &relay.0.to_string(), "--max-port", &relay.1.to_string()])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for ip in &cfg.public_ip {
        cmd.args(["--listening-ip", &ip.to_string(), "--relay-ip", &ip.to_string()]);
        if !ip.is_loopback() {
            cmd.args(["--allowed-peer-ip", &ip.to_string()]);
        }
    }
    if cfg.public_ip.is_empty() {
        if let Some(ip) = primary_ipv4() {
            cmd.args(["--allowed-peer-ip", &ip.to_string()]);
        }
    }
    die_with_parent(&mut cmd);
    Ok(Some(cmd.spawn().with_context(|| format!("starting {}", bin.display()))?))
}

/// Spawns the media-plane node that connects back to this control plane.
pub fn spawn_media_plane(cfg: &Config, prepared: &Prepared, opts: &ChildOptions) -> anyhow::Result<tokio::process::Child> {
    let bin = sibling_bin("media-plane", opts.bin.as_ref())?;
    let mut cmd = tokio::process::Command::new(&bin);
    // The node dials the listener's own address (loopback when it listens on every address).
    let host = match prepared.addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    cmd.env("CONTROL_URL", format!("wss://{host}:{}{}", prepared.addr.port(), link::LINK_PATH))
        .env("NODE_SECRET", &cfg.node_secret)
        .env("PORT_BASE", opts.port_base.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(ca) = &prepared.ca {
        cmd.env("CONTROL_CA", ca);
    }
    if !cfg.public_ip.is_empty() {
        cmd.env("PUBLIC_IP", cfg.public_ip.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","));
    }
    if let Some(n) = opts.cores {
        cmd.env("CORES", n.to_string());
    }
    if opts.force_epoll {
        cmd.env("FORCE_EPOLL", "true");
    }
    die_with_parent(&mut cmd);
    cmd.spawn().with_context(|| format!("starting {}", bin.display()))
}
