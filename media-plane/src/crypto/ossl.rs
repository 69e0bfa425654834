//! DTLS 1.2 for str0m on OpenSSL: the handshake runs in an `SslStream` over an in-memory
//! datagram queue, and its results (the peer's certificate, the SRTP keys, application data)
//! come out as str0m's `DtlsOutput`s. str0m checks the peer's certificate against the SDP
//! fingerprint, so OpenSSL accepts any certificate here, RSA or ECDSA. Our own certificate is
//! ECDSA P-256.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use dimpl::{CryptoError as ImplCryptoError, CryptoOperation};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::srtp::SrtpProfileId;
use openssl::ssl::{ErrorCode, HandshakeError, MidHandshakeSslStream, Ssl, SslContext, SslMethod, SslOptions, SslStream, SslVerifyMode};
use openssl::x509::{X509NameBuilder, X509};
use str0m::crypto::dtls::{DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, KeyingMaterial, ProtocolVersion, SrtpProfile};
use str0m::crypto::CryptoError;

/// RFC 5764 §4.2: the exporter label of DTLS-SRTP keys.
const SRTP_LABEL: &str = "EXTRACTOR-dtls_srtp";
/// SRTP profiles we offer or accept, best first.
const SRTP_PROFILES: &str = "SRTP_AEAD_AES_128_GCM:SRTP_AEAD_AES_256_GCM:SRTP_AES128_CM_SHA1_80";
/// ECDHE suites only (forward secrecy), with either kind of certificate on the other side.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA";
/// How often a handshake in flight is driven, so that OpenSSL retransmits a lost flight.
const HANDSHAKE_TICK: Duration = Duration::from_millis(100);
/// Datagrams that may wait for OpenSSL in either direction; a flood beyond is refused.
const MAX_QUEUED: usize = 64;
/// Largest datagram handled.
const MAX_DATAGRAM: usize = 2048;

/// The DTLS part of the media plane's crypto provider.
#[derive(Debug)]
pub struct OsslDtlsProvider;

impl DtlsProvider for OsslDtlsProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        match self_signed() {
            Ok(cert) => Some(cert),
            Err(e) => {
                tracing::error!(error = %e, "DTLS certificate generation failed");
                None
            }
        }
    }

    fn new_dtls(&self, cert: &DtlsCert, now: Instant, _version: DtlsVersion, mtu: Option<usize>) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        // OpenSSL 3.0 speaks DTLS 1.2 only; a peer offering 1.3 falls back to it.
        Ok(Box::new(OsslDtls::new(cert, now, mtu)?))
    }
}

/// A self-signed ECDSA P-256 certificate, valid for 30 days (each session makes its own).
fn self_signed() -> Result<DtlsCert, openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "media-plane")?;
    let name = name.build();
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let mut x = X509::builder()?;
    x.set_version(2)?;
    let serial = serial.to_asn1_integer()?;
    x.set_serial_number(&serial)?;
    x.set_subject_name(&name)?;
    x.set_issuer_name(&name)?;
    x.set_pubkey(&key)?;
    let (from, until) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(30)?);
    x.set_not_before(&from)?;
    x.set_not_after(&until)?;
    x.sign(&key, MessageDigest::sha256())?;
    Ok(DtlsCert { certificate: x.build().to_der()?, private_key: key.private_key_to_der()? })
}

fn new_ssl(cert: &DtlsCert, mtu: Option<usize>) -> Result<Ssl, openssl::error::ErrorStack> {
    let mut ctx = SslContext::builder(SslMethod::dtls())?;
    ctx.set_cipher_list(CIPHERS)?;
    ctx.set_tlsext_use_srtp(SRTP_PROFILES)?;
    // Ask for the peer's certificate and take any: str0m compares it with the fingerprint.
    ctx.set_verify_callback(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT, |_, _| true);
    let (x509, key) = (X509::from_der(&cert.certificate)?, PKey::private_key_from_der(&cert.private_key)?);
    ctx.set_certificate(&x509)?;
    ctx.set_private_key(&key)?;
    ctx.set_options(SslOptions::NO_DTLSV1 | SslOptions::NO_QUERY_MTU | SslOptions::NO_RENEGOTIATION);
    let mut ssl = Ssl::new(&ctx.build())?;
    if let Some(mtu) = mtu {
        ssl.set_mtu(mtu as u32)?;
    }
    Ok(ssl)
}

