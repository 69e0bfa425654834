//! `loadtest`: synthetic peers against our control plane, any WHIP/WHEP server, Janus
//! VideoRoom, or a TURN server. Live progress, a final table, JSON, SVG plots, and a non-zero
//! exit when loss or p99 latency exceed the given limits. `loadtest compare` puts reports
//! side by side with ratios.

mod bucket;
mod engine;
mod h264;
mod http;
mod peer;
mod plot;
mod scenario;
mod stats;
mod target;
mod turn;
mod view;
mod vp8;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use clap::{Args as ClapArgs, Parser, Subcommand};
use serde_json::json;

use crate::scenario::{Scenario, TargetKind, TurnTransport, VideoCodec};
use crate::target::{Participant, Role, Shared};
use crate::view::ViewSize;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load test for WebRTC SFUs and TURN servers.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Prints reports (`--json` files) side by side with ratios to the first one.
    Compare {
        /// Reports as NAME=FILE (the first is the baseline).
        #[arg(required = true, num_args = 2..)]
        reports: Vec<String>,
    },
}

#[derive(ClapArgs, Debug)]
struct RunArgs {
    /// Scenario file (TOML); flags override its values.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Target kind.
    #[arg(long, value_enum)]
    target: Option<TargetKind>,
    /// Control plane URL.
    #[arg(long)]
    url: Option<String>,
    /// API key (ours; whip with our server).
    #[arg(long, env = "API_KEY")]
    api_key: Option<String>,
    /// API secret.
    #[arg(long, env = "API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,
    /// CA certificate to trust for https/wss (e.g. data/certs/ca.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// WHIP endpoint with `{room}`.
    #[arg(long)]
    whip_url: Option<String>,
    /// WHEP endpoint with `{room}` and `{publisher}`.
    #[arg(long)]
    whep_url: Option<String>,
    /// Static bearer token for WHIP/WHEP.
    #[arg(long, env = "WHIP_BEARER", hide_env_values = true)]
    bearer: Option<String>,
    /// Janus HTTP API base URL.
    #[arg(long)]
    janus_url: Option<String>,
    /// Rooms.
    #[arg(long)]
    rooms: Option<usize>,
    /// Video publishers per room.
    #[arg(long, alias = "publishers")]
    video_publishers: Option<usize>,
    /// Audio-only publishers per room.
    #[arg(long)]
    audio_publishers: Option<usize>,
    /// Receive-only participants per room.
    #[arg(long)]
    subscribers: Option<usize>,
    /// Seconds of sending.
    #[arg(long)]
    duration: Option<f64>,
    /// Joins per second.
    #[arg(long)]
    join_rate: Option<f64>,
    /// Video bitrate per publisher, kbit/s.
    #[arg(long)]
    video_kbps: Option<u64>,
    /// Video frames per second.
    #[arg(long)]
    fps: Option<u32>,
    /// Largest RTP payload in bytes.
    #[arg(long)]
    packet_size: Option<usize>,
    /// Audio bitrate, kbit/s.
    #[arg(long)]
    audio_kbps: Option<u64>,
    /// Video codec.
    #[arg(long, value_enum)]
    codec: Option<VideoCodec>,
    /// Simulcast: rids l, m, h at 1/16, 1/4 and all of the bitrate (VP8 or H.264; ours, whip, janus).
    #[arg(long)]
    simulcast: Option<bool>,
    /// Receive-side bandwidth cap per subscriber, kbit/s (the peer drops what exceeds it).
    #[arg(long)]
    subscriber_kbps: Option<u64>,
    /// Cap only the first M subscribers of each room (default: all, with --subscriber-kbps).
    #[arg(long)]
    capped_subscribers: Option<usize>,
    /// Subscribers view at most N video tracks, plus all audio (ours, whip).
    #[arg(long)]
    view_tracks: Option<usize>,
    /// Subscribers render video at most WxH and ask the server for that size (ours).
    #[arg(long)]
    view_size: Option<ViewSize>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Pin worker thread i to core first_core + i (e.g. keep the load tester off the server's cores).
    #[arg(long, default_value_t = 0)]
    first_core: usize,
    /// TURN server host:port.
    #[arg(long)]
    turn_server: Option<String>,
    /// TURN transport.
    #[arg(long, value_enum)]
    turn_transport: Option<TurnTransport>,
    /// TURN allocations.
    #[arg(long)]
    turn_allocations: Option<usize>,
    /// Packets per second per allocation.
    #[arg(long)]
    turn_rate: Option<f64>,
    /// TURN payload bytes.
    #[arg(long)]
    turn_packet_size: Option<usize>,
    /// TURN long-term credentials user:password.
    #[arg(long, env = "TURN_USER", hide_env_values = true)]
    turn_user: Option<String>,
    /// TURN REST secret.
    #[arg(long, env = "TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// Server process to sample CPU and RSS from (repeatable).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Server processes by name (as in /proc/PID/comm), added to --server-pid.
    #[arg(long)]
    server_name: Vec<String>,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write SVG plots into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Fail when loss exceeds this fraction.
    #[arg(long)]
    max_loss: Option<f64>,
    /// Fail when p99 latency exceeds this many milliseconds.
    #[arg(long)]
    max_p99_ms: Option<f64>,
    /// No live progress display.
    #[arg(long)]
    quiet: bool,
}

fn scenario_from(a: &RunArgs) -> anyhow::Result<Scenario> {
    let mut s = match &a.scenario {
        Some(p) => Scenario::from_file(p)?,
        None => Scenario::default(),
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { s.$f = v; } )* };
    }
    set!(target, url, whip_url, whep_url, janus_url, rooms, video_publishers, audio_publishers, subscribers, duration, join_rate, video_kbps, fps, packet_size, audio_kbps, codec, simulcast, subscriber_kbps, threads);
    if a.capped_subscribers.is_some() {
        s.capped_subscribers = a.capped_subscribers;
    }
    if a.view_tracks.is_some() {
        s.view_tracks = a.view_tracks;
    }
    if a.view_size.is_some() {
        s.view_size = a.view_size;
    }
    if a.bearer.is_some() {
        s.bearer = a.bearer.clone();
    }
    macro_rules! turn {
        ($($f:ident => $t:ident),*) => { $( if let Some(v) = a.$f.clone() { s.turn.$t = v; } )* };
    }
    turn!(turn_server => server, turn_transport => transport, turn_allocations => allocations, turn_rate => rate_pps, turn_packet_size => packet_size);
    if a.turn_user.is_some() {
        s.turn.user = a.turn_user.clone();
    }
    if a.turn_secret.is_some() {
        s.turn.secret = a.turn_secret.clone();
    }
    if s.threads == 0 {
        s.threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    }
    s.validate()?;
    Ok(s)
}

