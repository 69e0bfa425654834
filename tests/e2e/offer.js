// A WebRTC publisher's SDP offer (Opus and VP8 with RTX, bundled, as a browser writes it)
// for tests that talk WHIP without a browser: the server negotiates it, though nothing will
// ever connect to its candidates.
import crypto from 'node:crypto';

/** A send-only offer with fresh ICE credentials and a made-up certificate fingerprint. */
export function publisherOffer() {
  const ufrag = crypto.randomBytes(4).toString('hex');
  const pwd = crypto.randomBytes(12).toString('hex');
  const fingerprint = [...crypto.randomBytes(32)].map((b) => b.toString(16).padStart(2, '0').toUpperCase()).join(':');
  const transport = (mid) => [
    'c=IN IP4 0.0.0.0', 'a=rtcp:9 IN IP4 0.0.0.0', `a=ice-ufrag:${ufrag}`, `a=ice-pwd:${pwd}`, 'a=ice-options:trickle',
    `a=fingerprint:sha-256 ${fingerprint}`, 'a=setup:actpass', `a=mid:${mid}`, 'a=sendonly', 'a=rtcp-mux',
  ];
  return [
    'v=0', 'o=- 4611731400430051336 2 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0 1', 'a=msid-semantic: WMS s',
    'm=audio 9 UDP/TLS/RTP/SAVPF 111', ...transport(0), 'a=msid:s a',
    'a=rtpmap:111 opus/48000/2', 'a=fmtp:111 minptime=10;useinbandfec=1', 'a=ssrc:1001 cname:c',
    'm=video 9 UDP/TLS/RTP/SAVPF 96 97', ...transport(1), 'a=msid:s v', 'a=rtcp-rsize',
    'a=rtpmap:96 VP8/90000', 'a=rtcp-fb:96 nack', 'a=rtcp-fb:96 nack pli', 'a=rtcp-fb:96 ccm fir', 'a=rtcp-fb:96 transport-cc',
    'a=rtpmap:97 rtx/90000', 'a=fmtp:97 apt=96', 'a=ssrc-group:FID 2001 2002', 'a=ssrc:2001 cname:c', 'a=ssrc:2002 cname:c',
    '',
  ].join('\r\n');
}
