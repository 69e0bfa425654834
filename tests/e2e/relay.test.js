// Media through our TURN relay in Chromium: two RTCPeerConnections forced to relay
// candidates over UDP and over TCP, and a web-app group call with ?relay=1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { dumpLog, joinApp, newPage, remoteStats, sleep, waitFor, withSystem } from './harness.js';

function restCredentials(secret, user, ttl = 600) {
  const username = `${Math.floor(Date.now() / 1000) + ttl}:${user}`;
  const credential = crypto.createHmac('sha1', secret).update(username).digest('base64');
  return { username, credential };
}

// Runs in the page: pc1 sends the fake camera to pc2, both with iceTransportPolicy 'relay'.
async function loopThroughRelay({ url, username, credential }) {
  const config = { iceServers: [{ urls: [url], username, credential }], iceTransportPolicy: 'relay' };
  const pc1 = new RTCPeerConnection(config);
  const pc2 = new RTCPeerConnection(config);
  pc1.onicecandidate = (e) => e.candidate && pc2.addIceCandidate(e.candidate);
  pc2.onicecandidate = (e) => e.candidate && pc1.addIceCandidate(e.candidate);
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 } });
  stream.getTracks().forEach((t) => pc1.addTrack(t, stream));
  await pc1.setLocalDescription(await pc1.createOffer());
  await pc2.setRemoteDescription(pc1.localDescription);
  await pc2.setLocalDescription(await pc2.createAnswer());
  await pc1.setRemoteDescription(pc2.localDescription);
  window.pcs = [pc1, pc2];
  window.relayStats = async () => {
    const stats = await pc2.getStats();
    let frames = 0;
    let pair;
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded || 0;
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    const local = pair && stats.get(pair.localCandidateId);
    return { frames, candidateType: local && local.candidateType, relayProtocol: local && local.relayProtocol };
  };
}

test('two peer connections through the relay over UDP and TCP, and a group call with ?relay=1', { timeout: 150000 }, async (t) => {
  const { sys, browser } = await withSystem(t);
  try {
    for (const transport of ['udp', 'tcp']) {
      const page = await newPage(browser, sys, '/healthz');
      const creds = restCredentials(sys.turnSecret, `loop-${transport}`);
      await page.evaluate(loopThroughRelay, { url: `turn:127.0.0.1:${sys.turnPort}?transport=${transport}`, ...creds });
      const s = await waitFor(async () => {
        const st = await page.evaluate(() => window.relayStats());
        return st.frames > 10 && st;
      }, { what: `frames decoded through the relay over ${transport}`, timeout: 30000 });
      assert.equal(s.candidateType, 'relay');
      assert.equal(s.relayProtocol, transport);
      const f1 = s.frames;
      await sleep(1500);
      const f2 = (await page.evaluate(() => window.relayStats())).frames;
      assert.ok(f2 > f1 + 10, `${transport}: frames keep growing (${f1} -> ${f2})`);
      console.log(`FIGURE relay_loop transport=${transport} frames=${f2}`);
      await page.close();
    }

    // A wrong credential gets no relay candidates, so no media.
    const bad = await newPage(browser, sys, '/healthz');
    await bad.evaluate(loopThroughRelay, { url: `turn:127.0.0.1:${sys.turnPort}?transport=udp`, username: `${Math.floor(Date.now() / 1000) + 600}:x`, credential: 'wrong' });
    await sleep(4000);
    assert.equal((await bad.evaluate(() => window.relayStats())).frames, 0);
    await bad.close();

    // The web app with ?relay=1: the ICE servers come from the control plane.
    const pages = [];
    for (const n of ['relay-a', 'relay-b']) pages.push(await joinApp(browser, sys, n, 'relayroom', '?relay=1'));
    for (const p of pages) {
      await waitFor(async () => {
        const s = await remoteStats(p);
        return s.length === 1 && s[0].framesDecoded > 10;
      }, { what: 'decoding through relay + SFU', timeout: 40000 });
      const kind = await p.evaluate(async () => {
        const stats = await window.conf.pc.getStats();
        let type;
        stats.forEach((s) => {
          if (s.type === 'transport' && s.selectedCandidatePairId) {
            const pair = stats.get(s.selectedCandidatePairId);
            type = stats.get(pair.localCandidateId).candidateType;
          }
        });
        return type;
      });
      assert.equal(kind, 'relay');
    }
  } catch (e) {
    dumpLog(sys);
    throw e;
  }
});
