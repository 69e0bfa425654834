//! `loadtest`: synthetic peers against the control plane; prints a table, writes JSON, and
//! exits non-zero when loss or p99 latency exceed the given limits.

mod http;
mod peer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use clap::Parser;

/// Load test for the conferencing system.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Control plane URL.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    url: String,
    /// API key.
    #[arg(long, env = "API_KEY")]
    api_key: String,
    /// API secret.
    #[arg(long, env = "API_SECRET", hide_env_values = true)]
    api_secret: String,
    /// CA certificate to trust (the development CA, data/certs/ca.pem).
    #[arg(long)]
    ca: PathBuf,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Video publishers per room (they also receive each other).
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Receive-only participants per room.
    #[arg(long, default_value_t = 2)]
    subscribers: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Video bitrate per publisher, kbit/s.
    #[arg(long, default_value_t = 500)]
    video_kbps: u64,
    /// RTP payload size in bytes.
    #[arg(long, default_value_t = 1000)]
    packet_size: usize,
    /// Joins per second.
    #[arg(long, default_value_t = 20.0)]
    join_rate: f64,
    /// Server process to sample CPU and RSS from (repeatable).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Server processes by name (as in /proc/PID/comm, e.g. media-plane), added to --server-pid.
    #[arg(long)]
    server_name: Vec<String>,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Fail when loss exceeds this fraction.
    #[arg(long)]
    max_loss: Option<f64>,
    /// Fail when p99 latency exceeds this many milliseconds.
    #[arg(long)]
    max_p99_ms: Option<f64>,
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .collect()
}

