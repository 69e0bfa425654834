// WHIP publisher and WHEP player as plain RTCPeerConnections in Chromium (not our web app),
// end to end through the real control plane and media plane.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { basic, dumpLog, installSdpExchange, newPage, request, sleep, waitFor, withSystem } from './harness.js';

async function mintToken(sys, room, identity, grants) {
  const r = await request(sys, 'POST', `/api/rooms/${room}/tokens`, {
    headers: { authorization: basic(sys), 'content-type': 'application/json' },
    body: JSON.stringify({ identity, ttl_seconds: 600, ...grants }),
  });
  assert.equal(r.status, 201, r.body);
  return r.json.token;
}

for (const codec of ['VP8', 'H264']) test(`WHIP publish and WHEP playback in Chromium (${codec})`, { timeout: 120000 }, async (t) => {
  const { sys, browser } = await withSystem(t);
  try {
    const room = `whip-${codec.toLowerCase()}`;
    const r = await request(sys, 'POST', '/api/rooms', {
      headers: { authorization: basic(sys), 'content-type': 'application/json' },
      body: JSON.stringify({ name: room }),
    });
    assert.equal(r.status, 201, r.body);
    const pubToken = await mintToken(sys, room, 'encoder', { can_subscribe: false });
    const viewToken = await mintToken(sys, room, 'viewer', { can_publish: false });

    const publisher = await newPage(browser, sys, '/healthz');
    await installSdpExchange(publisher);
    const pub = await publisher.evaluate(async ({ room, token, codec }) => {
      const pc = new RTCPeerConnection();
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
      for (const track of stream.getTracks()) {
        const tr = pc.addTransceiver(track, { direction: 'sendonly' });
        if (track.kind === 'video') {
          // Offer only the codec under test.
          const codecs = RTCRtpSender.getCapabilities('video').codecs.filter((c) => c.mimeType === `video/${codec}`);
          tr.setCodecPreferences(codecs);
        }
      }
      return window.sdpExchange(pc, `/whip/${room}`, token);
    }, { room, token: pubToken, codec });
    assert.equal(pub.status, 201, JSON.stringify(pub));
    assert.match(pub.location, new RegExp(`^/whip/${room}/`));
    assert.equal(pub.type, 'application/sdp');

    // The publisher shows up in the room with its tracks once connected.
    await waitFor(async () => {
      const info = await request(sys, 'GET', `/api/rooms/${room}`, { headers: { authorization: basic(sys) } });
      const p = info.json.participants.find((x) => x.identity === 'encoder');
      return p && p.via === 'whip' && p.tracks.length === 2;
    }, { what: 'the WHIP publisher and its two tracks in the room', timeout: 20000 });

    const player = await newPage(browser, sys, '/healthz');
    await installSdpExchange(player);
    const play = await player.evaluate(async ({ room, token }) => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      const result = await window.sdpExchange(pc, `/whep/${room}`, token);
      if (result.status !== 201) return result;
      window.framesDecoded = async () => {
        let frames = 0;
        (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded || 0; });
        return frames;
      };
      window.videoCodec = async () => {
        const stats = await pc.getStats();
        let codecId;
        stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') codecId = s.codecId; });
        return codecId && stats.get(codecId) ? stats.get(codecId).mimeType : null;
      };
      window.audioPackets = async () => {
        let n = 0;
        (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') n = s.packetsReceived || 0; });
        return n;
      };
      return result;
    }, { room, token: viewToken });
    assert.equal(play.status, 201, JSON.stringify(play));
    assert.match(play.location, new RegExp(`^/whep/${room}/`));

    await waitFor(async () => (await player.evaluate(() => window.framesDecoded())) > 0, { what: 'WHEP video frames', timeout: 20000 });
    const f1 = await player.evaluate(() => window.framesDecoded());
    await sleep(2000);
    const f2 = await player.evaluate(() => window.framesDecoded());
    assert.ok(f2 > f1 + 10, `WHEP frames keep growing (${f1} -> ${f2})`);
    assert.ok((await player.evaluate(() => window.audioPackets())) > 20, 'WHEP audio arrives');
    assert.equal(await player.evaluate(() => window.videoCodec()), `video/${codec}`);

    // DELETE ends both sessions.
    const del = async (loc, token) => (await request(sys, 'DELETE', loc, { headers: { authorization: `Bearer ${token}` } })).status;
    assert.equal(await del(play.location, viewToken), 200);
    assert.equal(await del(pub.location, pubToken), 200);
    assert.equal(await del(pub.location, pubToken), 404);
    const info = await request(sys, 'GET', `/api/rooms/${room}`, { headers: { authorization: basic(sys) } });
    assert.equal(info.json.participants.length, 0);
  } catch (e) {
    dumpLog(sys);
    throw e;
  }
});