/// Datagrams between str0m and OpenSSL: one `read` is one received datagram, one `write`
/// one datagram to send.
#[derive(Debug, Default)]
struct Wire {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(d) = self.incoming.pop_front() else { return Err(io::ErrorKind::WouldBlock.into()) };
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.outgoing.len() >= MAX_QUEUED {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the handshake is. `Start` holds the `Ssl` until the role is known.
enum State {
    Start(Option<Ssl>),
    Mid(MidHandshakeSslStream<Wire>),
    Done(SslStream<Wire>),
    Failed,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Start(_) => "Start",
            State::Mid(_) => "Mid",
            State::Done(_) => "Done",
            State::Failed => "Failed",
        })
    }
}

/// What the instance has to tell str0m, in order.
#[derive(Debug)]
enum Event {
    PeerCert(Vec<u8>),
    Keys(KeyingMaterial, SrtpProfile),
    Connected,
    Data(Vec<u8>),
    CloseNotify,
}

/// One session's DTLS.
#[derive(Debug)]
struct OsslDtls {
    state: State,
    active: Option<bool>,
    /// Datagrams in and out while the `Ssl` does not hold the wire yet (`Start`).
    wire: Wire,
    events: VecDeque<Event>,
    /// Application data written before the handshake completed.
    early: VecDeque<Vec<u8>>,
    now: Instant,
    closing: bool,
}

fn failed(op: CryptoOperation) -> DtlsImplError {
    DtlsImplError::CryptoError(ImplCryptoError::OperationFailed(op))
}

fn srtp_profile(id: SrtpProfileId) -> Option<SrtpProfile> {
    match id {
        SrtpProfileId::SRTP_AES128_CM_SHA1_80 => Some(SrtpProfile::AES128_CM_SHA1_80),
        SrtpProfileId::SRTP_AEAD_AES_128_GCM => Some(SrtpProfile::AEAD_AES_128_GCM),
        SrtpProfileId::SRTP_AEAD_AES_256_GCM => Some(SrtpProfile::AEAD_AES_256_GCM),
        _ => None,
    }
}

impl OsslDtls {
    fn new(cert: &DtlsCert, now: Instant, mtu: Option<usize>) -> Result<Self, CryptoError> {
        let ssl = new_ssl(cert, mtu).map_err(|e| CryptoError::Other(format!("DTLS setup: {e}")))?;
        Ok(OsslDtls { state: State::Start(Some(ssl)), active: None, wire: Wire::default(), events: VecDeque::new(), early: VecDeque::new(), now, closing: false })
    }

    fn wire(&mut self) -> Option<&mut Wire> {
        match &mut self.state {
            State::Start(_) | State::Failed => Some(&mut self.wire),
            State::Mid(m) => Some(m.get_mut()),
            State::Done(s) => Some(s.get_mut()),
        }
    }

    /// Runs the handshake as far as the queued datagrams take it.
    fn advance(&mut self) -> Result<(), DtlsImplError> {
        let Some(active) = self.active else { return Ok(()) };
        let result = match std::mem::replace(&mut self.state, State::Failed) {
            State::Start(Some(ssl)) => {
                let wire = std::mem::take(&mut self.wire);
                if active {
                    ssl.connect(wire)
                } else {
                    ssl.accept(wire)
                }
            }
            State::Mid(mid) => mid.handshake(),
            other => {
                self.state = other;
                return Ok(());
            }
        };
        match result {
            Ok(stream) => self.established(stream),
            Err(HandshakeError::WouldBlock(mid)) => {
                self.state = State::Mid(mid);
                Ok(())
            }
            Err(HandshakeError::Failure(mut mid)) => {
                tracing::debug!(error = %mid.error(), "DTLS handshake failed");
                // The alert OpenSSL wrote still goes out.
                self.wire = std::mem::take(mid.get_mut());
                Err(failed(CryptoOperation::CompleteKeyExchange))
            }
            Err(HandshakeError::SetupFailure(e)) => {
                tracing::debug!(error = %e, "DTLS setup failed");
                Err(failed(CryptoOperation::StartKeyExchange))
            }
        }
    }

