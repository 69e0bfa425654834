//! Heap allocations per forwarded packet on the media hot path, by stage, counted by a
//! global allocator wrapper. The loop has the worker's shape: publisher datagrams arrive on a
//! real UDP socket through `percore::batch::BatchIo` (io_uring, multishot receive into
//! provided buffers), the receive callback hands each to the real `sfu::Core` (SRTP unprotect
//! once, fan-out, str0m send per subscriber), and the core's datagrams leave through the same
//! `BatchIo` to loopback sinks. Stages:
//! - `core`: inside `Core::handle_datagram` / `handle_timeout` (str0m's work and ours);
//! - `handoff`: `Core::take_transmits` into the send queue;
//! - `io`: `BatchIo::turn` outside the receive callback (our receive and send path).
//!
//! It also counts the minor page faults of the second half of the measured turns (the first
//! still fault in memory that is touched once): memory the heap gave back to the kernel and
//! took again. The media plane keeps freed memory
//! (`percore::heap::keep_freed_memory`); `--heap-trim` leaves glibc's default to compare.
//!
//! `cargo run --release -p bench --bin allocs -- --subscribers 100 --packets 1000`

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser;
use percore::batch::{BatchIo, Outgoing, Waker};

/// Counts every allocation (and reallocation) made through it, then defers to the system.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn count(size: usize) {
    ALLOCS.fetch_add(1, Relaxed);
    BYTES.fetch_add(size as u64, Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's layout is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: ptr came from this allocator with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes since a snapshot.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    allocs: u64,
    bytes: u64,
}

impl Tally {
    fn now() -> Tally {
        Tally { allocs: ALLOCS.load(Relaxed), bytes: BYTES.load(Relaxed) }
    }
    fn since(self, before: Tally) -> Tally {
        Tally { allocs: self.allocs - before.allocs, bytes: self.bytes - before.bytes }
    }
    fn add(&mut self, t: Tally) {
        self.allocs += t.allocs;
        self.bytes += t.bytes;
    }
}

