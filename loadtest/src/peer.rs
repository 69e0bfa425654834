//! One media connection: a str0m `Rtc` in RTP mode on its own UDP socket, sending synthetic
//! RTP (whole video frames, 20 ms audio) and measuring what arrives. Signaling is not here;
//! `target` sets the connection up and `run` drives it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signaling::{ClientMsg, ServerMsg};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::scenario::{Scenario, VideoCodec};
use crate::bucket::TokenBucket;
use crate::stats::{self, Counters, SentLayers, Sink, Stream, TrackRx};
use crate::view::View;
use crate::h264;
use crate::vp8::{self, Vp8Stream};

/// The WebSocket of our signaling protocol.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Signaling messages to and from a running connection. The WebSocket is read by its own
/// task, so the media loop only polls a channel (polling the socket itself on every turn
/// cost a read syscall and a buffer fill per media packet).
pub struct Signals {
    /// Messages from the server (the reader task waits while it is full, so a flooding
    /// server is slowed by TCP rather than queued for).
    pub rx: tokio::sync::mpsc::Receiver<ServerMsg>,
    /// Messages to the server.
    pub tx: tokio::sync::mpsc::Sender<ClientMsg>,
    /// The tracks a subscriber chooses to view (none: it receives everything).
    pub view: Option<View>,
}

impl Signals {
    /// Reacts to a server message other than an offer or error: subscribes to tracks the view wants.
    fn react(&mut self, msg: &ServerMsg) {
        if let ServerMsg::TrackPaused { session, track, paused } = msg {
            tracing::debug!(%session, %track, paused, "track paused by the server");
        }
        if let Some(view) = self.view.as_mut() {
            for m in view.on_message(msg) {
                self.send(m);
            }
        }
    }

    /// Queues a message for the server; when the queue is full (the server stopped reading)
    /// it is dropped and logged, never waited for.
    pub fn send(&self, msg: ClientMsg) {
        if let Err(e) = self.tx.try_send(msg) {
            tracing::debug!(error = %e, "signaling message to the server dropped");
        }
    }
}

/// Messages queued in each direction of one connection's signaling at most.
pub const SIGNAL_QUEUE: usize = 256;

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// HTTP signaling.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// WebSocket signaling.
    #[error("signaling: {0}")]
    Ws(String),
    /// The server refused.
    #[error("refused: {0}")]
    Refused(String),
    /// str0m refused an SDP.
    #[error("SDP: {0}")]
    Sdp(String),
    /// Sockets.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// State shared by all connections of one worker thread.
pub struct Ctx {
    /// Live counters of this thread.
    pub counters: Arc<Counters>,
    /// Latency, join time and stream results of this thread.
    pub sink: RefCell<Sink>,
    /// Clock origin of the payload timestamps (shared by all threads).
    pub epoch: Instant,
}

/// What a connection sends and how long it lives.
#[derive(Debug, Clone, Copy)]
pub struct Sending {
    /// Sends video.
    pub video: bool,
    /// Sends audio.
    pub audio: bool,
    /// Stop sending at.
    pub until: Instant,
    /// Stop receiving (and return) at.
    pub end: Instant,
}

/// Synthetic media parameters derived from the scenario.
#[derive(Debug, Clone, Copy)]
pub struct MediaSpec {
    /// Video codec.
    pub codec: VideoCodec,
    /// Video frames per second.
    pub fps: u32,
    /// Packets per video frame.
    pub frame_packets: u32,
    /// Bytes per video packet.
    pub video_bytes: usize,
    /// Bytes per 20 ms audio packet.
    pub audio_bytes: usize,
    /// Largest payload per packet.
    pub packet_size: usize,
    /// Send three simulcast layers (rids l, m, h at 1/16, 1/4 and all of the bitrate).
    pub simulcast: bool,
}

/// One simulcast layer of the synthetic video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// RTP stream id.
    pub rid: &'static str,
    /// Bitrate divisor relative to `video_kbps`.
    pub divisor: usize,
    /// Frame width announced in VP8 keyframes.
    pub width: u16,
    /// Frame height announced in VP8 keyframes.
    pub height: u16,
}