    /// The handshake completed: the peer's certificate, the SRTP keys, then "connected".
    fn established(&mut self, mut stream: SslStream<Wire>) -> Result<(), DtlsImplError> {
        let ssl = stream.ssl();
        let cert = ssl.peer_certificate().and_then(|c| c.to_der().ok());
        let profile = ssl.selected_srtp_profile().and_then(|p| srtp_profile(p.id()));
        let (Some(cert), Some(profile)) = (cert, profile) else {
            self.wire = std::mem::take(stream.get_mut());
            return Err(failed(CryptoOperation::CompleteKeyExchange));
        };
        let mut keys = vec![0u8; profile.keying_material_len()];
        if ssl.export_keying_material(&mut keys, SRTP_LABEL, None).is_err() {
            self.wire = std::mem::take(stream.get_mut());
            return Err(failed(CryptoOperation::Prf));
        }
        self.events.push_back(Event::PeerCert(cert));
        self.events.push_back(Event::Keys(KeyingMaterial::new(&keys), profile));
        self.events.push_back(Event::Connected);
        while let Some(data) = self.early.pop_front() {
            if let Err(e) = stream.ssl_write(&data) {
                tracing::debug!(error = %e, "DTLS early application data dropped");
            }
        }
        self.state = State::Done(stream);
        self.read_all()
    }

