//! The machine's own UDP ceiling on one pinned core, to read every end-to-end figure as a
//! ratio: 1200-byte datagrams to loopback with plain `send_to()` (one syscall each, distinct
//! destinations), plain `send()` on a connected socket, with
//! batched io_uring sends to distinct destinations (`percore::batch`, the media plane's own
//! send path), and with GSO to one destination. A drain thread on another core reads the
//! sinks so that the path includes delivery.
//!
//! `cargo run --release -p bench --bin ceiling -- --seconds 3 --core 0`

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use percore::batch::{BatchIo, Outgoing, Waker};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Raw UDP send ceiling of one core.
#[derive(Parser, Debug)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Core to pin the sender to (the drain runs on the next one).
    #[arg(long, default_value_t = 0)]
    core: usize,
    /// Datagram size.
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// Distinct destinations (sink sockets).
    #[arg(long, default_value_t = 64)]
    sinks: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `n` bound sink sockets drained by a thread on core `core`, so sends include delivery.
struct Sinks {
    dests: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    drain: std::thread::JoinHandle<()>,
}

impl Sinks {
    fn start(n: usize, core: usize) -> anyhow::Result<Self> {
        let socks = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
        let dests = socks.iter().map(|s| s.local_addr()).collect::<std::io::Result<Vec<_>>>()?;
        for s in &socks {
            s.set_nonblocking(true)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let drain = std::thread::spawn(move || {
            percore::pin(core);
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let mut idle = true;
                for s in &socks {
                    while s.recv(&mut buf).is_ok() {
                        idle = false;
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        });
        Ok(Self { dests, stop, drain })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.drain.join();
    }
}

/// A sending socket with large kernel buffers.
fn sender() -> anyhow::Result<UdpSocket> {
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    percore::batch::set_buffers(&tx, 8 << 20);
    Ok(tx)
}

/// Sends for `secs`, returns (datagrams sent per second, CPU seconds used by this thread).
fn measure(secs: f64, mut send_batch: impl FnMut() -> usize) -> (f64, f64) {
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let mut sent = 0usize;
    while start.elapsed().as_secs_f64() < secs {
        sent += send_batch();
    }
    let wall = start.elapsed().as_secs_f64();
    (sent as f64 / wall, thread_cpu() - cpu0)
}

fn thread_cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    percore::pin(a.core);
    let payload = vec![0x5au8; a.size];
    let mut rows = Vec::new();

    // 1. Plain send_to(), one syscall per datagram, round-robin over the sinks.
    let sinks = Sinks::start(a.sinks, a.core + 1)?;
    let tx = sender()?;
    let mut i = 0;
    let (pps, cpu) = measure(a.seconds, || {
        (0..64)
            .filter(|_| {
                i = (i + 1) % sinks.dests.len();
                tx.send_to(&payload, sinks.dests[i]).is_ok()
            })
            .count()
    });
    sinks.stop();
    rows.push(("send_to, one syscall per datagram", pps, cpu));

    // 1b. Plain send() on a connected socket to one destination.
    let sinks = Sinks::start(1, a.core + 1)?;
    let tx = sender()?;
    tx.connect(sinks.dests[0])?;
    let (pps, cpu) = measure(a.seconds, || (0..64).filter(|_| tx.send(&payload).is_ok()).count());
    sinks.stop();
    rows.push(("send on a connected socket, one destination", pps, cpu));

    // 2. Batched io_uring sends to distinct destinations (64 per submission).
    // 3. The same with every datagram to one destination, so GSO coalesces them.
    for (label, one_dest) in [("io_uring batch of 64, distinct destinations", false), ("io_uring batch of 64, GSO to one destination", true)] {
        let sinks = Sinks::start(a.sinks, a.core + 1)?;
        let (mut io, backend) = BatchIo::new(sender()?, Waker::new()?, false)?;
        let mut out: Vec<Outgoing> = Vec::with_capacity(64);
        let mut j = 0;
        let (pps, cpu) = measure(a.seconds, || {
            for _ in 0..64 {
                j = (j + 1) % sinks.dests.len();
                let destination = if one_dest { sinks.dests[0] } else { sinks.dests[j] };
                out.push(Outgoing { destination, contents: payload.clone() });
            }
            io.turn(&mut out, Some(Instant::now()), 64, &mut |_, _| {}).map_or(0, |st| st.sent)
        });
        sinks.stop();
        rows.push((if backend == percore::Backend::IoUring { label } else { "recvmmsg/sendmmsg fallback (io_uring refused)" }, pps, cpu));
    }

    if a.json {
        let items: Vec<String> = rows.iter().map(|(l, p, c)| format!("{{\"path\":\"{l}\",\"pps\":{p:.0},\"cpu_s\":{c:.2}}}")).collect();
        println!("{{\"size\":{},\"seconds\":{},\"results\":[{}]}}", a.size, a.seconds, items.join(","));
    } else {
        println!("{}-byte datagrams to loopback, {} s each, sender pinned to core {}", a.size, a.seconds, a.core);
        for (l, p, c) in &rows {
            println!("{l:<48} {p:>10.0} datagrams/s  ({:.2} µs CPU each)", c * 1e6 / (p * a.seconds).max(1.0));
        }
    }
    Ok(())
}
