//! One synthetic peer: joins like a browser (REST token, WebSocket signaling, one offer,
//! answers the server's offers), publishes synthetic RTP whose payload carries a sequence
//! number and the send time, and measures what it receives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

use crate::http::{HttpError, Target};

/// What one peer does.
#[derive(Debug, Clone)]
pub struct PeerPlan {
    /// Room.
    pub room: String,
    /// Identity.
    pub identity: String,
    /// Publishes video.
    pub publish: bool,
    /// Packets per second when publishing.
    pub pps: f64,
    /// RTP payload size in bytes (at least 16).
    pub packet_size: usize,
    /// Time to send media.
    pub send_for: Duration,
    /// Time to keep receiving after sending stops.
    pub drain: Duration,
}

/// Why a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// REST API.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// WebSocket.
    #[error("signaling: {0}")]
    Ws(String),
    /// The server refused the join.
    #[error("join refused: {0}")]
    Refused(String),
    /// str0m refused an SDP.
    #[error("SDP: {0}")]
    Sdp(String),
    /// Sockets.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// What one received stream looked like.
#[derive(Debug, Default, Clone)]
pub struct StreamStats {
    /// Lowest sequence number seen.
    pub first_seq: u64,
    /// Highest sequence number seen.
    pub last_seq: u64,
    /// Packets received.
    pub received: u64,
    /// One-way latencies in microseconds (same host clock).
    pub latencies_us: Vec<u32>,
    /// RFC 3550 interarrival jitter estimate, in nanoseconds.
    pub jitter_ns: f64,
    /// Arrival and send time (ns since the epoch) of the previous packet.
    last: Option<(u64, u64)>,
}

/// What one peer measured.
#[derive(Debug, Default, Clone)]
pub struct PeerResult {
    /// Packets sent.
    pub sent: u64,
    /// Received streams by SSRC.
    pub streams: HashMap<u32, StreamStats>,
    /// From starting to join to the first received media packet.
    pub join_to_first_packet: Option<Duration>,
    /// Whether DTLS connected.
    pub connected: bool,
}

const HEADER: usize = 16;

