// WHIP publisher and WHEP player as plain RTCPeerConnections in Chromium (not our web app),
// end to end through the real control plane and media plane.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { basic, dumpLog, request, sleep, waitFor, withSystem } from './harness.js';
import { createRoom, mintToken, sdpPage } from './whipwhep.js';

// A WHIP publisher of the fake camera and microphone in `page` (its peer connection is then
// `window.pc`); `codec`, if given, is the only video codec offered.
function publishWhip(page, room, token, codec = null) {
  return page.evaluate(async ({ room, token, codec }) => {
    const pc = new RTCPeerConnection();
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
    for (const track of stream.getTracks()) {
      const tr = pc.addTransceiver(track, { direction: 'sendonly' });
      if (codec && track.kind === 'video') {
        tr.setCodecPreferences(RTCRtpSender.getCapabilities('video').codecs.filter((c) => c.mimeType === `video/${codec}`));
      }
    }
    return window.sdpExchange(pc, `/whip/${room}`, token);
  }, { room, token, codec });
}

// A WHEP player of audio and video in `page`; `inbound(page)` then reads what it receives.
function playWhep(page, room, token) {
  return page.evaluate(async ({ room, token }) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    window.inbound = async () => {
      const stats = await pc.getStats();
      const v = { frames: 0, ssrc: null, codec: null, audioPackets: 0 };
      stats.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          v.frames = s.framesDecoded || 0;
          v.ssrc = s.ssrc;
          v.codec = s.codecId && stats.get(s.codecId) ? stats.get(s.codecId).mimeType : null;
        } else if (s.kind === 'audio') {
          v.audioPackets = s.packetsReceived || 0;
        }
      });
      return v;
    };
    return window.sdpExchange(pc, `/whep/${room}`, token);
  }, { room, token });
}

const inbound = (page) => page.evaluate(() => window.inbound());

