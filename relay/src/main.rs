//! `relay`: a TURN/STUN server with coturn's configuration words, one event loop per core.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use relay::auth::{Credentials, Nonces};
use relay::policy::{IpRange, OwnSockets, PeerPolicy, PortRange};
use limits::{Gate, Limits};
use relay::runtime::{reuseport_tcp, reuseport_udp, RelayCore, StreamLimits};
use relay::server::{Config, Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// TURN/STUN relay (RFC 8489, RFC 8656). Flags follow coturn's `turnserver`.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Args {
    /// coturn-style configuration file: one `name=value` or `name` per line, `#` comments.
    #[arg(short = 'c', long = "config-file", env = "RELAY_CONFIG")]
    config_file: Option<PathBuf>,
    /// Address to listen on (repeatable) [default: 0.0.0.0].
    #[arg(short = 'L', long = "listening-ip")]
    listening_ip: Vec<IpAddr>,
    /// TURN/STUN port for UDP and TCP.
    #[arg(short = 'p', long = "listening-port", default_value_t = 3478)]
    listening_port: u16,
    /// TURN over TLS port (`turns:`).
    #[arg(long = "tls-listening-port", default_value_t = 5349)]
    tls_listening_port: u16,
    /// Relay address (repeatable, one per family) [default: the listening address, or the
    /// primary address when listening on a wildcard].
    #[arg(short = 'E', long = "relay-ip")]
    relay_ip: Vec<IpAddr>,
    /// Public address to advertise: `public` or `public/private` (repeatable).
    #[arg(short = 'X', long = "external-ip")]
    external_ip: Vec<String>,
    /// Realm.
    #[arg(short = 'r', long = "realm", default_value = "conference")]
    realm: String,
    /// Long-term user `name:password` (repeatable).
    #[arg(short = 'u', long = "user")]
    user: Vec<String>,
    /// Use TURN REST ephemeral credentials with --static-auth-secret.
    #[arg(long = "use-auth-secret")]
    use_auth_secret: bool,
    /// Shared secret of TURN REST credentials.
    #[arg(long = "static-auth-secret", env = "TURN_STATIC_AUTH_SECRET", hide_env_values = true)]
    static_auth_secret: Option<String>,
    /// Lowest relay port.
    #[arg(long = "min-port", default_value_t = 49152)]
    min_port: u16,
    /// Highest relay port.
    #[arg(long = "max-port", default_value_t = 65535)]
    max_port: u16,
    /// Allocations per user (0: unlimited). The default is coturn's example config's.
    #[arg(long = "user-quota", default_value_t = 12)]
    user_quota: usize,
    /// Allocations in total (0: unlimited). The default is coturn's example config's.
    #[arg(long = "total-quota", default_value_t = 1200)]
    total_quota: usize,
    /// Bits per second per allocation (0: unlimited).
    #[arg(long = "max-bps", default_value_t = 0)]
    max_bps: u64,
    /// Peer range to refuse (repeatable): ADDR or ADDR/PREFIX.
    #[arg(long = "denied-peer-ip")]
    denied_peer_ip: Vec<String>,
    /// Peer range to allow even inside a refused range (repeatable).
    #[arg(long = "allowed-peer-ip")]
    allowed_peer_ip: Vec<String>,
    /// Allow relaying to loopback peers (development only).
    #[arg(long = "allow-loopback-peers")]
    allow_loopback_peers: bool,
    /// Ports (PORT or LOW-HIGH, repeatable) that peers let through only by --allowed-peer-ip
    /// or --allow-loopback-peers may be reached on [default: any]. Not a coturn word.
    #[arg(long = "allowed-peer-ports")]
    allowed_peer_ports: Vec<String>,
    /// TLS certificate chain (PEM) for `turns:`.
    #[arg(long = "cert")]
    cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long = "pkey")]
    pkey: Option<PathBuf>,
    /// Do not listen on TCP.
    #[arg(long = "no-tcp")]
    no_tcp: bool,
    /// Do not listen on TLS.
    #[arg(long = "no-tls")]
    no_tls: bool,
    /// Serve Prometheus metrics (coturn's word) on --prometheus-address:--prometheus-port.
    #[arg(long = "prometheus")]
    prometheus: bool,
    /// Port of the metrics endpoint (coturn's default).
    #[arg(long = "prometheus-port", default_value_t = 9641)]
    prometheus_port: u16,
    /// Address of the metrics endpoint [default: 0.0.0.0, as coturn].
    #[arg(long = "prometheus-address", default_value = "0.0.0.0")]
    prometheus_address: IpAddr,
    /// Concurrent TCP/TLS connections in total. Not a coturn word.
    #[arg(long = "max-connections", default_value_t = 10_000)]
    max_connections: u32,
    /// Concurrent TCP/TLS connections from one address (an IPv6 /64). Not a coturn word.
    #[arg(long = "max-connections-per-ip", default_value_t = 200)]
    max_connections_per_ip: u32,
    /// Seconds a TCP/TLS connection may take for its TLS handshake, and may stay open without
    /// an allocation. Not a coturn word.
    #[arg(long = "stream-idle-timeout", default_value_t = 30)]
    stream_idle_timeout: u64,
    /// Cores to use [default: all].
    #[arg(long = "cores", env = "RELAY_CORES")]
    cores: Option<usize>,
    /// Run each core on glommio (io_uring) instead of epoll. Off by default: with one
    /// awaited operation per datagram, glommio cost about twice epoll's CPU per relayed packet
    /// (bench/RESULTS.md, "Relay backend").
    #[arg(long = "io-uring", env = "RELAY_IO_URING")]
    io_uring: bool,
    /// Run on epoll (the default; kept so that `--force-epoll` also wins over `--io-uring`).
    #[arg(long = "force-epoll", env = "FORCE_EPOLL")]
    force_epoll: bool,
    /// Accepted for coturn compatibility; logging goes through RUST_LOG.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Accepted for coturn compatibility (fingerprints are always sent).
    #[arg(short = 'f', long = "fingerprint")]
    fingerprint: bool,
    /// Accepted for coturn compatibility (long-term credentials are always required).
    #[arg(short = 'a', long = "lt-cred-mech")]
    lt_cred_mech: bool,
    /// Accepted for coturn compatibility.
    #[arg(long = "no-cli")]
    no_cli: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let cli: Vec<String> = std::env::args().collect();
    let first = Args::parse_from(&cli);
    let Some(path) = &first.config_file else { return Ok(first) };
    let mut all = vec![cli[0].clone()];
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    all.extend(relay::conf::file_args(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
    all.extend(cli.into_iter().skip(1));
    Args::try_parse_from(all).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The relay's own listening sockets, which no peer may be: every address it listens on
/// (each of the host's addresses for a wildcard), relays from or advertises, on its listening
/// ports. Its relay range stays reachable: two clients of one relay talk relay to relay.
fn own_sockets(args: &Args, listening: &[IpAddr], relay_ips: &[IpAddr], external: &[(IpAddr, Option<IpAddr>)]) -> OwnSockets {
    let mut ips: Vec<IpAddr> = relay_ips.to_vec();
    ips.extend(external.iter().flat_map(|(public, private)| std::iter::once(*public).chain(*private)));
    for ip in listening {
        if ip.is_unspecified() {
            ips.extend(if_addrs::get_if_addrs().unwrap_or_default().iter().map(|i| i.ip()));
        } else {
            ips.push(*ip);
        }
    }
    ips.sort();
    ips.dedup();
    let one = |p: u16| PortRange { low: p, high: p };
    let ports = vec![one(args.listening_port), one(args.tls_listening_port)];
    OwnSockets { ips, ports }
}

/// The host's first usable address of each family (IPv6: not link-local).
fn primary_ips() -> Vec<IpAddr> {
    let addrs = if_addrs::get_if_addrs().unwrap_or_default();
    let v4 = addrs.iter().find(|i| !i.is_loopback() && i.ip().is_ipv4()).map(|i| i.ip());
    let v6 = addrs
        .iter()
        .find(|i| matches!(i.ip(), IpAddr::V6(a) if !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80))
        .map(|i| i.ip());
    v4.into_iter().chain(v6).collect()
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = parse_args()?;
    // Each TCP/TLS client holds a descriptor; coturn raises the limit at start too.
    let open_files = limits::open_files::raise();
    tracing::debug!(open_files, "open-files limit");

    let credentials = if args.use_auth_secret {
        let Some(secret) = args.static_auth_secret.clone().filter(|s| !s.is_empty()) else {
            bail!("--use-auth-secret needs --static-auth-secret");
        };
        Credentials::Secret(secret)
    } else {
        let mut users = HashMap::new();
        for u in &args.user {
            let Some((name, pass)) = u.split_once(':') else { bail!("--user expects name:password, got {u:?}") };
            users.insert(name.to_string(), pass.to_string());
        }
        if users.is_empty() {
            bail!("no credentials: give --user name:password or --use-auth-secret --static-auth-secret S");
        }
        Credentials::Users(users)
    };
    if args.min_port > args.max_port {
        bail!("--min-port must not be above --max-port");
    }
    let listening: Vec<IpAddr> = if args.listening_ip.is_empty() { vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)] } else { args.listening_ip.clone() };
    let mut relay_ips = args.relay_ip.clone();
    if relay_ips.is_empty() {
        for ip in &listening {
            if ip.is_unspecified() {
                // Relay IPv4 and, where the host has it, IPv6 (REQUESTED-ADDRESS-FAMILY).
                relay_ips.extend(primary_ips());
            } else {
                relay_ips.push(*ip);
            }
        }
        relay_ips.dedup();
    }
    if relay_ips.is_empty() {
        bail!("no relay address: give --relay-ip");
    }
    let mut external = Vec::new();
    for e in &args.external_ip {
        let (public, private) = match e.split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>()?, Some(b.parse::<IpAddr>()?)),
            None => (e.parse::<IpAddr>()?, None),
        };
        external.push((public, private));
    }
    let parse_ranges = |v: &[String]| -> anyhow::Result<Vec<IpRange>> { v.iter().map(|s| s.parse::<IpRange>().map_err(anyhow::Error::from)).collect() };
    let policy = PeerPolicy {
        allow_loopback: args.allow_loopback_peers,
        allowed: parse_ranges(&args.allowed_peer_ip)?,
        denied: parse_ranges(&args.denied_peer_ip)?,
        exception_ports: args.allowed_peer_ports.iter().map(|s| s.parse::<PortRange>()).collect::<Result<_, _>>()?,
        own: own_sockets(&args, &listening, &relay_ips, &external),
    };

    let tls_config = match (&args.cert, &args.pkey, args.no_tls) {
        (Some(cert), Some(key), false) => {
            let paths = certs::CertPaths { cert: cert.clone(), key: key.clone(), ca: None };
            let mut cfg = certs::server_config(&paths).with_context(|| format!("loading {}", cert.display()))?;
            cfg.alpn_protocols.clear();
            Some(std::sync::Arc::new(cfg))
        }
        (None, None, _) | (_, _, true) => None,
        _ => bail!("--cert and --pkey go together"),
    };
    if tls_config.is_none() && !args.no_tls {
        tracing::info!("no --cert/--pkey: TLS listener (turns:) disabled");
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cpus = percore::cpu_count();
    let cores = args.cores.unwrap_or(cpus).max(1);
    let nonces = Nonces::new(600);
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let streams = StreamLimits {
        gate: Gate::new(Limits { total: args.max_connections.max(1), per_source: args.max_connections_per_ip.max(1) }),
        idle: std::time::Duration::from_secs(args.stream_idle_timeout.max(1)),
        queue: 64,
        write_timeout: std::time::Duration::from_secs(10),
    };
    let metrics = std::sync::Arc::new(relay::metrics::RelayMetrics::new());
    let scrape_listener = if args.prometheus {
        let addr = SocketAddr::new(args.prometheus_address, args.prometheus_port);
        Some(std::net::TcpListener::bind(addr).with_context(|| format!("binding the metrics address {addr}"))?)
    } else {
        None
    };
    let mut handles = Vec::new();
    for core in 0..cores {
        let mut cfg = Config::new(&args.realm, credentials.clone(), relay_ips.clone());
        cfg.external_ip = external.clone();
        cfg.min_port = args.min_port;
        cfg.max_port = args.max_port;
        cfg.shard = (core as u16, cores as u16);
        cfg.user_quota = args.user_quota;
        cfg.total_quota = if args.total_quota > 0 { args.total_quota.div_ceil(cores) } else { 0 };
        cfg.max_bps = args.max_bps;
        cfg.policy = policy.clone();
        let (mut udp, mut tcp, mut tls) = (Vec::new(), Vec::new(), Vec::new());
        for ip in &listening {
            let addr = SocketAddr::new(*ip, args.listening_port);
            udp.push(reuseport_udp(addr).with_context(|| format!("binding UDP {addr}"))?);
            if !args.no_tcp {
                tcp.push(reuseport_tcp(addr).with_context(|| format!("binding TCP {addr}"))?);
            }
            if tls_config.is_some() {
                let addr = SocketAddr::new(*ip, args.tls_listening_port);
                tls.push(reuseport_tcp(addr).with_context(|| format!("binding TLS {addr}"))?);
            }
        }
        let server = Server::new(cfg, Instant::now(), unix, nonces.clone());
        let task = RelayCore { server, udp, tcp, tls, tls_config: tls_config.clone(), streams: streams.clone(), metrics: metrics.core(core) };
        let (h, backend) = percore::spawn(format!("relay-{core}"), core % cpus, args.force_epoll || !args.io_uring, task)?;
        tracing::info!(core, ?backend, port = args.listening_port, "relay core started");
        handles.push(h);
    }
    tracing::info!(listening = ?listening, relay = ?relay_ips, realm = %args.realm, "relay ready");
    // The cores run until the process ends: on SIGINT or SIGTERM it exits 0, as coturn does;
    // if every core has stopped (none should), so does the process.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        if let Some(l) = scrape_listener {
            l.set_nonblocking(true)?;
            tracing::info!(addr = %l.local_addr()?, "Prometheus metrics");
            tokio::spawn(scrape::serve(tokio::net::TcpListener::from_std(l)?, metrics));
        }
        let cores = tokio::task::spawn_blocking(move || {
            for h in handles {
                let _ = h.join();
            }
        });
        tokio::select! {
            _ = cores => tracing::warn!("every relay core stopped"),
            stop = limits::stop::requested() => tracing::info!(%stop, "stopping"),
        }
        Ok::<_, std::io::Error>(())
    })?;
    // The joining task still blocks on the cores: leave it behind.
    rt.shutdown_background();
    Ok(())
}
