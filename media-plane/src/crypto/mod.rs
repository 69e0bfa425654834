//! The crypto provider of every str0m session, chosen in one place: the media plane's binary,
//! its simulator, the benches and the tests all build `Rtc`s through it.
//!
//! str0m's aws-lc-rs provider does the per-packet work (SRTP, STUN integrity, hashes); the
//! DTLS handshake runs on OpenSSL ([`ossl`]), which takes RSA and ECDSA peer certificates
//! alike, where str0m's default DTLS (dimpl 0.9) takes only ECDSA and so refused GStreamer's
//! webrtcbin, whose default certificate is RSA (docs/decisions.md).

pub mod ossl;

use str0m::crypto::CryptoProvider;

/// The provider every session uses: aws-lc-rs for SRTP and hashes, OpenSSL for DTLS.
pub fn provider() -> CryptoProvider {
    static DTLS: ossl::OsslDtlsProvider = ossl::OsslDtlsProvider;
    CryptoProvider { dtls_provider: &DTLS, ..str0m::crypto::from_feature_flags() }
}

/// Makes [`provider`] the process default for every `Rtc` built after this (idempotent).
pub fn install() {
    provider().install_process_default();
}