for (const codec of ['VP8', 'H264']) test(`WHIP publish and WHEP playback in Chromium (${codec})`, { timeout: 120000 }, async (t) => {
  const { sys, browser } = await withSystem(t);
  try {
    const room = `whip-${codec.toLowerCase()}`;
    await createRoom(sys, room);
    const pubToken = await mintToken(sys, room, 'encoder', { can_subscribe: false });
    const viewToken = await mintToken(sys, room, 'viewer', { can_publish: false });

    const publisher = await sdpPage(browser, sys);
    // Offer only the codec under test.
    const pub = await publishWhip(publisher, room, pubToken, codec);
    assert.equal(pub.status, 201, JSON.stringify(pub));
    assert.match(pub.location, new RegExp(`^/whip/${room}/`));
    assert.equal(pub.type, 'application/sdp');

    // The publisher shows up in the room with its tracks once connected.
    await waitFor(async () => {
      const info = await request(sys, 'GET', `/api/rooms/${room}`, { headers: { authorization: basic(sys) } });
      const p = info.json.participants.find((x) => x.identity === 'encoder');
      return p && p.via === 'whip' && p.tracks.length === 2;
    }, { what: 'the WHIP publisher and its two tracks in the room', timeout: 20000 });

    const player = await sdpPage(browser, sys);
    const play = await playWhep(player, room, viewToken);
    assert.equal(play.status, 201, JSON.stringify(play));
    assert.match(play.location, new RegExp(`^/whep/${room}/`));

    await waitFor(async () => (await inbound(player)).frames > 0, { what: 'WHEP video frames', timeout: 20000 });
    const f1 = (await inbound(player)).frames;
    await sleep(2000);
    const f2 = (await inbound(player)).frames;
    assert.ok(f2 > f1 + 10, `WHEP frames keep growing (${f1} -> ${f2})`);
    assert.ok((await inbound(player)).audioPackets > 20, 'WHEP audio arrives');
    assert.equal((await inbound(player)).codec, `video/${codec}`);

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
    await createRoom(sys, room);
    const pubToken = await mintToken(sys, room, 'encoder', { can_subscribe: false });
    const viewToken = await mintToken(sys, room, 'viewer', { can_publish: false });

    const publisher = await sdpPage(browser, sys);
    const publish = () => publishWhip(publisher, room, pubToken);
    const tracksOf = async (identity) => {
      const info = await request(sys, 'GET', `/api/rooms/${room}`, { headers: { authorization: basic(sys) } });
      const p = info.json.participants.find((x) => x.identity === identity);
      return p ? p.tracks.length : 0;
    };
    const first = await publish();
    assert.equal(first.status, 201, JSON.stringify(first));
    await waitFor(async () => (await tracksOf('encoder')) === 2, { what: 'the first WHIP session and its tracks', timeout: 20000 });

    const player = await sdpPage(browser, sys);
    const play = await playWhep(player, room, viewToken);
    assert.equal(play.status, 201, JSON.stringify(play));
    await waitFor(async () => (await inbound(player)).frames > 20, { what: 'WHEP frames from the first session', timeout: 20000 });

    // The encoder's connection goes away and it publishes again: a new WHIP session under
    // the same identity. The player does nothing.
    // Closing the peer connection sends a DTLS close, which ends the session at once.
    await publisher.evaluate(() => window.pc.close());
    await waitFor(async () => (await tracksOf('encoder')) === 0, { what: 'the first WHIP session to end', timeout: 20000 });
    await sleep(500);
    const before = await inbound(player);
    await sleep(1000);
    const paused = await inbound(player);
    assert.ok(paused.frames - before.frames <= 2, `no frames while the encoder is away (${before.frames} -> ${paused.frames})`);
    const second = await publish();
    assert.equal(second.status, 201, JSON.stringify(second));
    assert.notEqual(second.location, first.location);

    // Frames decode again on the same inbound stream (same SSRC), without a new WHEP request.
    await waitFor(async () => (await inbound(player)).frames > paused.frames + 30, { what: 'WHEP frames from the second session', timeout: 20000 });
    const after = await inbound(player);
    assert.equal(after.ssrc, before.ssrc, 'one inbound video stream across the reconnect');
    const info = await request(sys, 'GET', `/api/rooms/${room}`, { headers: { authorization: basic(sys) } });
    assert.equal(info.json.participants.filter((p) => p.via === 'whep').length, 1, 'the same player session');
  } catch (e) {
    dumpLog(sys);
    throw e;
  }
});

test('five WHEP players that share one token all play at once', { timeout: 120000 }, async (t) => {
  const { sys, browser } = await withSystem(t);
  try {
    const room = 'whep-audience';
    await createRoom(sys, room);
    const publisher = await sdpPage(browser, sys);
    const pub = await publishWhip(publisher, room, await mintToken(sys, room, 'encoder', { can_subscribe: false }));
    assert.equal(pub.status, 201, JSON.stringify(pub));
    // One player URL and token, as a broadcast page hands to its whole audience.
    const shared = await mintToken(sys, room, 'audience', { can_publish: false });
    const players = [];
    for (let i = 0; i < 5; i++) {
      const page = await sdpPage(browser, sys);
      const play = await playWhep(page, room, shared);
      assert.equal(play.status, 201, JSON.stringify(play));
      players.push(page);
    }
    const frames = async () => Promise.all(players.map(async (p) => (await inbound(p)).frames));
    await waitFor(async () => (await frames()).every((f) => f > 10), { what: 'frames on every player', timeout: 30000 });
    const f1 = await frames();
    await sleep(2000);
    const f2 = await frames();
    assert.ok(f2.every((f, i) => f > f1[i] + 10), `every player keeps decoding (${f1} -> ${f2})`);
    const info = await request(sys, 'GET', `/api/rooms/${room}`, { headers: { authorization: basic(sys) } });
    const ids = info.json.participants.filter((p) => p.via === 'whep').map((p) => p.identity);
    assert.equal(new Set(ids).size, 5, `five players, each with its own identity: ${ids}`);
    assert.ok(ids.every((id) => id.startsWith('audience~')), `${ids}`);
    console.log(`FIGURE whep_audience players=5 frames=${f2.join('/')}`);
  } catch (e) {
    dumpLog(sys);
    throw e;
  }
});