    /// Reads every application record that arrived.
    fn read_all(&mut self) -> Result<(), DtlsImplError> {
        let State::Done(stream) = &mut self.state else { return Ok(()) };
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            match stream.ssl_read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => self.events.push_back(Event::Data(buf[..n].to_vec())),
                Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => return Ok(()),
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    self.events.push_back(Event::CloseNotify);
                    return Ok(());
                }
                Err(e) => {
                    // A record that fails to decrypt is dropped, as DTLS does (RFC 6347 §4.1.2.7).
                    tracing::debug!(error = %e, "DTLS record dropped");
                    if stream.get_ref().incoming.is_empty() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

impl DtlsInstance for OsslDtls {
    fn set_active(&mut self, active: bool) {
        if self.active.is_some() {
            return;
        }
        self.active = Some(active);
        if let Err(e) = self.advance() {
            tracing::debug!(error = %e, "DTLS start failed");
        }
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        if matches!(self.state, State::Failed) && self.active.is_some() {
            return Err(DtlsImplError::ConnectionClosed);
        }
        // An empty read would tell OpenSSL the transport ended.
        if packet.is_empty() || packet.len() > MAX_DATAGRAM {
            return Ok(());
        }
        let Some(wire) = self.wire() else { return Ok(()) };
        if wire.incoming.len() >= MAX_QUEUED {
            return Err(DtlsImplError::ReceiveQueueFull);
        }
        wire.incoming.push_back(packet.to_vec());
        match self.state {
            State::Done(_) => self.read_all(),
            _ => self.advance(),
        }
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        if let Some(wire) = self.wire() {
            if let Some(d) = wire.outgoing.front() {
                if d.len() > buf.len() {
                    return DtlsOutput::BufferTooSmall { needed: d.len() };
                }
                let n = d.len();
                buf[..n].copy_from_slice(d);
                wire.outgoing.pop_front();
                return DtlsOutput::Packet(&buf[..n]);
            }
        }
        match self.events.pop_front() {
            Some(Event::PeerCert(der)) if der.len() > buf.len() => {
                let needed = der.len();
                self.events.push_front(Event::PeerCert(der));
                DtlsOutput::BufferTooSmall { needed }
            }
            Some(Event::PeerCert(der)) => {
                buf[..der.len()].copy_from_slice(&der);
                DtlsOutput::PeerCert(&buf[..der.len()])
            }
            Some(Event::Keys(keys, profile)) => DtlsOutput::KeyingMaterial(keys, profile),
            Some(Event::Connected) => DtlsOutput::Connected,
            Some(Event::Data(d)) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                DtlsOutput::ApplicationData(&buf[..n])
            }
            Some(Event::CloseNotify) => DtlsOutput::CloseNotify,
            None => match self.state {
                State::Start(_) | State::Mid(_) if self.active.is_some() => DtlsOutput::Timeout(self.now + HANDSHAKE_TICK),
                _ => DtlsOutput::Timeout(self.now + Duration::from_secs(3600)),
            },
        }
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.now = now;
        // Driving a handshake in flight lets OpenSSL retransmit when its own timer expired.
        match self.state {
            State::Start(_) | State::Mid(_) => self.advance(),
            _ => Ok(()),
        }
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        if data.is_empty() {
            return Ok(0);
        }
        match &mut self.state {
            State::Done(stream) => match stream.ssl_write(data) {
                Ok(n) => Ok(n),
                Err(e) if e.code() == ErrorCode::WANT_WRITE => Ok(0),
                Err(_) => Err(failed(CryptoOperation::Encrypt)),
            },
            State::Failed => Err(DtlsImplError::ConnectionClosed),
            _ if self.early.len() >= MAX_QUEUED => Ok(0),
            _ => {
                self.early.push_back(data.to_vec());
                Ok(data.len())
            }
        }
    }

    fn is_active(&self) -> bool {
        self.active.unwrap_or(false)
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        matches!(self.state, State::Done(_)).then_some(ProtocolVersion::DTLS1_2)
    }

    fn is_closing(&self) -> bool {
        self.closing && !self.is_closed()
    }

    fn is_closed(&self) -> bool {
        self.closing && !matches!(&self.state, State::Done(s) if !s.get_ref().outgoing.is_empty())
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.closing = true;
        if let State::Done(stream) = &mut self.state {
            let _ = stream.shutdown();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;

    fn rsa_cert() -> DtlsCert {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "gstreamer").unwrap();
        let name = name.build();
        let mut x = X509::builder().unwrap();
        x.set_version(2).unwrap();
        x.set_subject_name(&name).unwrap();
        x.set_issuer_name(&name).unwrap();
        x.set_pubkey(&key).unwrap();
        x.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        x.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
        x.sign(&key, MessageDigest::sha256()).unwrap();
        DtlsCert { certificate: x.build().to_der().unwrap(), private_key: key.private_key_to_der().unwrap() }
    }

    /// What one side said: the peer certificate, the keys and profile, connected, data.
    #[derive(Default, Debug)]
    struct Heard {
        cert: Option<Vec<u8>>,
        keys: Option<(Vec<u8>, SrtpProfile)>,
        connected: bool,
        data: Vec<Vec<u8>>,
    }

    /// Polls `from` dry: its datagrams go to `to`, what it says goes to `heard`. Whether any
    /// datagram moved.
    fn pump(from: &mut dyn DtlsInstance, to: &mut dyn DtlsInstance, heard: &mut Heard) -> bool {
        let mut buf = vec![0u8; 4096];
        let mut moved = false;
        loop {
            match from.poll_output(&mut buf) {
                DtlsOutput::Packet(p) => {
                    let p = p.to_vec();
                    let _ = to.handle_packet(&p);
                    moved = true;
                }
                DtlsOutput::PeerCert(c) => heard.cert = Some(c.to_vec()),
                DtlsOutput::KeyingMaterial(k, p) => heard.keys = Some((k.to_vec(), p)),
                DtlsOutput::Connected => heard.connected = true,
                DtlsOutput::ApplicationData(d) => heard.data.push(d.to_vec()),
                _ => return moved,
            }
        }
    }

    /// Moves datagrams both ways until neither side has anything left to say.
    fn exchange(a: &mut dyn DtlsInstance, b: &mut dyn DtlsInstance, ha: &mut Heard, hb: &mut Heard) {
        for _ in 0..50 {
            let moved_a = pump(a, b, ha);
            let moved_b = pump(b, a, hb);
            if !moved_a && !moved_b {
                return;
            }
        }
    }

    fn handshake(client_cert: &DtlsCert) -> (Heard, Heard, Box<dyn DtlsInstance>, Box<dyn DtlsInstance>, DtlsCert) {
        let now = Instant::now();
        let server_cert = OsslDtlsProvider.generate_certificate().unwrap();
        let mut server = OsslDtlsProvider.new_dtls(&server_cert, now, DtlsVersion::Dtls12, Some(1150)).unwrap();
        let mut client = OsslDtlsProvider.new_dtls(client_cert, now, DtlsVersion::Dtls12, Some(1150)).unwrap();
        server.set_active(false);
        client.set_active(true);
        let (mut hc, mut hs) = (Heard::default(), Heard::default());
        exchange(client.as_mut(), server.as_mut(), &mut hc, &mut hs);
        (hc, hs, client, server, server_cert)
    }

    #[test]
    fn an_rsa_client_and_our_ecdsa_server_agree_on_srtp_keys() {
        let client_cert = rsa_cert();
        let (hc, hs, _, _, server_cert) = handshake(&client_cert);
        assert!(hc.connected && hs.connected, "client {hc:?} server {hs:?}");
        assert_eq!(hs.cert.as_deref(), Some(client_cert.certificate.as_slice()), "the server sees the RSA certificate");
        assert_eq!(hc.cert.as_deref(), Some(server_cert.certificate.as_slice()));
        let (kc, pc) = hc.keys.unwrap();
        let (ks, ps) = hs.keys.unwrap();
        assert_eq!(pc, ps);
        assert_eq!(pc, SrtpProfile::AEAD_AES_128_GCM);
        assert_eq!(kc, ks, "both ends export the same keying material");
        assert_eq!(kc.len(), pc.keying_material_len());
    }

    #[test]
    fn application_data_flows_both_ways_once_connected() {
        let cert = OsslDtlsProvider.generate_certificate().unwrap();
        let (mut hc, mut hs, mut client, mut server, _) = handshake(&cert);
        assert!(hc.connected && hs.connected);
        assert_eq!(client.send_application_data(b"to the server").unwrap(), 13);
        assert_eq!(server.send_application_data(b"to the client").unwrap(), 13);
        exchange(client.as_mut(), server.as_mut(), &mut hc, &mut hs);
        assert_eq!(hs.data, vec![b"to the server".to_vec()]);
        assert_eq!(hc.data, vec![b"to the client".to_vec()]);
        assert_eq!(client.protocol_version(), Some(ProtocolVersion::DTLS1_2));
    }

    #[test]
    fn junk_before_the_handshake_is_dropped_and_a_flood_stays_bounded() {
        let now = Instant::now();
        let cert = OsslDtlsProvider.generate_certificate().unwrap();
        let mut server = OsslDtls::new(&cert, now, Some(1150)).unwrap();
        server.set_active(false);
        for i in 0..100u32 {
            let junk: Vec<u8> = (0..(i * 3 % 300)).map(|j| (j * 7 + i) as u8).collect();
            let _ = server.handle_packet(&junk);
        }
        // A flood that OpenSSL is never given the chance to read stays within the bound.
        let mut idle = OsslDtls::new(&cert, now, Some(1150)).unwrap();
        for _ in 0..1000 {
            let _ = idle.handle_packet(&[22, 254, 253, 0, 0]);
        }
        assert!(idle.wire.incoming.len() <= MAX_QUEUED);
        // The junk did not spoil the server: a real client still connects.
        let client_cert = rsa_cert();
        let mut client = OsslDtls::new(&client_cert, now, Some(1150)).unwrap();
        client.set_active(true);
        let (mut hc, mut hs) = (Heard::default(), Heard::default());
        exchange(&mut client, &mut server, &mut hc, &mut hs);
        assert!(hc.connected && hs.connected, "client {hc:?} server {hs:?}");
    }
}
