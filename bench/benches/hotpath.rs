//! Criterion benchmarks of the media hot path: SRTP protect/unprotect (str0m's own ciphers),
//! fan-out from one publisher to N subscribers on one core (decrypt once, header rewrite +
//! SRTP protect per subscriber), the demux lookup, and our per-subscriber header rewrite.
//!
//! `cargo bench -p bench` (add `--features mimalloc` to compare allocators).

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn srtp(c: &mut Criterion) {
    let provider = media_plane::crypto::provider();
    let srtp = provider.srtp_provider;
    let mut g = c.benchmark_group("srtp");
    g.throughput(Throughput::Elements(1));
    let payload = vec![5u8; 1200];
    let aad = [0x80u8, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7];
    let iv = [3u8; 12];
    let mut enc = srtp.aead_aes_128_gcm().create_cipher([1; 16], true);
    let mut dec = srtp.aead_aes_128_gcm().create_cipher([1; 16], false);
    let mut sealed = vec![0u8; 1200 + 16];
    let _ = enc.encrypt(&iv, &aad, &payload, &mut sealed);
    let mut out = vec![0u8; 1200 + 16];
    g.bench_function("aead_aes_128_gcm_protect_1200B", |b| b.iter(|| enc.encrypt(black_box(&iv), &aad, black_box(&payload), &mut out)));
    let mut plain = vec![0u8; 1200 + 16];
    g.bench_function("aead_aes_128_gcm_unprotect_1200B", |b| b.iter(|| dec.decrypt(black_box(&iv), &[&aad], black_box(&sealed), &mut plain)));
    let mut cm = srtp.aes_128_cm_sha1_80().create_cipher([1; 16], true);
    let hmac = provider.sha1_hmac_provider;
    let iv16 = [3u8; 16];
    let mut out = vec![0u8; 1200];
    g.bench_function("aes_128_cm_sha1_80_protect_1200B", |b| {
        b.iter(|| {
            let _ = cm.encrypt(black_box(&iv16), black_box(&payload), &mut out);
            black_box(hmac.sha1_hmac(&[9u8; 20], &[&aad, &out]))
        })
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    media_plane::crypto::install();
    let mut g = c.benchmark_group("fanout");
    g.sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    for n in [1usize, 10, 100] {
        let mut w = bench::room(n);
        // Every subscriber must get the packet, or the figure would be meaningless.
        let (from, probe) = bench::publisher_packets(&mut w, 4);
        let produced = bench::feed(&mut w, from, &probe);
        assert!(produced >= 4 * n, "fan-out to {n}: only {produced} datagrams for {} packets", probe.len());
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("1_to_n_per_forwarded_packet", n), &n, |b, _| {
            b.iter_custom(|iters| {
                // Keep the simulated clients alive (STUN, RTCP), untimed.
                w.step(Duration::from_millis(10));
                // Fresh packets each batch: SRTP replay protection rejects repeats.
                let (from, packets) = bench::publisher_packets(&mut w, iters as usize);
                let before = w.core.counters();
                let start = Instant::now();
                black_box(bench::feed(&mut w, from, &packets));
                let elapsed = start.elapsed();
                let after = w.core.counters();
                // The work measured is real: every packet reached every subscriber.
                assert!(after.rx_rtp - before.rx_rtp >= iters, "publisher packets dropped");
                assert_eq!(after.tx_rtp - before.tx_rtp, n as u64 * (after.rx_rtp - before.rx_rtp));
                elapsed
            })
        });
    }
    g.finish();
}

fn demux(c: &mut Criterion) {
    let mut g = c.benchmark_group("demux");
    g.throughput(Throughput::Elements(1));
    let addrs: Vec<SocketAddr> = (0..10_000u32).map(|i| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40_000 + (i % 20_000) as u16))).collect();
    let std_map: HashMap<SocketAddr, usize> = addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect();
    let fx_map: rustc_hash::FxHashMap<SocketAddr, usize> = addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect();
    let mut i = 0usize;
    g.bench_function("by_addr_std_siphash_10k", |b| {
        b.iter(|| {
            i = (i + 7919) % addrs.len();
            black_box(std_map.get(&addrs[i]))
        })
    });
    g.bench_function("by_addr_fxhash_10k", |b| {
        b.iter(|| {
            i = (i + 7919) % addrs.len();
            black_box(fx_map.get(&addrs[i]))
        })
    });
    // A STUN binding request as browsers send it: the local ufrag is read from USERNAME.
    let mut stun = vec![0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[1; 12]);
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x09]);
    stun.extend_from_slice(b"abcd:wxyz\0\0\0");
    g.bench_function("stun_local_ufrag", |b| b.iter(|| black_box(media_plane::demux::stun_local_ufrag(black_box(&stun)))));
    g.finish();
}

