//! Shared pieces of the benchmarks: a connected room on one simulated core.

use std::net::SocketAddr;
use std::time::Duration;

use media_plane::sim::World;
use str0m::format::Codec;
use str0m::media::MediaKind;
use str0m::rtp::RtpWrite;
use str0m::Output;

/// One publisher and `subscribers` receivers, connected, on a simulated core.
pub fn room(subscribers: usize) -> World {
    room_with(subscribers, media_plane::sfu::NACK_HISTORY)
}

/// [`room`] with each subscriber's video keeping `nack_history` of sent packets.
pub fn room_with(subscribers: usize, nack_history: std::time::Duration) -> World {
    let mut w = World::new();
    w.core.set_nack_history(nack_history);
    w.join("pub", "bench", true);
    for i in 0..subscribers {
        w.join(&format!("sub{i}"), "bench", false);
    }
    w.connect_all();
    // A few media steps so every subscriber's tracks are negotiated and open.
    w.run_media(30);
    w
}

/// A three-layer simulcast publisher (VP8, rids l/m/h) and `subscribers` receivers, a third
/// of them asking for each layer, connected and switched, on a simulated core.
pub fn simulcast_room(subscribers: usize) -> World {
    let mut w = World::new();
    w.join_simulcast("pub", "bench", media_plane::sim::three_layers());
    for i in 0..subscribers {
        w.join(&format!("sub{i}"), "bench", false);
    }
    w.connect_all();
    let track = w.peers[0].send.iter().find(|(_, k)| *k == MediaKind::Video).map(|(m, _)| m.to_string()).unwrap_or_default();
    let qualities = [link::Quality::Low, link::Quality::Medium, link::Quality::High];
    for i in 0..subscribers {
        let settings = link::TrackSettings { quality: Some(qualities[i % 3]), ..Default::default() };
        let now = w.now;
        w.core.handle_command(now, link::Command::Subscribe { session: format!("S-sub{i}"), publisher: "S-pub".into(), track: track.clone(), settings });
    }
    // Enough media for every subscriber's layer to switch at a keyframe.
    w.run_media(120);
    w
}

/// `n` SRTP-protected video datagrams (1000-byte payload; for a simulcast publisher, VP8
/// delta frames of each layer in turn, each layer's own size) from the publisher (peer 0),
/// ready to feed to the core, with the address they come from.
pub fn publisher_packets(w: &mut World, n: usize) -> (SocketAddr, Vec<Vec<u8>>) {
    let now = w.now;
    let p = &mut w.peers[0];
    let addr = p.addr;
    let mut out = Vec::with_capacity(n);
    let Some(&(mid, _)) = p.send.iter().find(|(_, k)| *k == MediaKind::Video) else { return (addr, out) };
    let Some(pt) = p.rtc.codec_config().find(|c| c.spec().codec == Codec::Vp8).map(|c| c.pt()) else { return (addr, out) };
    let mut t = now;
    for _ in 0..n {
        let seq = p.seq;
        p.seq += 1;
        let layers = p.layers.len();
        if let Some(l) = (layers > 0).then(|| &mut p.layers[seq as usize % layers]) {
            let payload = media_plane::sim::vp8_payload(l.picture_id, l.tl0, false, l.size, l.len);
            l.picture_id = (l.picture_id + 1) & 0x7fff;
            l.tl0 = l.tl0.wrapping_add(1);
            let rid = Some(l.rid);
            if let Some(tx) = p.rtc.direct_api().stream_tx_by_mid(mid, rid) {
                tx.write_rtp(RtpWrite::new(pt, seq.into(), (seq * 3000) as u32, t, payload).marker(true));
            }
        } else if let Some(tx) = p.rtc.direct_api().stream_tx_by_mid(mid, None) {
            tx.write_rtp(RtpWrite::new(pt, seq.into(), (seq * 3000) as u32, t, vec![7u8; 1000]).marker(true));
        }
        // str0m releases written packets on its next timeout: 1 µs per packet.
        t += Duration::from_micros(1);
        let _ = p.rtc.handle_input(str0m::Input::Timeout(t));
        while let Ok(o) = p.rtc.poll_output() {
            match o {
                Output::Transmit(t) => out.push(t.contents.to_vec()),
                Output::Timeout(_) => break,
                Output::Event(_) => {}
            }
        }
    }
    w.now = t;
    (addr, out)
}