test('a WHEP player keeps playing when its WHIP broadcaster reconnects', { timeout: 120000 }, async (t) => {
  const { sys, browser } = await withSystem(t);
  try {
    const room = 'whep-follow';
    const r = await request(sys, 'POST', '/api/rooms', {
      headers: { authorization: basic(sys), 'content-type': 'application/json' },
      body: JSON.stringify({ name: room }),
    });
    assert.equal(r.status, 201, r.body);
    const pubToken = await mintToken(sys, room, 'encoder', { can_subscribe: false });
    const viewToken = await mintToken(sys, room, 'viewer', { can_publish: false });

    const publisher = await newPage(browser, sys, '/healthz');
    await installSdpExchange(publisher);
    const publish = () => publisher.evaluate(async ({ room, token }) => {
      const pc = new RTCPeerConnection();
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
      for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendonly' });
      return window.sdpExchange(pc, `/whip/${room}`, token);
    }, { room, token: pubToken });
    const tracksOf = async (identity) => {
      const info = await request(sys, 'GET', `/api/rooms/${room}`, { headers: { authorization: basic(sys) } });
      const p = info.json.participants.find((x) => x.identity === identity);
      return p ? p.tracks.length : 0;
    };
    const first = await publish();
    assert.equal(first.status, 201, JSON.stringify(first));
    await waitFor(async () => (await tracksOf('encoder')) === 2, { what: 'the first WHIP session and its tracks', timeout: 20000 });

    const player = await newPage(browser, sys, '/healthz');
    await installSdpExchange(player);
    const play = await player.evaluate(async ({ room, token }) => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      const result = await window.sdpExchange(pc, `/whep/${room}`, token);
      window.video = async () => {
        let v = { frames: 0, ssrc: null };
        (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') v = { frames: s.framesDecoded || 0, ssrc: s.ssrc }; });
        return v;
      };
      return result;
    }, { room, token: viewToken });
    assert.equal(play.status, 201, JSON.stringify(play));
    await waitFor(async () => (await player.evaluate(() => window.video())).frames > 20, { what: 'WHEP frames from the first session', timeout: 20000 });

    // The encoder's connection goes away and it publishes again: a new WHIP session under
    // the same identity. The player does nothing.
    // Closing the peer connection sends a DTLS close, which ends the session at once.
    await publisher.evaluate(() => window.pc.close());
    await waitFor(async () => (await tracksOf('encoder')) === 0, { what: 'the first WHIP session to end', timeout: 20000 });
    await sleep(500);
    const before = await player.evaluate(() => window.video());
    await sleep(1000);
    const paused = await player.evaluate(() => window.video());
    assert.ok(paused.frames - before.frames <= 2, `no frames while the encoder is away (${before.frames} -> ${paused.frames})`);
    const second = await publish();
    assert.equal(second.status, 201, JSON.stringify(second));
    assert.notEqual(second.location, first.location);

    // Frames decode again on the same inbound stream (same SSRC), without a new WHEP request.
    await waitFor(async () => (await player.evaluate(() => window.video())).frames > paused.frames + 30, { what: 'WHEP frames from the second session', timeout: 20000 });
    const after = await player.evaluate(() => window.video());
    assert.equal(after.ssrc, before.ssrc, 'one inbound video stream across the reconnect');
    const info = await request(sys, 'GET', `/api/rooms/${room}`, { headers: { authorization: basic(sys) } });
    assert.equal(info.json.participants.filter((p) => p.via === 'whep').length, 1, 'the same player session');
  } catch (e) {
    dumpLog(sys);
    throw e;
  }
});