fn proc_peak_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into())).init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    str0m::crypto::from_feature_flags().install_process_default();
    let mut args = Args::parse();
    for name in args.server_name.clone() {
        let pids = pids_named(&name);
        if pids.is_empty() {
            bail!("no process named {name:?}");
        }
        args.server_pid.extend(pids);
    }
    if args.packet_size < 16 || args.packet_size > 1200 {
        bail!("--packet-size must be between 16 and 1200");
    }
    let rest = args.url.strip_prefix("https://").context("--url must start with https://")?;
    let (host, port) = match rest.trim_end_matches('/').rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse::<u16>().context("bad port in --url")?),
        None => (rest.trim_end_matches('/').to_string(), 443),
    };
    let tls = Arc::new(certs::client_config(&args.ca).with_context(|| format!("loading CA {}", args.ca.display()))?);
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", args.api_key, args.api_secret)));
    let target = http::Target { host, port, tls, basic };

    let epoch = Instant::now();
    let pps = args.video_kbps as f64 * 1000.0 / 8.0 / args.packet_size as f64;
    let mut plans = Vec::new();
    for r in 0..args.rooms {
        let room = format!("load-{r}");
        target.ensure_room(&room).await.context("creating rooms")?;
        for p in 0..args.publishers + args.subscribers {
            let publish = p < args.publishers;
            plans.push(peer::PeerPlan {
                room: room.clone(),
                identity: format!("{}-{p}", if publish { "pub" } else { "sub" }),
                publish,
                pps,
                packet_size: args.packet_size,
                send_for: Duration::from_secs(args.duration),
                drain: Duration::from_secs(2),
            });
        }
    }
    let cpu0: Vec<Option<u64>> = args.server_pid.iter().map(|p| proc_cpu_ticks(*p)).collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let gap = Duration::from_secs_f64(1.0 / args.join_rate.max(0.01));
    let total_peers = plans.len();
    for (i, plan) in plans.into_iter().enumerate() {
        let t = target.clone();
        // Peers that join later send for correspondingly less time, so all stop together.
        let delay = gap * i as u32;
        let mut plan = plan;
        plan.send_for = plan.send_for.saturating_sub(delay) + gap * (total_peers as u32);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let who = plan.identity.clone();
            (who, peer::run(t, plan, epoch).await)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        let (who, r) = t.await.context("peer task")?;
        match r {
            Ok(r) => results.push(r),
            Err(e) => bail!("peer {who}: {e}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_secs: f64 = args
        .server_pid
        .iter()
        .zip(&cpu0)
        .filter_map(|(p, c0)| Some((proc_cpu_ticks(*p)? - (*c0)?) as f64 / 100.0))
        .sum();
    let peak_rss_kb: u64 = args.server_pid.iter().filter_map(|p| proc_peak_rss_kb(*p)).sum();

    let sent: u64 = results.iter().map(|r| r.sent).sum();
    let received: u64 = results.iter().flat_map(|r| r.streams.values()).map(|s| s.received).sum();
    let expected_in_window: u64 = results.iter().flat_map(|r| r.streams.values()).map(|s| s.last_seq - s.first_seq + 1).sum();
    let loss = if expected_in_window > 0 { 1.0 - received as f64 / expected_in_window as f64 } else { 1.0 };
    let expected_streams = args.rooms * (args.publishers * (args.publishers - usize::from(args.publishers > 0)) + args.subscribers * args.publishers);
    let got_streams: usize = results.iter().map(|r| r.streams.values().filter(|s| s.received > 0).count()).sum();
    let mut lat: Vec<u32> = results.iter().flat_map(|r| r.streams.values()).flat_map(|s| s.latencies_us.iter().copied()).collect();
    lat.sort_unstable();
    let mut joins: Vec<u32> = results.iter().filter_map(|r| r.join_to_first_packet).map(|d| d.as_micros() as u32).collect();
    joins.sort_unstable();
    let connected = results.iter().filter(|r| r.connected).count();
    let streams: Vec<&peer::StreamStats> = results.iter().flat_map(|r| r.streams.values()).collect();
    let jitter_ms = if streams.is_empty() { 0.0 } else { streams.iter().map(|s| s.jitter_ns).sum::<f64>() / streams.len() as f64 / 1e6 };

    let report = serde_json::json!({
        "peers": results.len(),
        "connected": connected,
        "rooms": args.rooms,
        "publishers_per_room": args.publishers,
        "subscribers_per_room": args.subscribers,
        "packets_sent": sent,
        "packets_received": received,
        "loss": loss,
        "streams_expected": expected_streams,
        "streams_received": got_streams,
        "latency_ms": { "p50": percentile(&lat, 0.5), "p99": percentile(&lat, 0.99), "max": percentile(&lat, 1.0) },
        "jitter_ms_mean": jitter_ms,
        "join_to_first_packet_ms": { "p50": percentile(&joins, 0.5), "max": percentile(&joins, 1.0) },
        "rx_pps": received as f64 / elapsed,
        "tx_pps": sent as f64 / elapsed,
        "server_cpu_seconds": cpu_secs,
        "server_cpu_s_per_million_forwarded": if received > 0 { cpu_secs * 1e6 / received as f64 } else { 0.0 },
        "server_peak_rss_kb": peak_rss_kb,
        "elapsed_s": elapsed,
    });
    println!("peers            {connected}/{} connected", results.len());
    println!("streams          {got_streams}/{expected_streams} received");
    println!("packets          sent {sent}, received {received}, loss {:.4}%", loss * 100.0);
    println!("latency          p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", percentile(&lat, 0.5), percentile(&lat, 0.99), percentile(&lat, 1.0));
    println!("jitter           {jitter_ms:.3} ms (RFC 3550, mean over streams)");
    println!("join→first pkt   p50 {:.0} ms, max {:.0} ms", percentile(&joins, 0.5), percentile(&joins, 1.0));
    if !args.server_pid.is_empty() {
        println!("server           {cpu_secs:.2} CPU-s, {:.2} CPU-s per million forwarded, peak RSS {} MiB", report["server_cpu_s_per_million_forwarded"].as_f64().unwrap_or(0.0), peak_rss_kb / 1024);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut failed = false;
    if got_streams < expected_streams {
        eprintln!("FAIL: {got_streams} of {expected_streams} expected streams received");
        failed = true;
    }
    if let Some(m) = args.max_loss {
        if loss > m {
            eprintln!("FAIL: loss {loss:.4} above {m}");
            failed = true;
        }
    }
    if let Some(m) = args.max_p99_ms {
        if percentile(&lat, 0.99) > m {
            eprintln!("FAIL: p99 latency above {m} ms");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}