/// Simulcast layers, lowest first: the order of the offer's `a=simulcast` and of the layer
/// index stamped into payloads. Without simulcast only the full layer is sent.
pub const LAYERS: [Layer; 3] = [
    Layer { rid: "l", divisor: 16, width: 320, height: 180 },
    Layer { rid: "m", divisor: 4, width: 640, height: 360 },
    Layer { rid: "h", divisor: 1, width: 1280, height: 720 },
];

/// Index of the full layer in [`LAYERS`].
const FULL: usize = 2;

/// Keyframes go out at least this often (and on every PLI/FIR).
const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// The layers a publisher sends.
pub fn sent_layers(simulcast: bool) -> &'static [Layer] {
    if simulcast {
        &LAYERS
    } else {
        &LAYERS[FULL..]
    }
}

/// Report name of a stamped layer index: its rid with simulcast, "single" without.
pub fn layer_name(simulcast: bool, layer: u8) -> String {
    match LAYERS.get(usize::from(layer)) {
        Some(l) if simulcast => l.rid.to_string(),
        Some(_) if usize::from(layer) == FULL => "single".into(),
        _ => format!("layer {layer}"),
    }
}

/// The send side of a simulcast offer: rids l, m, h, lowest first (shared by every target).
pub fn simulcast_offer() -> Simulcast {
    Simulcast { send: LAYERS.iter().map(|l| SimulcastLayer::new(l.rid)).collect(), recv: Vec::new() }
}

impl MediaSpec {
    /// From a scenario.
    pub fn new(s: &Scenario) -> Self {
        let (frame_packets, video_bytes) = s.video_frame();
        Self { codec: s.codec, fps: s.fps, frame_packets, video_bytes, audio_bytes: s.audio_packet(), packet_size: s.packet_size, simulcast: s.simulcast }
    }

    /// The codec header of one video packet that the SFU's parsers accept: for VP8 a full
    /// descriptor and, at a frame start, the payload header (a keyframe announcing the layer's
    /// size); for H.264 a keyframe's first packet is a STAP-A with an SPS announcing the
    /// layer's size, and every other packet a non-IDR slice start; for VP9 a fixed
    /// delta-frame start.
    fn codec_header(&self, vp8: &Vp8Stream, layer: &Layer, frame_start: bool, keyframe: bool, frame_bytes: usize) -> [u8; vp8::HEADER_LEN] {
        let mut h = [0u8; vp8::HEADER_LEN];
        match self.codec {
            VideoCodec::Vp8 => h = vp8.header(frame_start, keyframe, frame_bytes.saturating_sub(vp8::HEADER_LEN)),
            VideoCodec::H264 if frame_start && keyframe => {
                let start = h264::keyframe_start(layer.width, layer.height);
                let n = start.len().min(h.len());
                h[..n].copy_from_slice(&start[..n]);
            }
            VideoCodec::H264 => h[..2].copy_from_slice(&h264::DELTA_START),
            VideoCodec::Vp9 => h[0] = 0x0c,
        }
        h
    }

    /// (packets, bytes per packet) of one frame of a layer.
    fn layer_frame(&self, divisor: usize) -> (u32, usize) {
        if divisor == 1 {
            return (self.frame_packets, self.video_bytes);
        }
        let bytes = (self.frame_packets as usize * self.video_bytes / divisor).max(crate::scenario::PAYLOAD_HEADER);
        let packets = bytes.div_ceil(self.packet_size).max(1);
        (packets as u32, (bytes / packets).max(crate::scenario::PAYLOAD_HEADER))
    }

    fn str0m_codec(&self) -> Codec {
        match self.codec {
            VideoCodec::Vp8 => Codec::Vp8,
            VideoCodec::H264 => Codec::H264,
            VideoCodec::Vp9 => Codec::Vp9,
        }
    }
}

/// A media connection before and while it runs.
pub struct Conn {
    /// The str0m instance.
    pub rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    video: Option<Mid>,
    audio: Option<Mid>,
    spec: MediaSpec,
    /// The participant this connection belongs to (names it in the report).
    label: Rc<str>,
    /// Unique number of this connection in the process (stamped into what it sends).
    serial: u64,
    /// Receive-side bandwidth cap, shared by a participant's connections.
    cap: Option<Rc<RefCell<TokenBucket>>>,
}

