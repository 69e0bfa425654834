//! Core scaling of the media plane without a load generator competing for the cores: one
//! independent room per pinned core, each forwarding through the real `sfu::Core` (SRTP
//! unprotect once, fan-out, protect per subscriber) and sending every datagram through the
//! real batched io_uring path to loopback sinks. Rounds alternate 1 and 2 cores so that both
//! are measured in the same run; the ratio is aggregate packets/s on 2 cores over 1 core.
//! Each round also measures the machine's own scaling on references of the same count: bare
//! sends (the kernel's share), the media path with its datagrams dropped before the kernel
//! (user space alone), computation in cache, and copies through memory beyond the private
//! cache, so the media ratio can be read against what the cores, caches and kernel allow.
//!
//! What it leaves out, on purpose: the publisher's receive syscall (one ingress datagram per
//! `subscribers` egress ones, fed from memory) and the subscribers' own work (the sinks are
//! never read; the kernel drops at their full buffers after delivering to them).
//!
//! `cargo run --release -p bench --bin scaling -- --subscribers 100 --packets 6000 --rounds 3`

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use percore::batch::{BatchIo, Outgoing, Waker};

// `--features mimalloc` compares allocators; the media plane's default is the system one.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Media-plane scaling from one core to several.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    feed: bench::Feed,
    /// Rounds; each round measures 1 core, then all of `--cores`.
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Cores to use (the first one alone, then all of them).
    #[arg(long, value_delimiter = ',', default_value = "0,1")]
    cores: Vec<usize>,
    /// Virtual time between publisher packets (10 ms: one 1 Mbit/s video stream), which sets
    /// how much each subscriber's retransmission cache holds (str0m keeps 3 s).
    #[arg(long, default_value_t = 10_000)]
    interval_us: u64,
    /// Each subscriber's NACK history in milliseconds (the media plane's `--nack-history-ms`).
    #[arg(long, default_value_t = media_plane::sfu::NACK_HISTORY.as_millis() as u64)]
    nack_history_ms: u64,
    /// Leave glibc's heap trimming at its default (the media plane turns it down).
    #[arg(long)]
    heap_trim: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// What one core did in one round.
#[derive(Debug, Clone, Copy)]
struct CoreRun {
    forwarded: u64,
    elapsed: Duration,
    cpu: Duration,
}

/// One core's room, its sinks and its socket, set up before the clock starts.
struct Rig {
    world: media_plane::sim::World,
    from: SocketAddr,
    packets: Vec<Vec<u8>>,
    /// Packets forwarded before the clock starts.
    warmup: usize,
    sinks: bench::Sinks,
    io: BatchIo,
}

impl Rig {
    fn new(subscribers: usize, packets: usize, warmup: usize, history: Duration) -> anyhow::Result<Self> {
        let mut world = bench::room_with(subscribers, history);
        let sinks = bench::Sinks::for_peers(&world)?;
        let (from, packets) = bench::publisher_packets(&mut world, warmup + packets);
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        percore::batch::set_buffers(&sock, 8 << 20);
        let (io, _) = BatchIo::new(sock, Waker::new()?, false)?;
        Ok(Rig { world, from, packets, warmup, sinks, io })
    }

    /// Forwards the warm-up packets unmeasured (every subscriber's send history fills to
    /// its steady size, so first-touch page faults stay out of the figure), then the rest
    /// on the clock, sending what the core produces.
    fn run(&mut self, interval: Duration, batch: usize, send: bool) -> anyhow::Result<CoreRun> {
        let warmup = self.warmup.min(self.packets.len());
        self.forward(0..warmup, interval, batch, send)?;
        let before = self.world.core.counters().tx_rtp;
        let cpu0 = percore::thread_cpu();
        let t0 = Instant::now();
        self.forward(warmup..self.packets.len(), interval, batch, send)?;
        Ok(CoreRun { forwarded: self.world.core.counters().tx_rtp - before, elapsed: t0.elapsed(), cpu: percore::thread_cpu() - cpu0 })
    }

