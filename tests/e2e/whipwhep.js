// WHIP/WHEP clients as plain RTCPeerConnections in a Chromium page, and the REST calls they
// need (a room, a token), shared by the browser tests.
import assert from 'node:assert/strict';
import { basic, installSdpExchange, newPage, request } from './harness.js';

/** A token for `identity` in `room`, with `grants`. */
export async function mintToken(sys, room, identity, grants) {
  const r = await request(sys, 'POST', `/api/rooms/${room}/tokens`, {
    headers: { authorization: basic(sys), 'content-type': 'application/json' },
    body: JSON.stringify({ identity, ttl_seconds: 600, ...grants }),
  });
  assert.equal(r.status, 201, r.body);
  return r.json.token;
}

/** Creates `name` through the REST API. */
export async function createRoom(sys, name) {
  const r = await request(sys, 'POST', '/api/rooms', {
    headers: { authorization: basic(sys), 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  assert.equal(r.status, 201, r.body);
}

/** A page at `sys`'s origin (`/healthz`) that can run the WHIP/WHEP exchange. */
export async function sdpPage(browser, sys) {
  const page = await newPage(browser, sys, '/healthz');
  await installSdpExchange(page);
  return page;
}

/**
 * Publishes the fake camera (1280x720, three simulcast layers q/h/f) and microphone by WHIP
 * from `page`; returns the exchange's result with the local SDP. The peer connection is then
 * `window.pc`.
 */
export function publishWhipSimulcast(page, room, token) {
  return page.evaluate(async ({ room, token }) => {
    const pc = new RTCPeerConnection();
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: { ideal: 1280 }, height: { ideal: 720 } } });
    pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly' });
    pc.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendonly', sendEncodings: [
      { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 }, { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 }, { rid: 'f', maxBitrate: 1500000 }] });
    const r = await window.sdpExchange(pc, `/whip/${room}`, token);
    return { ...r, sdp: pc.localDescription.sdp };
  }, { room, token });
}

/**
 * Plays `room` by WHEP from `page` (audio and video; `query` such as `?layer=low`). The video
 * is shown in `video#whep`, and `window.video()` reads its inbound stats ({w, h, frames}). The
 * peer connection is then `window.pc`.
 */
export function playWhep(page, room, token, query = '') {
  return page.evaluate(async ({ room, token, query }) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    const video = document.createElement('video');
    Object.assign(video, { id: 'whep', autoplay: true, muted: true, playsInline: true });
    document.body.append(video);
    pc.ontrack = (e) => { if (e.track.kind === 'video') video.srcObject = new MediaStream([e.track]); };
    window.video = async () => {
      let v = null;
      (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') v = { w: s.frameWidth || 0, h: s.frameHeight || 0, frames: s.framesDecoded || 0 }; });
      return v;
    };
    return window.sdpExchange(pc, `/whep/${room}${query}`, token);
  }, { room, token, query });
}