impl Conn {
    /// A new connection of participant `label` with a host candidate on `ip`.
    pub async fn new(ip: IpAddr, spec: MediaSpec, label: Rc<str>) -> Result<Self, PeerError> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        // Room for bursts while this thread serves other connections.
        percore::batch::set_buffers(&socket, 1 << 20);
        let local = socket.local_addr()?;
        let cfg = Rtc::builder().set_rtp_mode(true).clear_codecs().enable_opus(true, false);
        let cfg = match spec.codec {
            VideoCodec::Vp8 => cfg.enable_vp8(true),
            VideoCodec::H264 => cfg.enable_h264(true),
            VideoCodec::Vp9 => cfg.enable_vp9(true),
        };
        let mut rtc = cfg.build(Instant::now());
        let cand = Candidate::host(local, "udp").map_err(|e| PeerError::Sdp(e.to_string()))?;
        rtc.add_local_candidate(cand);
        Ok(Self { rtc, socket, local, video: None, audio: None, spec, label, serial: next_serial(), cap: None })
    }

    /// Drops received datagrams beyond what `cap` lets through, before str0m sees them.
    pub fn set_cap(&mut self, cap: Rc<RefCell<TokenBucket>>) {
        self.cap = Some(cap);
    }

    /// Makes an offer that sends what `send` says and receives `recv_video`/`recv_audio` tracks.
    pub fn offer(&mut self, name: &str, send: Sending, recv_video: usize, recv_audio: usize) -> Result<(String, SdpPendingOffer), PeerError> {
        let mut api = self.rtc.sdp_api();
        if send.video {
            let simulcast = self.spec.simulcast.then(simulcast_offer);
            self.video = Some(api.add_media(MediaKind::Video, Direction::SendOnly, Some(name.into()), None, simulcast));
        }
        if send.audio {
            self.audio = Some(api.add_media(MediaKind::Audio, Direction::SendOnly, Some(name.into()), None, None));
        }
        for _ in 0..recv_video {
            api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        }
        for _ in 0..recv_audio {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = api.apply().ok_or_else(|| PeerError::Sdp("nothing to offer".into()))?;
        Ok((offer.to_sdp_string(), pending))
    }

    /// Applies the answer to our offer.
    pub fn accept_answer(&mut self, pending: SdpPendingOffer, sdp: &str) -> Result<(), PeerError> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
        self.rtc.sdp_api().accept_answer(pending, answer).map_err(|e| PeerError::Sdp(e.to_string()))
    }

    /// Answers a remote offer.
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, PeerError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
        let answer = self.rtc.sdp_api().accept_offer(offer).map_err(|e| PeerError::Sdp(e.to_string()))?;
        Ok(answer.to_sdp_string())
    }

    fn pt(&self, codec: Codec) -> Option<Pt> {
        self.rtc.codec_config().find(|c| c.spec().codec == codec).map(|c| c.pt())
    }

    /// Runs until `send.end`: sends media once connected, answers offers arriving on `ws`
    /// (our signaling), and records every received packet into `ctx`.
    pub async fn run(mut self, send: Sending, mut signals: Option<&mut Signals>, ctx: &Ctx, join_start: Instant) -> Result<(), PeerError> {
        let layers = sent_layers(self.spec.simulcast);
        // Layer indices as stamped: positions in LAYERS.
        let first_layer = LAYERS.len() - layers.len();
        let mut st = RunState {
            connected: false,
            first_packet: false,
            streams: HashMap::new(),
            tracks: HashMap::new(),
            join_start,
            keyframe_wanted: [true; LAYERS.len()],
            receiver: self.label.clone(),
            codec: self.spec.codec,
            serial: self.serial,
        };
        let mut buf = vec![0u8; 2048];
        let frame_gap = Duration::from_secs_f64(1.0 / self.spec.fps as f64);
        let audio_gap = Duration::from_millis(20);
        let mut next_video = Instant::now();
        let mut next_audio = Instant::now();
        let (mut video_seq, mut audio_seq, mut rtp_seq_a) = (0u64, 0u64, 0u64);
        // Per layer (index into LAYERS): RTP and stamp sequence numbers, VP8 descriptor state,
        // packets sent.
        let mut rtp_seq_v = [0u64; LAYERS.len()];
        let mut vp8_state = LAYERS.map(|l| Vp8Stream::random(l.width, l.height));
        let mut sent_by_layer = [0u64; LAYERS.len()];
        let mut last_keyframe = Instant::now();
        let video_pt = self.pt(self.spec.str0m_codec());
        let audio_pt = self.pt(Codec::Opus);
        let source = self.serial as u32;
        let mut sleep = pin!(tokio::time::sleep_until(Instant::now().into()));
        // Deadline the sleep is armed for; `None` once it has fired.
        let mut armed: Option<Instant> = None;
        let result = loop {
            let timeout = match self.drain(ctx, &mut st).await {
                Ok(t) => t,
                Err(e) => break Err(e),
            };
            let now = Instant::now();
            if now >= send.end {
                break Ok(());
            }
            let mut wake = timeout.min(send.end);
            let sending = st.connected && now < send.until;
            if sending && send.video {
                wake = wake.min(next_video);
            }
            if sending && send.audio {
                wake = wake.min(next_audio);
            }
            if armed != Some(wake) {
                sleep.as_mut().reset(wake.into());
                armed = Some(wake);
            }
            tokio::select! {
                r = self.socket.readable() => {
                    r?;
                    // Drain the socket: one wake-up per burst, not per packet.
                    loop {
                        match self.socket.try_recv_from(&mut buf) {
                            Ok((n, source)) => {
                                let now = Instant::now();
                                // The bandwidth cap drops what exceeds it before str0m sees it.
                                if self.cap.as_ref().is_some_and(|c| !c.borrow_mut().admit(now, n)) {
                                    continue;
                                }
                                if let Ok(contents) = buf[..n].try_into() {
                                    let input = Input::Receive(now, Receive { proto: Protocol::Udp, source, destination: self.local, contents });
                                    let _ = self.rtc.handle_input(input);
                                    self.drain(ctx, &mut st).await?;
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                m = next_signal(&mut signals) => match m {
                    Some(ServerMsg::Offer { sdp }) => {
                        let answer = self.accept_offer(&sdp)?;
                        if let Some(sig) = signals.as_mut() {
                            sig.send(ClientMsg::Answer { sdp: answer });
                        }
                    }
                    Some(ServerMsg::Error { code, message }) => tracing::warn!(%code, %message, "server error"),
                    Some(other) => {
                        if let Some(sig) = signals.as_mut() {
                            sig.react(&other);
                        }
                    }
                    None => break Err(PeerError::Ws("signaling closed".into())),
                },
                _ = &mut sleep => {
                    let now = Instant::now();
                    armed = None;
                    if st.connected && now < send.until {
                        if let (true, Some(mid), Some(pt)) = (send.video && now >= next_video, self.video, video_pt) {
                            let ts = (video_seq * 90_000 / self.spec.fps as u64) as u32;
                            // Keyframes: on request (PLI/FIR, per layer) and on every layer every second.
                            let periodic = now.duration_since(last_keyframe) >= KEYFRAME_INTERVAL;
                            if periodic {
                                last_keyframe = now;
                            }
                            let mut sent = 0;
                            for (i, layer) in layers.iter().enumerate() {
                                let index = first_layer + i;
                                let keyframe = periodic || st.keyframe_wanted[index];
                                st.keyframe_wanted[index] = false;
                                let (packets, bytes) = self.spec.layer_frame(layer.divisor);
                                let frame_bytes = packets as usize * bytes;
                                let rid = self.spec.simulcast.then(|| Rid::from(layer.rid));
                                for p in 0..packets {
                                    rtp_seq_v[index] += 1;
                                    let header = self.spec.codec_header(&vp8_state[index], layer, p == 0, keyframe, frame_bytes);
                                    let prefix = stats::prefix(&header, source, index as u8);
                                    let payload = synth(bytes, &prefix, rtp_seq_v[index], ctx.epoch, now);
                                    if let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(mid, rid) {
                                        tx.write_rtp(RtpWrite::new(pt, rtp_seq_v[index].into(), ts, now, payload).marker(p + 1 == packets));
                                    }
                                    self.drain(ctx, &mut st).await?;
                                }
                                vp8_state[index].next_frame();
                                sent_by_layer[index] += packets as u64;
                                sent += packets as u64;
                            }
                            Counters::bump(&ctx.counters.sent, sent);
                            video_seq += 1;
                            next_video = if next_video + frame_gap < now { now + frame_gap } else { next_video + frame_gap };
                        }
                        if let (true, Some(mid), Some(pt)) = (send.audio && now >= next_audio, self.audio, audio_pt) {
                            rtp_seq_a += 1;
                            let prefix = stats::prefix(&[0xfc, 0xff, 0xfe], source, stats::AUDIO_LAYER);
                            let payload = synth(self.spec.audio_bytes, &prefix, rtp_seq_a, ctx.epoch, now);
                            if let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(mid, None) {
                                tx.write_rtp(RtpWrite::new(pt, rtp_seq_a.into(), (audio_seq * 960) as u32, now, payload).marker(audio_seq == 0));
                            }
                            Counters::bump(&ctx.counters.sent, 1);
                            audio_seq += 1;
                            next_audio = if next_audio + audio_gap < now { now + audio_gap } else { next_audio + audio_gap };
                        }
                    }
                    let _ = self.rtc.handle_input(Input::Timeout(now));
                }
            }
        };
        {
            let mut sink = ctx.sink.borrow_mut();
            sink.streams.extend(st.streams.into_values());
            sink.tracks.extend(st.tracks.into_values());
            if send.video {
                let by_layer = sent_by_layer.iter().enumerate().filter(|(_, n)| **n > 0).map(|(l, n)| (l as u8, *n)).collect();
                sink.sent.push(SentLayers { publisher: self.label.to_string(), source, by_layer });
            }
        }
        if !st.connected {
            Counters::bump(&ctx.counters.failed, 1);
            if result.is_ok() {
                return Err(PeerError::Refused("never connected".into()));
            }
        }
        result
    }

    /// Handles str0m's output until it asks for time; returns that deadline.
    async fn drain(&mut self, ctx: &Ctx, st: &mut RunState) -> Result<Instant, PeerError> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Ok(t),
                Ok(Output::Transmit(t)) => match self.socket.try_send_to(&t.contents, t.destination) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        let _ = self.socket.send_to(&t.contents, t.destination).await;
                    }
                    _ => {}
                },
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        st.connected = true;
                        Counters::bump(&ctx.counters.connected, 1);
                    }
                    Event::KeyframeRequest(r) => match r.rid.and_then(|rid| LAYERS.iter().position(|l| *rid == *l.rid)) {
                        Some(i) => st.keyframe_wanted[i] = true,
                        None => st.keyframe_wanted = [true; LAYERS.len()],
                    },
                    Event::RtpPacket(p) => {
                        let Some(stamp) = stats::read_stamp(&p.payload) else { continue };
                        let now = Instant::now();
                        let now_ns = stats::ns_since(ctx.epoch, now);
                        let mut sink = ctx.sink.borrow_mut();
                        if !st.first_packet {
                            st.first_packet = true;
                            let _ = sink.join.record((now - st.join_start).as_micros().max(1) as u64);
                        }
                        let ssrc = *p.header.ssrc;
                        let key = (st.serial << 32) | ssrc as u64;
                        let stream = st.streams.entry((ssrc, stamp.layer)).or_insert_with(|| Stream::new(key, stamp.seq, now_ns, stamp.sent_ns));
                        let lost = sink.record(stream, stamp.seq, stamp.sent_ns, now_ns);
                        if stamp.layer != stats::AUDIO_LAYER {
                            let keyframe = match st.codec {
                                VideoCodec::Vp8 => vp8::keyframe_size(&p.payload),
                                VideoCodec::H264 => h264::keyframe_size(&p.payload),
                                VideoCodec::Vp9 => None,
                            };
                            let receiver = &st.receiver;
                            let track = st.tracks.entry((stamp.source, ssrc)).or_insert_with(|| TrackRx::new(receiver, stamp.source, ssrc));
                            track.record(p.payload.len(), keyframe, stamp.layer);
                            if track.frames.packet(*p.seq_no, p.header.marker) {
                                Counters::bump(&ctx.counters.frames, 1);
                            }
                        }
                        let c = &ctx.counters;
                        Counters::bump(&c.received, 1);
                        Counters::bump(&c.bytes, p.payload.len() as u64);
                        if lost > 0 {
                            Counters::bump(&c.lost, lost as u64);
                        }
                    }
                    _ => {}
                },
                Err(e) => return Err(PeerError::Sdp(e.to_string())),
            }
        }
    }
}