/// Our per-subscriber header rewrite (payload-type map, sequence rebase and timestamp
/// offset); str0m then writes the header with the subscriber's SSRC, which the fan-out
/// figure includes. The second case runs with a source switch every 100 packets.
fn rewrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("rewrite");
    g.throughput(Throughput::Elements(1));
    let at = std::time::Instant::now();
    let mut r = media_plane::rewrite::Rewrite::default();
    for (i, o) in [(111, 111), (96, 98), (97, 99), (102, 104)] {
        r.map_pt(i, o);
    }
    let mut seq = 70_000u64;
    g.bench_function("pt_map_seq_and_ts", |b| {
        b.iter(|| {
            seq += 1;
            black_box((r.pt(black_box(102)), r.map(black_box(seq), seq as u32 * 3000, at, 90_000)))
        })
    });
    let mut n = 0u64;
    g.bench_function("pt_map_seq_and_ts_switching", |b| {
        b.iter(|| {
            n += 1;
            if n.is_multiple_of(100) {
                r.switch_source();
                r.map_pt(102, 104);
            }
            black_box((r.pt(black_box(102)), r.map(black_box(n * 7), n as u32 * 3000, at, 90_000)))
        })
    });
    g.finish();
}

/// Ordering one turn's send queue by destination for GSO: 100 subscribers × 4 packets,
/// interleaved (the worst case), with our reusable-buffer order against std's stable sort.
fn gso_order(c: &mut Criterion) {
    use percore::batch::{GsoOrder, Outgoing};
    let dests: Vec<SocketAddr> = (0..100).map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 4000))).collect();
    // Empty contents: only moves are measured, as in the loop (the bytes never move).
    let queue = || -> Vec<Outgoing> { (0..400).map(|i| Outgoing { destination: dests[(i * 37) % 100], contents: Vec::new() }).collect() };
    let mut g = c.benchmark_group("gso_order");
    g.throughput(Throughput::Elements(400));
    let mut order = GsoOrder::default();
    g.bench_function("reused_buffers_400", |b| b.iter_batched_ref(queue, |q| order.apply(q), criterion::BatchSize::SmallInput));
    g.bench_function("std_stable_sort_400", |b| b.iter_batched_ref(queue, |q| q.sort_by_key(|o| o.destination), criterion::BatchSize::SmallInput));
    g.finish();
}

/// What a pooled transmit buffer would save per forwarded packet: str0m allocates the SRTP
/// output zeroed, at the packet's size (1,050-byte RTP packet + 16-byte GCM tag here), and
/// the loop frees it once the kernel has it. Many are live at once (a turn's sends), so the
/// bench keeps 256 in flight like a send queue does.
fn transmit_alloc(c: &mut Criterion) {
    let mut g = c.benchmark_group("transmit_alloc");
    g.throughput(Throughput::Elements(256));
    let mut live: Vec<Vec<u8>> = Vec::with_capacity(256);
    g.bench_function("zeroed_1066B_alloc_and_free_x256", |b| {
        b.iter(|| {
            for _ in 0..256 {
                live.push(black_box(vec![0u8; 1066]));
            }
            live.clear();
        })
    });
    g.finish();
}

/// The same fan-out with a three-layer simulcast publisher, each subscriber on one layer
/// (a third on each): per forwarded packet, against `fanout` at the same subscriber count.
fn fanout_simulcast(c: &mut Criterion) {
    media_plane::crypto::install();
    let mut g = c.benchmark_group("fanout_simulcast");
    g.sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    for n in [30usize, 99] {
        let mut w = bench::simulcast_room(n);
        // Flush what the set-up left queued (audio too), then check one packet per layer.
        let (from, probe) = bench::publisher_packets(&mut w, 3);
        bench::feed(&mut w, from, &probe);
        let (from, probe) = bench::publisher_packets(&mut w, 3);
        let before = w.core.counters();
        bench::feed(&mut w, from, &probe);
        let after = w.core.counters();
        assert_eq!(after.tx_rtp - before.tx_rtp, n as u64, "each subscriber gets exactly its layer: 3 packets, {n} forwarded");
        g.bench_with_input(BenchmarkId::new("3_layers_per_forwarded_packet", n), &n, |b, _| {
            b.iter_custom(|iters| {
                w.step(Duration::from_millis(10));
                // One packet per layer per iteration, so each iteration forwards n packets.
                let (from, packets) = bench::publisher_packets(&mut w, 3 * iters as usize);
                let before = w.core.counters();
                let start = Instant::now();
                black_box(bench::feed(&mut w, from, &packets));
                let elapsed = start.elapsed();
                let after = w.core.counters();
                assert_eq!(after.tx_rtp - before.tx_rtp, n as u64 * iters, "every subscriber got its layer's packets");
                // Per forwarded packet: divide by the n packets an iteration forwards.
                elapsed / n as u32
            })
        });
    }
    g.finish();
}

criterion_group!(benches, srtp, fanout, fanout_simulcast, demux, rewrite, gso_order, transmit_alloc);
criterion_main!(benches);