    /// The same loop shape as `media_plane::worker`: a batch of input, then one submission.
    fn forward(&mut self, range: std::ops::Range<usize>, interval: Duration, batch: usize, send: bool) -> anyhow::Result<()> {
        let mut out: Vec<Outgoing> = Vec::with_capacity(4096);
        let mut nothing = |_: SocketAddr, _: &mut [u8]| {};
        let packets = std::mem::take(&mut self.packets);
        for chunk in packets[range].chunks(batch.max(1)) {
            for p in chunk {
                self.world.now += interval;
                let now = self.world.now;
                self.world.core.handle_datagram(now, self.from, p);
                if self.world.core.next_timeout().is_some_and(|t| t <= now) {
                    self.world.core.handle_timeout(now);
                }
            }
            if send {
                self.sinks.queue(&mut self.world.core, &mut out);
            } else {
                for t in self.world.core.take_transmits() {
                    std::hint::black_box(&t);
                }
            }
            self.io.turn(&mut out, Some(Instant::now()), 256, &mut nothing)?;
        }
        while !out.is_empty() {
            self.io.turn(&mut out, Some(Instant::now()), 256, &mut nothing)?;
        }
        self.packets = packets;
        Ok(())
    }

    /// The reference: as many 1200-byte datagrams as `run` forwards, through the same batched
    /// send path to the same sinks, with no media work at all (the machine's own scaling).
    fn raw(&mut self, batch: usize) -> anyhow::Result<CoreRun> {
        let dests: Vec<SocketAddr> = self.sinks.addrs().collect();
        let n = (self.packets.len() - self.warmup.min(self.packets.len())) * dests.len().saturating_sub(1);
        let template = vec![0x80u8; 1200];
        let cpu0 = percore::thread_cpu();
        let t0 = Instant::now();
        let mut out: Vec<Outgoing> = Vec::with_capacity(4096);
        let mut nothing = |_: SocketAddr, _: &mut [u8]| {};
        // Turns of `batch` datagrams per sink, as the media run produces.
        let per_turn = batch.max(1) * dests.len();
        for i in 0..n {
            out.push(Outgoing { destination: dests[i % dests.len()], contents: template.clone() });
            if out.len() >= per_turn {
                self.io.turn(&mut out, Some(Instant::now()), 256, &mut nothing)?;
            }
        }
        while !out.is_empty() {
            self.io.turn(&mut out, Some(Instant::now()), 256, &mut nothing)?;
        }
        Ok(CoreRun { forwarded: n as u64, elapsed: t0.elapsed(), cpu: percore::thread_cpu() - cpu0 })
    }

    /// The memory reference: as many 1200-byte copies as `run` forwards packets, walking two
    /// rings larger than the private cache.
    fn memory(&mut self, rings: &mut (Vec<u8>, Vec<u8>)) -> CoreRun {
        let n = (self.packets.len() - self.warmup.min(self.packets.len())) * self.sinks.len().saturating_sub(1);
        let (src, dst) = rings;
        let slots = src.len() / 1200;
        let cpu0 = percore::thread_cpu();
        let t0 = Instant::now();
        for i in 0..n {
            let a = (i % slots) * 1200;
            let b = ((i * 7 + 3) % slots) * 1200;
            dst[b..b + 1200].copy_from_slice(&src[a..a + 1200]);
            std::hint::black_box(&dst[b]);
        }
        CoreRun { forwarded: n as u64, elapsed: t0.elapsed(), cpu: percore::thread_cpu() - cpu0 }
    }

    /// A pure-compute reference: a multiply-xor hash over a 1200-byte buffer in L1, as many
    /// times as `run` forwards packets.
    fn compute(&mut self) -> CoreRun {
        let n = (self.packets.len() - self.warmup.min(self.packets.len())) * self.sinks.len().saturating_sub(1);
        let buf = [0x5au8; 1200];
        let cpu0 = percore::thread_cpu();
        let t0 = Instant::now();
        let mut h = 0u64;
        for i in 0..n {
            for c in std::hint::black_box(&buf).chunks_exact(8) {
                let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                h = (h ^ w ^ i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
            }
        }
        std::hint::black_box(h);
        CoreRun { forwarded: n as u64, elapsed: t0.elapsed(), cpu: percore::thread_cpu() - cpu0 }
    }
}

/// What a round measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The media path, sending what it produces.
    Media,
    /// The media path with its datagrams dropped before the kernel (user-space share alone).
    Unsent,
    /// As many bare 1200-byte sends (the kernel's share alone).
    Raw,
    /// Pure computation in cache, per would-be packet (the cores' own scaling).
    Compute,
    /// One 1200-byte copy per would-be packet between two 16 MiB rings per core, beyond the
    /// private L2 (the shared L3 and memory's scaling).
    Memory,
}

