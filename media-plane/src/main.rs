//! `media-plane`: starts one pinned event loop per core and registers with the control plane.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use link::CoreInfo;
use media_plane::metrics::NodeMetrics;
use media_plane::sfu::CoreConfig;
use media_plane::worker::{self, CoreSetup};
use percore::Backend;
use media_plane::link_client::{self, LinkSettings};

// mimalloc is opt-in: measured against glibc under load it saved no CPU (within 3 %) and
// used 15-30 % more RSS (bench/RESULTS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Thread-per-core WebRTC SFU node.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Control-plane link URL.
    #[arg(long, env = "CONTROL_URL", default_value = "wss://127.0.0.1:8443/internal/link")]
    control_url: String,
    /// Shared secret that authenticates this node to the control plane.
    #[arg(long, env = "NODE_SECRET", hide_env_values = true)]
    node_secret: String,
    /// CA certificate to trust for a `wss://` control URL (the development CA).
    #[arg(long, env = "CONTROL_CA")]
    control_ca: Option<PathBuf>,
    /// Node id (default: hostname and a random suffix).
    #[arg(long, env = "NODE_ID")]
    node_id: Option<String>,
    /// Address(es) advertised to clients as ICE host candidates; repeat or comma-separate.
    /// Default: the machine's primary address plus 127.0.0.1.
    #[arg(long, env = "PUBLIC_IP", value_delimiter = ',')]
    public_ip: Vec<IpAddr>,
    /// Address the UDP sockets bind to.
    #[arg(long, env = "BIND_IP", default_value = "0.0.0.0")]
    bind_ip: IpAddr,
    /// UDP port of core 0; core i uses port-base + i. 0 picks free ports.
    #[arg(long, env = "PORT_BASE", default_value_t = 50000)]
    port_base: u16,
    /// Number of cores to use (default: all).
    #[arg(long, env = "CORES")]
    cores: Option<usize>,
    /// Sessions accepted per core.
    #[arg(long, env = "CAPACITY_PER_CORE", default_value_t = 500)]
    capacity_per_core: u32,
    /// Skip io_uring and run every core on epoll.
    #[arg(long, env = "FORCE_EPOLL")]
    force_epoll: bool,
    /// Under overload, drop RTP that waited longer than this in the kernel's receive queue
    /// (milliseconds; 0, the default, keeps everything). It bounds delay, but each dropped
    /// packet is lost for every subscriber and their NACKs add load: measured, it trades
    /// delay for more loss (bench/RESULTS.md), so it is off unless asked for.
    #[arg(long, env = "SHED_AFTER_MS", default_value_t = 0)]
    shed_after_ms: u64,
    /// How long (milliseconds) each subscriber's video keeps sent packets for NACK
    /// retransmission. Longer repairs loss on slower paths; each subscriber's memory and the
    /// core's cache footprint grow with it (bench/RESULTS.md).
    #[arg(long, env = "NACK_HISTORY_MS", default_value_t = media_plane::sfu::NACK_HISTORY.as_millis() as u64)]
    nack_history_ms: u64,
    /// Milliseconds between two load reports of each core. Placement reads them, so a
    /// shorter interval lets it see a crowd of joins sooner, for a few more link messages.
    #[arg(long, env = "LOAD_INTERVAL_MS", default_value_t = media_plane::worker::LOAD_INTERVAL.as_millis() as u64)]
    load_interval_ms: u64,
    /// Send-side bandwidth estimation toward each subscriber starts from this estimate
    /// (kbit/s); each subscriber's video layers are chosen to fit it. 0 turns estimation off.
    #[arg(long, env = "BWE_INITIAL_KBPS", default_value_t = media_plane::sfu::BWE_INITIAL / 1000)]
    bwe_initial_kbps: u64,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9642); off when unset.
    #[arg(long, env = "PROMETHEUS_ADDR")]
    prometheus: Option<SocketAddr>,
}

fn primary_ipv4() -> Option<IpAddr> {
    if_addrs::get_if_addrs()
        .ok()?
        .into_iter()
        .find(|i| !i.is_loopback() && matches!(i.ip(), IpAddr::V4(_)))
        .map(|i| i.ip())
}