fn proc_cpu_ticks(pid: &str) -> Option<u64> {
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

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn server_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| proc_cpu_ticks(&p.to_string())).sum()
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Some(Cmd::Compare { reports }) => compare(&reports).map(|_| 0),
        None => run(cli.run),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("loadtest: error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run(mut args: RunArgs) -> anyhow::Result<i32> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into())).with_writer(std::io::stderr).init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    str0m::crypto::from_feature_flags().install_process_default();
    // Each peer needs sockets.
    limits::open_files::raise();
    let s = scenario_from(&args)?;
    for name in args.server_name.clone() {
        let pids = pids_named(&name);
        if pids.is_empty() {
            bail!("no process named {name:?}");
        }
        args.server_pid.extend(pids);
    }
    let tls = match &args.ca {
        Some(ca) => Some(Arc::new(certs::client_config(ca).with_context(|| format!("loading CA {}", ca.display()))?)),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let shared = local.block_on(&rt, setup(&s, &args, tls))?;
    let shared = Arc::new(shared);

    let epoch = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / s.join_rate);
    let send = Duration::from_secs_f64(s.duration);
    let drain = Duration::from_secs(2);
    let (workers, expected_streams, total) = if s.target == TargetKind::Turn {
        let n = s.turn.allocations;
        let until = epoch + gap * n as u32 + send;
        let jobs: Vec<(String, usize)> = (0..n).map(|i| (format!("allocation {i}"), i)).collect();
        let sh = shared.clone();
        let w = engine::Workers::start(s.threads, args.first_core, jobs, epoch, move |i, ctx| {
            let sh = sh.clone();
            async move { turn::allocation(&sh.scenario.turn, sh.local_ip, i, epoch + gap * i as u32, until, until + drain, &ctx).await }
        })?;
        (w, 2 * n, n)
    } else {
        let mut jobs = Vec::new();
        let per_room = s.participants();
        let total = s.rooms * per_room;
        // Everyone stops together: late joiners send for correspondingly less time.
        let until = epoch + gap * total as u32 + send;
        for r in 0..s.rooms {
            for i in 0..per_room {
                let role = if i < s.video_publishers {
                    Role::Video
                } else if i < s.publishers() {
                    Role::Audio
                } else {
                    Role::Subscriber
                };
                let n = jobs.len();
                let identity = shared.publishers.get(i).cloned().unwrap_or_else(|| format!("sub-{i}"));
                let cap_kbps = if role == Role::Subscriber { s.subscriber_cap(i - s.publishers()) } else { None };
                let p = Participant { room: r, identity: identity.clone(), role, cap_kbps, start: epoch + gap * n as u32, until, end: until + drain };
                jobs.push((format!("room {r} {identity}"), p));
            }
        }
        let sh = shared.clone();
        let w = engine::Workers::start(s.threads, args.first_core, jobs, epoch, move |p, ctx| {
            let sh = sh.clone();
            async move { target::participant(&sh, &ctx, p).await }
        })?;
        (w, s.expected_streams(), total)
    };

    // Sample counters and CPU while the workers run.
    let tck = ticks_per_sec();
    let cpu0 = server_ticks(&args.server_pid);
    let self0 = proc_cpu_ticks("self").unwrap_or(0);
    let bar = if args.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(total as u64) };
    bar.set_style(indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:20}] {pos}/{len} up  {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    let mut series = Vec::new();
    let mut last = (Instant::now(), stats::totals(&workers.counters), cpu0, self0);
    while !workers.finished() {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64();
        if dt < 1.0 && !workers.finished() {
            continue;
        }
        let t = stats::totals(&workers.counters);
        let cpu = server_ticks(&args.server_pid);
        let mine = proc_cpu_ticks("self").unwrap_or(0);
        let rx = (t.received - last.1.received) as f64;
        let lost = t.lost.saturating_sub(last.1.lost) as f64;
        let sample = plot::Sample {
            t: now.duration_since(epoch).as_secs_f64(),
            tx_pps: (t.sent - last.1.sent) as f64 / dt,
            rx_pps: rx / dt,
            rx_fps: (t.frames - last.1.frames) as f64 / dt,
            loss: if rx + lost > 0.0 { lost / (rx + lost) } else { 0.0 },
            server_cpu_pct: (cpu.saturating_sub(last.2)) as f64 / tck / dt * 100.0,
            loadtest_cpu_pct: (mine.saturating_sub(last.3)) as f64 / tck / dt * 100.0,
            connected: t.connected,
        };
        bar.set_position(t.connected.min(total as u64));
        bar.set_message(format!("in {:.0} pkt/s  out {:.0} pkt/s  loss {:.3}%  failed {}", sample.rx_pps, sample.tx_pps, sample.loss * 100.0, t.failed));
        series.push(sample);
        last = (now, t, cpu, mine);
    }
    bar.finish_and_clear();
    let elapsed = epoch.elapsed().as_secs_f64();
    let cpu_secs = server_ticks(&args.server_pid).saturating_sub(cpu0) as f64 / tck;
    let self_secs = proc_cpu_ticks("self").unwrap_or(0).saturating_sub(self0) as f64 / tck;
    let peak_rss_kb: u64 = args.server_pid.iter().filter_map(|p| proc_peak_rss_kb(*p)).sum();
    let counters = stats::totals(&workers.counters);
    let result = workers.join();
    let sink = &result.sink;
    let layers = stats::layer_report(&sink.tracks, &sink.sent, |l| peer::layer_name(s.simulcast, l));

    let received: u64 = sink.streams.iter().map(|s| s.received).sum();
    let expected_in_window: u64 = sink.streams.iter().map(|s| s.expected()).sum();
    let loss = if expected_in_window > 0 { 1.0 - received as f64 / expected_in_window as f64 } else { 1.0 };
    // A stream is one SSRC seen by one receiver; simulcast layer switches do not add streams.
    let got_streams = {
        let mut seen: Vec<u64> = sink.streams.iter().filter(|s| s.received > 0).map(|s| s.key).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    };
    let jitter_ms = if sink.streams.is_empty() { 0.0 } else { sink.streams.iter().map(|s| s.jitter_ns).sum::<f64>() / sink.streams.len() as f64 / 1e6 };
    let q = |h: &hdrhistogram::Histogram<u64>, p: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(p) as f64 / 1000.0 };
    let lat = &sink.latency;
    let cdf: Vec<(f64, f64)> = (0..=200).map(|i| i as f64 / 200.0).map(|p| (q(lat, p), p)).collect();
    let per_million = |secs: f64| if received > 0 { secs * 1e6 / received as f64 } else { 0.0 };
    let what = if s.target == TargetKind::Turn { "relayed" } else { "forwarded" };
    // Steady state: the seconds at >= 90% of the peak receive rate (no joins, no drain).
    let peak = series.iter().map(|x| x.rx_pps).fold(0.0, f64::max);
    let steady: Vec<&plot::Sample> = series.iter().filter(|x| peak > 0.0 && x.rx_pps >= 0.9 * peak).collect();
    let steady_pps = steady.iter().map(|x| x.rx_pps).sum::<f64>();
    let us_per = |f: fn(&plot::Sample) -> f64| if steady_pps > 0.0 { steady.iter().map(|x| f(x)).sum::<f64>() * 1e4 / steady_pps } else { 0.0 };
    let steady_server_us = us_per(|x| x.server_cpu_pct);
    let steady_self_us = us_per(|x| x.loadtest_cpu_pct);
    // The report never carries secrets.
    let mut shown = s.clone();
    let hide = |v: &mut Option<String>| {
        if v.is_some() {
            *v = Some("<redacted>".into());
        }
    };
    hide(&mut shown.bearer);
    hide(&mut shown.turn.user);
    hide(&mut shown.turn.secret);
    let report = json!({
        "target": s.target,
        "scenario": shown,
        "peers": total,
        "connected": counters.connected,
        "failed": result.errors.len(),
        "errors": result.errors.iter().take(20).collect::<Vec<_>>(),
        "packets_sent": counters.sent,
        "packets_received": received,
        "loss": loss.max(0.0),
        "streams_expected": expected_streams,
        "streams_received": got_streams,
        "latency_ms": { "p50": q(lat, 0.5), "p90": q(lat, 0.9), "p99": q(lat, 0.99), "max": q(lat, 1.0), "mean": lat.mean() / 1000.0 },
        "latency_cdf": cdf,
        "jitter_ms_mean": jitter_ms,
        "join_to_first_packet_ms": { "p50": q(&sink.join, 0.5), "p99": q(&sink.join, 0.99), "max": q(&sink.join, 1.0) },
        "rx_pps": received as f64 / elapsed,
        "tx_pps": counters.sent as f64 / elapsed,
        "rx_mbps": counters.bytes as f64 * 8.0 / elapsed / 1e6,
        "server_pids": args.server_pid,
        "server_cpu_seconds": cpu_secs,
        "server_cpu_s_per_million_forwarded": per_million(cpu_secs),
        "server_peak_rss_kb": peak_rss_kb,
        "loadtest_cpu_seconds": self_secs,
        "loadtest_cpu_s_per_million_received": per_million(self_secs),
        "elapsed_s": elapsed,
        "steady_state": {
            "seconds": steady.len(),
            "rx_pps": if steady.is_empty() { 0.0 } else { steady_pps / steady.len() as f64 },
            "server_us_per_packet": steady_server_us,
            "loadtest_us_per_packet": steady_self_us,
            "loadtest_to_server": if steady_server_us > 0.0 { steady_self_us / steady_server_us } else { 0.0 },
        },
        "layers": layers,
        "capped_subscribers": sink.capped,
        "series": series,
    });
    println!("target           {:?} ({} threads)", s.target, s.threads);
    println!("participants     {total}, {} failed; {} media connections up", result.errors.len(), counters.connected);
    println!("streams          {got_streams}/{expected_streams} received");
    println!("packets          sent {}, received {received}, loss {:.4}%", counters.sent, loss.max(0.0) * 100.0);
    println!("throughput       {:.0} pkt/s in, {:.1} Mbit/s in", received as f64 / elapsed, counters.bytes as f64 * 8.0 / elapsed / 1e6);
    println!("latency          p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", q(lat, 0.5), q(lat, 0.99), q(lat, 1.0));
    println!("jitter           {jitter_ms:.3} ms (RFC 3550, mean over streams)");
    println!("join→first pkt   p50 {:.0} ms, max {:.0} ms", q(&sink.join, 0.5), q(&sink.join, 1.0));
    if !args.server_pid.is_empty() {
        println!("server           {cpu_secs:.2} CPU-s, {:.2} CPU-s per million {what}, peak RSS {} MiB", per_million(cpu_secs), peak_rss_kb / 1024);
    }
    println!("load tester      {self_secs:.2} CPU-s, {:.2} CPU-s per million received", per_million(self_secs));
    if !steady.is_empty() {
        let server = if args.server_pid.is_empty() { String::new() } else { format!("server {steady_server_us:.2} µs per {what} packet, ") };
        println!("steady state     {} s at {:.0} pkt/s: {server}load tester {steady_self_us:.2} µs per received packet", steady.len(), steady_pps / steady.len() as f64);
    }
    print_layers(&layers);
    print_capped(&sink.capped);
    for e in result.errors.iter().take(5) {
        eprintln!("error: {e}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &args.plots {
        let files = plot::write_all(dir, &format!("{:?}", s.target).to_lowercase(), &cdf, &series)?;
        println!("plots            {}", files.join(", "));
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
        if q(lat, 0.99) > m {
            eprintln!("FAIL: p99 latency above {m} ms");
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

async fn setup(s: &Scenario, args: &RunArgs, tls: Option<Arc<rustls::ClientConfig>>) -> anyhow::Result<Shared> {
    let api = match (&args.api_key, &args.api_secret) {
        (Some(k), Some(sec)) if matches!(s.target, TargetKind::Ours | TargetKind::Whip) => {
            let (origin, _) = http::Origin::parse(&s.url, tls.clone())?;
            let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{k}:{sec}")));
            Some(http::Api { origin, basic })
        }
        _ if s.target == TargetKind::Ours => bail!("the ours target needs --api-key and --api-secret"),
        _ => None,
    };
    let probe = match s.target {
        TargetKind::Ours => s.url.clone(),
        TargetKind::Whip => s.whip_url.clone(),
        TargetKind::Janus => s.janus_url.clone(),
        TargetKind::Turn => format!("turn://{}", s.turn.server),
    };
    let (host, port) = match s.target {
        TargetKind::Turn => s.turn.server.rsplit_once(':').map(|(h, p)| (h.trim_matches(|c| c == '[' || c == ']').to_string(), p.parse().unwrap_or(3478))).context("turn.server must be host:port")?,
        _ => {
            let (o, _) = http::Origin::parse(&probe, tls.clone())?;
            (o.host, o.port)
        }
    };
    let local_ip = peer::local_ip_for(&host, port).with_context(|| format!("no route to {host}"))?;
    let rooms = match s.target {
        TargetKind::Janus => target::janus_rooms(s).await?,
        TargetKind::Turn => Vec::new(),
        _ => {
            let names: Vec<String> = (0..s.rooms).map(|r| format!("load-{r}")).collect();
            if let Some(api) = &api {
                for room in &names {
                    api.ensure_room(room).await.context("creating rooms")?;
                }
            }
            names
        }
    };
    let publishers = (0..s.publishers()).map(|i| if i < s.video_publishers { format!("video-{i}") } else { format!("audio-{i}") }).collect();
    Ok(Shared { scenario: s.clone(), spec: peer::MediaSpec::new(s), api, tls, local_ip, rooms, feeds: Mutex::new(Default::default()), publishers })
}

fn compare(reports: &[String]) -> anyhow::Result<()> {
    let mut cols = Vec::new();
    for r in reports {
        let (name, file) = r.split_once('=').context("reports are NAME=FILE")?;
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{file} is not a loadtest report"))?;
        cols.push((name.to_string(), v));
    }
    let rows: [(&str, &str); 9] = [
        ("packets received", "/packets_received"),
        ("received pkt/s", "/rx_pps"),
        ("loss %", "/loss"),
        ("latency p50 ms", "/latency_ms/p50"),
        ("latency p99 ms", "/latency_ms/p99"),
        ("server CPU-s", "/server_cpu_seconds"),
        ("server CPU-s per M pkts", "/server_cpu_s_per_million_forwarded"),
        ("server peak RSS MiB", "/server_peak_rss_kb"),
        ("loadtest CPU-s per M pkts", "/loadtest_cpu_s_per_million_received"),
    ];
    print!("{:<28}", "");
    for (name, _) in &cols {
        print!("{name:>14}");
    }
    for (name, _) in cols.iter().skip(1) {
        print!("{:>16}", format!("{name}/{}", cols[0].0));
    }
    println!();
    for (label, ptr) in rows {
        let vals: Vec<f64> = cols
            .iter()
            .map(|(_, v)| {
                let x = v.pointer(ptr).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
                match ptr {
                    "/loss" => x * 100.0,
                    "/server_peak_rss_kb" => x / 1024.0,
                    _ => x,
                }
            })
            .collect();
        print!("{label:<28}");
        for v in &vals {
            print!("{v:>14.3}");
        }
        for v in vals.iter().skip(1) {
            let ratio = if vals[0] != 0.0 { v / vals[0] } else { f64::NAN };
            print!("{ratio:>16.2}");
        }
        println!();
    }
    Ok(())
}

/// Receiver tracks and capped subscribers listed one per line up to this many.
const LIST_MAX: usize = 12;

fn print_layers(l: &stats::LayerReport) {
    if l.publishers.is_empty() && l.tracks.is_empty() {
        return;
    }
    println!("video sent       by rid: {}", stats::counts_line(&l.sent_by_rid));
    println!("video received   by keyframe size: {}", stats::counts_line(&l.received_by_resolution));
    println!("                 by rid sent: {}", stats::counts_line(&l.received_by_rid));
    println!("                 {} receiver tracks, by last keyframe size: {}", l.tracks.len(), stats::counts_line(&l.tracks_by_last_resolution));
    if l.tracks.len() <= LIST_MAX {
        for t in &l.tracks {
            println!("  {} <- {} (ssrc {}): {}", t.receiver, t.publisher, t.ssrc, stats::counts_line(&t.by_resolution));
        }
    }
}

fn print_capped(capped: &[stats::CappedRx]) {
    if capped.is_empty() {
        return;
    }
    let rates: Vec<f64> = capped.iter().map(|c| c.received_kbps).collect();
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rates.iter().copied().fold(0.0, f64::max);
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let (passed, dropped) = capped.iter().fold((0u64, 0u64), |(p, d), c| (p + c.passed.datagrams, d + c.dropped.datagrams));
    let dropped_pct = if passed + dropped > 0 { dropped as f64 * 100.0 / (passed + dropped) as f64 } else { 0.0 };
    println!("capped           {} subscribers: received {min:.0}/{mean:.0}/{max:.0} kbit/s (min/mean/max), {dropped_pct:.1}% of datagrams dropped", capped.len());
    if capped.len() <= LIST_MAX {
        for c in capped {
            println!("  {} cap {} kbit/s: received {:.0} kbit/s of {:.0} offered, dropped {} datagrams", c.subscriber, c.cap_kbps, c.received_kbps, c.offered_kbps, c.dropped.datagrams);
        }
    }
}