/// Feeds datagrams to the core and drops what it sends; returns the datagrams produced.
pub fn feed(w: &mut World, from: SocketAddr, packets: &[Vec<u8>]) -> usize {
    let mut produced = 0;
    for p in packets {
        // Time moves on as in the real loop, so pacers release what they hold.
        w.now += Duration::from_micros(1);
        w.core.handle_datagram(w.now, from, p);
        // As the core loop does: str0m releases written packets on its next timeout.
        if w.core.next_timeout().is_some_and(|t| t <= w.now) {
            w.core.handle_timeout(w.now);
        }
        produced += w.core.take_transmits().count();
    }
    produced
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_subscriber_gets_every_packet() {
        str0m::crypto::from_feature_flags().install_process_default();
        let mut w = super::room(3);
        let c0 = w.core.counters();
        let (from, pk) = super::publisher_packets(&mut w, 10);
        let produced = super::feed(&mut w, from, &pk);
        let c1 = w.core.counters();
        eprintln!("packets {} produced {produced} rx {} tx {}", pk.len(), c1.rx_rtp - c0.rx_rtp, c1.tx_rtp - c0.tx_rtp);
        assert!(c1.rx_rtp - c0.rx_rtp >= 10);
        assert_eq!(c1.tx_rtp - c0.tx_rtp, 3 * (c1.rx_rtp - c0.rx_rtp));
        assert!(produced >= 30, "{produced}");
    }
}

/// The room and publisher feed that the `scaling` and `allocs` tools share on the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct Feed {
    /// Subscribers in the room (one room per core).
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Publisher packets measured after the warm-up. At 10 ms of virtual time apart,
    /// warm-up and these together must stay under 1400: the sinks never refresh ICE consent.
    #[arg(long, default_value_t = 1000)]
    pub packets: usize,
    /// Publisher packets forwarded before measuring, so send histories and queues are at
    /// their steady size.
    #[arg(long, default_value_t = 350)]
    pub warmup: usize,
    /// Publisher packets handed to the core per loop turn (a 1 Mbit/s, 30 fps frame is about
    /// 4). Each subscriber's packets of one turn leave as one GSO send.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
}

impl Feed {
    /// Refuses values the tools cannot run with.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=250).contains(&self.subscribers), "--subscribers must be 1..=250");
        anyhow::ensure!(self.packets > 0 && self.batch > 0, "--packets and --batch must be at least 1");
        anyhow::ensure!(self.packets + self.warmup <= 1400, "--packets plus --warmup must be at most 1400");
        Ok(())
    }
}

/// One loopback socket per peer of a world, never read: where the core's datagrams go.
pub struct Sinks {
    by_peer: std::collections::HashMap<SocketAddr, SocketAddr>,
    _sockets: Vec<std::net::UdpSocket>,
}

impl Sinks {
    /// Binds a sink for every peer of `world`.
    pub fn for_peers(world: &World) -> std::io::Result<Sinks> {
        let mut by_peer = std::collections::HashMap::new();
        let mut sockets = Vec::new();
        for p in &world.peers {
            let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
            by_peer.insert(p.addr, s.local_addr()?);
            sockets.push(s);
        }
        Ok(Sinks { by_peer, _sockets: sockets })
    }

    /// Sink addresses, one per peer.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.by_peer.values().copied()
    }

    /// Number of sinks.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    /// Queues what the core produced since the last call, addressed to the peers' sinks.
    pub fn queue(&self, core: &mut media_plane::sfu::Core, out: &mut Vec<percore::batch::Outgoing>) {
        for t in core.take_transmits() {
            if let Some(&d) = self.by_peer.get(&t.destination) {
                out.push(percore::batch::Outgoing { destination: d, contents: t.contents });
            }
        }
    }
}

#[cfg(test)]
mod simulcast_tests {
    #[test]
    fn each_subscriber_gets_its_layer_only() {
        str0m::crypto::from_feature_flags().install_process_default();
        let mut w = super::simulcast_room(6);
        // The first feed also carries what the last media step left queued (audio too).
        let (from, pk) = super::publisher_packets(&mut w, 3);
        super::feed(&mut w, from, &pk);
        let c0 = w.core.counters();
        let (from, pk) = super::publisher_packets(&mut w, 30);
        super::feed(&mut w, from, &pk);
        let c1 = w.core.counters();
        assert_eq!(c1.rx_rtp - c0.rx_rtp, 30);
        assert_eq!(c1.tx_rtp - c0.tx_rtp, 60, "each of the 30 packets goes to the 2 subscribers of its layer");
    }
}