/// Runs one peer to the end of its plan.
pub async fn run(target: Target, plan: PeerPlan, epoch: Instant) -> Result<PeerResult, PeerError> {
    let start = Instant::now();
    let token = target.token(&plan.room, &plan.identity, plan.publish).await?;
    let url = format!("wss://{}:{}/ws", target.host, target.port);
    let connector = tokio_tungstenite::Connector::Rustls(target.tls.clone());
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, false, Some(connector))
        .await
        .map_err(|e| PeerError::Ws(e.to_string()))?;
    ws.send(Message::text(serde_json::json!({ "type": "join", "token": token }).to_string())).await.map_err(|e| PeerError::Ws(e.to_string()))?;
    wait_for(&mut ws, "joined").await?;

    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let local = socket.local_addr()?;
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| PeerError::Sdp(e.to_string()))?);
    let mut api = rtc.sdp_api();
    let dir = if plan.publish { Direction::SendOnly } else { Direction::RecvOnly };
    let video = api.add_media(MediaKind::Video, dir, Some(plan.identity.clone()), None, None);
    if !plan.publish {
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    }
    let (offer, pending) = api.apply().ok_or_else(|| PeerError::Sdp("nothing to offer".into()))?;
    ws.send(Message::text(serde_json::json!({ "type": "offer", "sdp": offer.to_sdp_string() }).to_string()))
        .await
        .map_err(|e| PeerError::Ws(e.to_string()))?;
    let answer = wait_for(&mut ws, "answer").await?;
    let answer = SdpAnswer::from_sdp_string(answer["sdp"].as_str().unwrap_or_default()).map_err(|e| PeerError::Sdp(e.to_string()))?;
    rtc.sdp_api().accept_answer(pending, answer).map_err(|e| PeerError::Sdp(e.to_string()))?;

    let mut result = PeerResult::default();
    let interval = Duration::from_secs_f64(1.0 / plan.pps.max(0.1));
    let send_until = Instant::now() + plan.send_for;
    let end = send_until + plan.drain;
    let mut next_send = Instant::now();
    let mut seq: u64 = 1;
    let mut buf = vec![0u8; 2048];
    let payload_size = plan.packet_size.max(HEADER);
    loop {
        // Drain str0m's output.
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(e)) => on_event(&mut rtc, e, &mut result, epoch, start),
                Err(e) => return Err(PeerError::Sdp(e.to_string())),
            }
        };
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut wake = timeout.min(end);
        if plan.publish && result.connected && now < send_until {
            wake = wake.min(next_send);
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, from): (usize, SocketAddr) = r?;
                if let Ok(contents) = buf[..n].try_into() {
                    let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source: from, destination: local, contents });
                    let _ = rtc.handle_input(input);
                }
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                    match v["type"].as_str() {
                        Some("offer") => {
                            let offer = SdpOffer::from_sdp_string(v["sdp"].as_str().unwrap_or_default()).map_err(|e| PeerError::Sdp(e.to_string()))?;
                            let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| PeerError::Sdp(e.to_string()))?;
                            ws.send(Message::text(serde_json::json!({ "type": "answer", "sdp": answer.to_sdp_string() }).to_string()))
                                .await
                                .map_err(|e| PeerError::Ws(e.to_string()))?;
                        }
                        Some("error") => tracing::warn!(identity = %plan.identity, message = %v, "server error"),
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return Err(PeerError::Ws("signaling closed".into())),
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if plan.publish && result.connected && now >= next_send && now < send_until {
                    send_packet(&mut rtc, video, seq, payload_size, epoch, now);
                    result.sent += 1;
                    seq += 1;
                    next_send += interval;
                    if next_send < now {
                        next_send = now + interval;
                    }
                }
                let _ = rtc.handle_input(Input::Timeout(now));
            }
        }
    }
    let _ = ws.send(Message::text(r#"{"type":"leave"}"#)).await;
    Ok(result)
}

fn send_packet(rtc: &mut Rtc, mid: Mid, seq: u64, size: usize, epoch: Instant, now: Instant) {
    let Some(pt) = rtc.codec_config().find(|c| c.spec().codec == Codec::Vp8).map(|c| c.pt()) else { return };
    let mut payload = vec![0u8; size];
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    payload[8..16].copy_from_slice(&(now.duration_since(epoch).as_nanos() as u64).to_be_bytes());
    let mut api = rtc.direct_api();
    if let Some(tx) = api.stream_tx_by_mid(mid, None) {
        tx.write_rtp(RtpWrite::new(pt, seq.into(), (seq * 3000) as u32, now, payload).marker(true));
    }
}

fn on_event(_rtc: &mut Rtc, e: Event, r: &mut PeerResult, epoch: Instant, start: Instant) {
    match e {
        Event::Connected => r.connected = true,
        Event::RtpPacket(p) => {
            if p.payload.len() < HEADER {
                return;
            }
            let now = Instant::now();
            let mut b = [0u8; 8];
            b.copy_from_slice(&p.payload[..8]);
            let seq = u64::from_be_bytes(b);
            b.copy_from_slice(&p.payload[8..16]);
            let sent_ns = u64::from_be_bytes(b);
            let now_ns = now.duration_since(epoch).as_nanos() as u64;
            let s = r.streams.entry(*p.header.ssrc).or_insert_with(|| StreamStats { first_seq: seq, last_seq: seq, ..Default::default() });
            s.first_seq = s.first_seq.min(seq);
            s.last_seq = s.last_seq.max(seq);
            s.received += 1;
            if let Some((prev_arrival, prev_sent)) = s.last {
                // RFC 3550 §6.4.1: J += (|D| - J) / 16, D = (Rj - Ri) - (Sj - Si).
                let d = (now_ns as i128 - prev_arrival as i128) - (sent_ns as i128 - prev_sent as i128);
                s.jitter_ns += ((d.unsigned_abs() as f64) - s.jitter_ns) / 16.0;
            }
            s.last = Some((now_ns, sent_ns));
            s.latencies_us.push((now_ns.saturating_sub(sent_ns) / 1000).min(u32::MAX as u64) as u32);
            if r.join_to_first_packet.is_none() {
                r.join_to_first_packet = Some(now - start);
            }
        }
        _ => {}
    }
}

async fn wait_for<S>(ws: &mut S, kind: &str) -> Result<serde_json::Value, PeerError>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.map_err(|_| PeerError::Ws(format!("no {kind} in time")))?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                if v["type"] == kind {
                    return Ok(v);
                }
                if v["type"] == "error" {
                    return Err(PeerError::Refused(format!("{}: {}", v["code"], v["message"])));
                }
            }
            Some(Ok(_)) => {}
            _ => return Err(PeerError::Ws("signaling closed".into())),
        }
    }
}