/// Size of each ring of the memory reference.
const MEMORY_RING: usize = 16 << 20;

/// Runs one round on `cores` at once; every core sets up first, then all start together.
fn round(cores: &[usize], args: &Args, mode: Mode) -> anyhow::Result<Vec<CoreRun>> {
    let start = Arc::new(Barrier::new(cores.len()));
    let handles: Vec<_> = cores
        .iter()
        .map(|&c| {
            let start = start.clone();
            let (subs, pkts, warm, interval, batch) = (args.feed.subscribers, args.feed.packets, args.feed.warmup, Duration::from_micros(args.interval_us), args.feed.batch);
            let history = Duration::from_millis(args.nack_history_ms.max(1));
            std::thread::spawn(move || -> anyhow::Result<CoreRun> {
                percore::pin(c);
                let rig = Rig::new(subs, pkts, warm, history);
                // The memory reference's rings, written once so no page fault is on the clock.
                let mut rings = if mode == Mode::Memory { (vec![1u8; MEMORY_RING], vec![2u8; MEMORY_RING]) } else { (Vec::new(), Vec::new()) };
                start.wait();
                let mut rig = rig?;
                match mode {
                    Mode::Raw => rig.raw(batch),
                    Mode::Media => rig.run(interval, batch, true),
                    Mode::Unsent => rig.run(interval, batch, false),
                    Mode::Compute => Ok(rig.compute()),
                    Mode::Memory => Ok(rig.memory(&mut rings)),
                }
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("a core's thread panicked"))?).collect()
}

/// Aggregate packets/s of one round: everything forwarded over the slowest core's time.
fn rate(runs: &[CoreRun]) -> f64 {
    let total: u64 = runs.iter().map(|r| r.forwarded).sum();
    let slowest = runs.iter().map(|r| r.elapsed).max().unwrap_or_default();
    total as f64 / slowest.as_secs_f64().max(1e-9)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(!args.cores.is_empty(), "--cores is empty");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    args.feed.check()?;
    str0m::crypto::from_feature_flags().install_process_default();
    if !args.heap_trim {
        percore::heap::keep_freed_memory();
    }
    let (mut one, mut all, mut raw_one, mut raw_all) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut unsent_one, mut unsent_all, mut compute_one, mut compute_all) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut memory_one, mut memory_all) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        raw_one.push(rate(&round(&args.cores[..1], &args, Mode::Raw).context("reference, one core")?));
        one.push(round(&args.cores[..1], &args, Mode::Media).context("one core")?);
        raw_all.push(rate(&round(&args.cores, &args, Mode::Raw).context("reference, all cores")?));
        all.push(round(&args.cores, &args, Mode::Media).context("all cores")?);
        compute_one.push(rate(&round(&args.cores[..1], &args, Mode::Compute)?));
        unsent_one.push(rate(&round(&args.cores[..1], &args, Mode::Unsent)?));
        compute_all.push(rate(&round(&args.cores, &args, Mode::Compute)?));
        unsent_all.push(rate(&round(&args.cores, &args, Mode::Unsent)?));
        memory_one.push(rate(&round(&args.cores[..1], &args, Mode::Memory)?));
        memory_all.push(rate(&round(&args.cores, &args, Mode::Memory)?));
    }
    let ratio_of = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| y / x).collect() };
    let unsent_ratios = ratio_of(&unsent_one, &unsent_all);
    let compute_ratios = ratio_of(&compute_one, &compute_all);
    let memory_ratios = ratio_of(&memory_one, &memory_all);
    let raw_ratios: Vec<f64> = raw_one.iter().zip(&raw_all).map(|(a, b)| b / a).collect();
    let expected = (args.feed.packets * args.feed.subscribers) as u64;
    for r in one.iter().chain(&all).flatten() {
        anyhow::ensure!(r.forwarded >= expected * 99 / 100, "a core forwarded {} of {expected} packets", r.forwarded);
    }
    let r1: Vec<f64> = one.iter().map(|r| rate(r)).collect();
    let rn: Vec<f64> = all.iter().map(|r| rate(r)).collect();
    let ratios: Vec<f64> = r1.iter().zip(&rn).map(|(a, b)| b / a).collect();
    let us = |rs: &[Vec<CoreRun>]| {
        let cpu: f64 = rs.iter().flatten().map(|r| r.cpu.as_secs_f64()).sum();
        let n: u64 = rs.iter().flatten().map(|r| r.forwarded).sum();
        cpu * 1e6 / n.max(1) as f64
    };
    let busy = |rs: &[Vec<CoreRun>]| {
        let v: Vec<f64> = rs.iter().flatten().map(|r| r.cpu.as_secs_f64() / r.elapsed.as_secs_f64().max(1e-9)).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    let relative: Vec<f64> = ratios.iter().zip(&raw_ratios).map(|(m, r)| m / r).collect();
    // Interference on a shared host only ever slows a round down: the best round of each
    // kind is the least disturbed estimate.
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let best_ratio = best(&rn) / best(&r1).max(1e-9);
    let best_raw_ratio = best(&raw_all) / best(&raw_one).max(1e-9);
    let n = args.cores.len();
    if args.json {
        println!(
            "{{\"cores\":{n},\"subscribers\":{},\"one_core_pps\":{r1:?},\"all_cores_pps\":{rn:?},\"ratios\":{ratios:?},\"median_ratio\":{:.3},\"reference_ratios\":{raw_ratios:?},\"median_reference_ratio\":{:.3},\"median_relative\":{:.3},\"best_ratio\":{best_ratio:.3},\"best_reference_ratio\":{best_raw_ratio:.3},\"us_per_packet_one\":{:.3},\"us_per_packet_all\":{:.3},\"unsent_ratios\":{unsent_ratios:?},\"median_unsent_ratio\":{:.3},\"compute_ratios\":{compute_ratios:?},\"median_compute_ratio\":{:.3},\"memory_ratios\":{memory_ratios:?},\"median_memory_ratio\":{:.3}}}",
            args.feed.subscribers,
            median(&ratios),
            median(&raw_ratios),
            median(&relative),
            us(&one),
            us(&all),
            median(&unsent_ratios),
            median(&compute_ratios),
            median(&memory_ratios)
        );
    } else {
        println!("{} subscribers per core, {} publisher packets per core per round", args.feed.subscribers, args.feed.packets);
        for i in 0..ratios.len() {
            println!(
                "round {i}: media 1 core {:>7.0} pkt/s, {n} cores {:>7.0} pkt/s, ratio {:.2} | raw sends {:>8.0} / {:>8.0} pkt/s, ratio {:.2}",
                r1[i], rn[i], ratios[i], raw_one[i], raw_all[i], raw_ratios[i]
            );
        }
        println!(
            "median {n}-core/1-core ratio: media {:.2}, raw sends {:.2}; media over raw, per round: {:.2}",
            median(&ratios),
            median(&raw_ratios),
            median(&relative)
        );
        println!("best round of each kind: media {:.0} → {:.0} pkt/s, ratio {best_ratio:.2}; raw sends ratio {best_raw_ratio:.2}", best(&r1), best(&rn));
        println!(
            "median {n}-core/1-core ratio of the references: media without its sends {:.2}, compute in cache {:.2}, copies through memory {:.2}",
            median(&unsent_ratios),
            median(&compute_ratios),
            median(&memory_ratios)
        );
        println!("CPU per forwarded packet {:.2} µs on 1 core, {:.2} µs on {n} cores", us(&one), us(&all));
        println!("share of its core each thread had: 1 core {:.2}, {n} cores {:.2}", busy(&one), busy(&all));
    }
    Ok(())
}