/// Kernel socket buffer per core: bursts of fan-out must not overflow it.
const SOCKET_BUFFER: usize = 8 << 20;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,str0m=warn".into()))
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    media_plane::crypto::install();
    // Freed datagrams stay in the heap for the next turn rather than going back to the
    // kernel whenever a run of frees reaches the heap's top (docs/decisions.md).
    if percore::heap::keep_freed_memory() {
        tracing::debug!(bytes = percore::heap::TRIM_THRESHOLD, "heap keeps freed memory");
    }
    let args = Args::parse();

    let mut addresses = args.public_ip.clone();
    if addresses.is_empty() {
        if let Some(ip) = primary_ipv4() {
            addresses.push(ip);
        }
        addresses.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let cpus = percore::cpu_count();
    let n = args.cores.unwrap_or(cpus).max(1);
    let node = args.node_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
        format!("{}-{:04x}", if host.is_empty() { "node" } else { &host }, rand::random::<u16>())
    });

    let (ev_tx, ev_rx) = tokio::sync::mpsc::unbounded_channel();
    // Every core can hand packets to every other core (rooms that span cores).
    let mesh = worker::Mesh::new(n)?;
    let mut core_tx = Vec::new();
    let mut infos = Vec::new();
    let mut handles = Vec::new();
    let shed_after = (args.shed_after_ms > 0).then(|| Duration::from_millis(args.shed_after_ms));
    let metrics = Arc::new(NodeMetrics::new());
    // Bound before the cores start, so that a taken port fails the start.
    let scrape_listener = match args.prometheus {
        Some(addr) => Some(std::net::TcpListener::bind(addr).with_context(|| format!("binding the metrics address {addr}"))?),
        None => None,
    };
    for i in 0..n {
        let port = if args.port_base == 0 { 0 } else { args.port_base + i as u16 };
        let socket = UdpSocket::bind(SocketAddr::new(args.bind_ip, port)).with_context(|| {
            format!("binding UDP port {port} for core {i} (is another media-plane running? choose another --port-base)")
        })?;
        let granted = percore::batch::set_buffers(&socket, SOCKET_BUFFER);
        tracing::debug!(core = i, granted, "socket buffers");
        let local = socket.local_addr()?;
        let candidates = addresses.iter().map(|ip| SocketAddr::new(*ip, local.port())).collect();
        let config = CoreConfig {
            index: i as u32,
            local,
            candidates,
            capacity: args.capacity_per_core,
            connect_timeout: Duration::from_secs(30),
            cores: n as u32,
            nack_history: Duration::from_millis(args.nack_history_ms.max(1)),
            bwe_initial: args.bwe_initial_kbps.saturating_mul(1000),
        };
        let (h, tx, backend) = worker::spawn(CoreSetup { config, socket, cpu: i % cpus, events: ev_tx.clone(), force_epoll: args.force_epoll, mesh: mesh.clone(), shed_after, load_interval: Duration::from_millis(args.load_interval_ms.max(10)), metrics: metrics.core(i as u32) })?;
        tracing::info!(core = i, port = local.port(), backend = ?backend, "core started");
        if backend == Backend::Epoll && !args.force_epoll {
            tracing::warn!(core = i, "running on epoll: expect lower throughput than io_uring");
        }
        core_tx.push(tx);
        infos.push(CoreInfo { core: i as u32, port: local.port() });
        handles.push(h);
    }
    drop(ev_tx);

    let settings = LinkSettings {
        url: args.control_url,
        secret: args.node_secret,
        ca: args.control_ca,
        node,
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        cores: infos,
        capacity_per_core: args.capacity_per_core,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        if let Some(l) = scrape_listener {
            l.set_nonblocking(true)?;
            let addr = l.local_addr()?;
            tokio::spawn(scrape::serve(tokio::net::TcpListener::from_std(l)?, metrics));
            tracing::info!(%addr, "Prometheus metrics");
        }
        tokio::select! {
            _ = link_client::run(settings, core_tx, ev_rx) => {}
            stop = limits::stop::requested() => tracing::info!(%stop, "stopping"),
        }
        Ok::<_, std::io::Error>(())
    })?;
    Ok(())
}