struct RunState {
    connected: bool,
    first_packet: bool,
    /// Received streams by (SSRC, simulcast layer).
    streams: HashMap<(u32, u8), Stream>,
    /// Received video by (publishing connection, SSRC).
    tracks: HashMap<(u32, u32), TrackRx>,
    join_start: Instant,
    /// Per layer: a keyframe was asked for (PLI/FIR) or none was sent yet.
    keyframe_wanted: [bool; LAYERS.len()],
    /// The participant receiving.
    receiver: Rc<str>,
    /// Video codec (VP8 keyframes announce their size).
    codec: VideoCodec,
    /// Unique number of this connection in the process.
    serial: u64,
}

fn next_serial() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

fn synth(size: usize, prefix: &[u8; stats::PREFIX], seq: u64, epoch: Instant, now: Instant) -> Vec<u8> {
    let mut payload = vec![0u8; size];
    stats::stamp(&mut payload, prefix, seq, stats::ns_since(epoch, now));
    payload
}

async fn next_signal(s: &mut Option<&mut Signals>) -> Option<ServerMsg> {
    match s {
        Some(s) => s.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The local address the kernel would use to reach `host:port` (so candidates are reachable).
pub fn local_ip_for(host: &str, port: u16) -> std::io::Result<IpAddr> {
    let target = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
        .next()
        .ok_or_else(|| std::io::Error::new(ErrorKind::NotFound, format!("{host} does not resolve")))?;
    let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    let s = std::net::UdpSocket::bind(bind)?;
    s.connect(target)?;
    Ok(s.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_payloads_carry_a_vp8_header_and_the_stamp() {
        let spec = MediaSpec::new(&Scenario { simulcast: true, ..Default::default() });
        let epoch = Instant::now();
        let low = LAYERS[0];
        let vp8 = Vp8Stream::new(low.width, low.height, 300, 9);
        let (packets, bytes) = spec.layer_frame(low.divisor);
        let first = synth(bytes, &stats::prefix(&spec.codec_header(&vp8, &low, true, true, packets as usize * bytes), 42, 0), 5, epoch, epoch);
        assert!(str0m::format::detect_vp8_keyframe(&first));
        assert_eq!(vp8::keyframe_size(&first), Some((320, 180)));
        assert_eq!(str0m::rtp::Vp8Descriptor::parse(&first).ok().and_then(|d| d.picture_id()), Some(300));
        assert_eq!(stats::read_stamp(&first), Some(stats::Stamp { seq: 5, sent_ns: 0, source: 42, layer: 0 }));
        let delta = synth(bytes, &stats::prefix(&spec.codec_header(&vp8, &low, true, false, bytes), 42, 0), 6, epoch, epoch);
        assert!(!str0m::format::detect_vp8_keyframe(&delta));
        assert_eq!(stats::read_stamp(&delta).map(|s| s.seq), Some(6));
    }

    #[test]
    fn h264_keyframes_start_with_an_sps_of_the_layer_size_before_the_stamp() {
        let spec = MediaSpec::new(&Scenario { simulcast: true, codec: VideoCodec::H264, ..Default::default() });
        let epoch = Instant::now();
        let vp8 = Vp8Stream::new(0, 0, 0, 0);
        for layer in LAYERS {
            let (packets, bytes) = spec.layer_frame(layer.divisor);
            let first = synth(bytes, &stats::prefix(&spec.codec_header(&vp8, &layer, true, true, packets as usize * bytes), 42, 1), 5, epoch, epoch);
            assert!(str0m::format::detect_h264_nalu(&first, 7), "an SPS");
            assert_eq!(h264::keyframe_size(&first), Some((layer.width, layer.height)));
            assert_eq!(stats::read_stamp(&first).map(|s| (s.seq, s.layer)), Some((5, 1)));
            let next = spec.codec_header(&vp8, &layer, false, true, bytes);
            assert_eq!(h264::keyframe_size(&next), None, "only the keyframe's first packet");
        }
    }

    #[test]
    fn layers_are_offered_lowest_first() {
        let rids: Vec<String> = simulcast_offer().send.iter().map(|l| l.rid.to_string()).collect();
        assert_eq!(rids, ["l", "m", "h"]);
        assert_eq!(sent_layers(false), &LAYERS[FULL..]);
        assert_eq!((sent_layers(false)[0].width, sent_layers(false)[0].height), (1280, 720));
        assert_eq!(layer_name(true, 0), "l");
        assert_eq!(layer_name(false, FULL as u8), "single");
        assert_eq!(layer_name(true, 7), "layer 7");
    }
}