/// Allocations per forwarded packet on the media path, by stage.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    feed: bench::Feed,
    /// Use the recvmmsg/sendmmsg fallback instead of io_uring.
    #[arg(long)]
    epoll: bool,
    /// Leave glibc's heap trimming at its default (the media plane turns it down).
    #[arg(long)]
    heap_trim: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.feed.check()?;
    let bench::Feed { subscribers, packets: counted, warmup, batch } = args.feed;
    str0m::crypto::from_feature_flags().install_process_default();
    if !args.heap_trim {
        percore::heap::keep_freed_memory();
    }
    let mut world = bench::room(subscribers);
    let sinks = bench::Sinks::for_peers(&world)?;
    let (from, packets) = bench::publisher_packets(&mut world, warmup + counted);
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    percore::batch::set_buffers(&sock, 8 << 20);
    let local = sock.local_addr()?;
    let (mut io, backend) = BatchIo::new(sock, Waker::new()?, args.epoll)?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    client.connect(local)?;

    let interval = Duration::from_millis(10);
    let mut out: Vec<Outgoing> = Vec::with_capacity(1 << 16);
    let (mut core_t, mut handoff_t, mut io_t) = (Tally::default(), Tally::default(), Tally::default());
    let (mut tx_counted, mut rx_counted) = (0u64, 0u64);
    // Page faults and wall time over the second half of the measured packets.
    let (mut faults, mut wall, mut tx_late) = (0u64, Duration::ZERO, 0u64);
    for (i, chunk) in packets.chunks(batch).enumerate() {
        let counting = i * batch >= warmup;
        for p in chunk {
            client.send(p)?;
        }
        let tx0 = world.core.counters().tx_rtp;
        let (faults0, wall0) = (percore::heap::minor_faults(), Instant::now());
        let mut got = 0;
        let mut in_core = Tally::default();
        let turn_start = Tally::now();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got < chunk.len() && Instant::now() < deadline {
            let w = &mut world;
            let mut on_recv = |_: SocketAddr, d: &mut [u8]| {
                let t0 = Tally::now();
                w.now += interval;
                let now = w.now;
                w.core.handle_datagram(now, from, d);
                if w.core.next_timeout().is_some_and(|t| t <= now) {
                    w.core.handle_timeout(now);
                }
                in_core.add(Tally::now().since(t0));
                got += 1;
            };
            io.turn(&mut out, Some(Instant::now() + Duration::from_millis(50)), 256, &mut on_recv)?;
        }
        anyhow::ensure!(got == chunk.len(), "received {got} of {} publisher datagrams", chunk.len());
        let turn = Tally::now().since(turn_start);
        let t0 = Tally::now();
        sinks.queue(&mut world.core, &mut out);
        let handoff = Tally::now().since(t0);
        if i * batch >= warmup + counted / 2 {
            faults += percore::heap::minor_faults() - faults0;
            wall += wall0.elapsed();
            tx_late += world.core.counters().tx_rtp - tx0;
        }
        if counting {
            core_t.add(in_core);
            io_t.add(Tally { allocs: turn.allocs - in_core.allocs, bytes: turn.bytes - in_core.bytes });
            handoff_t.add(handoff);
            tx_counted += world.core.counters().tx_rtp - tx0;
            rx_counted += chunk.len() as u64;
        }
    }
    // The last turn's sends, counted too.
    let t0 = Tally::now();
    let (faults0, wall0) = (percore::heap::minor_faults(), Instant::now());
    while !out.is_empty() {
        io.turn(&mut out, Some(Instant::now()), 256, &mut |_, _| {})?;
    }
    io_t.add(Tally::now().since(t0));
    faults += percore::heap::minor_faults() - faults0;
    wall += wall0.elapsed();
    let faults_per = faults as f64 / tx_late.max(1) as f64;
    let ns_per = wall.as_nanos() as f64 / tx_late.max(1) as f64;
    anyhow::ensure!(tx_counted >= (counted * subscribers) as u64 * 99 / 100, "forwarded {tx_counted} packets");
    let per = |t: Tally| t.allocs as f64 / tx_counted.max(1) as f64;
    let bytes = |t: Tally| t.bytes as f64 / tx_counted.max(1) as f64;
    if args.json {
        println!(
            "{{\"backend\":\"{backend:?}\",\"subscribers\":{},\"ingress\":{rx_counted},\"forwarded\":{tx_counted},\"core_allocs_per_packet\":{:.4},\"core_bytes_per_packet\":{:.1},\"handoff_allocs_per_packet\":{:.4},\"io_allocs_per_packet\":{:.4},\"io_allocs\":{},\"handoff_allocs\":{},\"heap_trim\":{},\"page_faults_per_packet\":{faults_per:.4},\"ns_per_packet\":{ns_per:.0}}}",
            subscribers,
            per(core_t),
            bytes(core_t),
            per(handoff_t),
            per(io_t),
            io_t.allocs,
            handoff_t.allocs,
            args.heap_trim
        );
    } else {
        println!("{backend:?}: {rx_counted} publisher packets in, {tx_counted} forwarded to {} subscribers", subscribers);
        println!("allocations per forwarded packet:");
        println!("  core (str0m receive, fan-out, str0m send)  {:.3}  ({:.0} bytes)", per(core_t), bytes(core_t));
        println!("  handoff (take_transmits into the queue)    {:.3}  ({} in all)", per(handoff_t), handoff_t.allocs);
        println!("  io (batched receive and send)              {:.3}  ({} in all)", per(io_t), io_t.allocs);
        let heap = if args.heap_trim { "glibc's default trimming" } else { "freed memory kept" };
        println!("page faults per forwarded packet: {faults_per:.4} ({heap}); {ns_per:.0} ns per forwarded packet, whole loop");
    }
    Ok(())
}
