// GStreamer's webrtcbin with its defaults (an RSA certificate, libnice as the controlling ICE
// agent, which sends no consent checks) publishes by WHIP and plays by WHEP through the real
// system, and both sessions outlive str0m's 15 s lite-agent timeout several times over.
// GST_SECONDS sets how long they stay connected (default 60; the 10 minutes: 600).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { ROOT, dumpLog, sleep, startSystem } from './harness.js';
import { createRoom, mintToken } from './whipwhep.js';

const PYTHON = '/usr/bin/python3';
const CLIENT = path.join(ROOT, 'tests/gst/webrtc.py');
const SECONDS = Number(process.env.GST_SECONDS || 60);

// Runs the webrtcbin client; resolves with its JSON report and exit code.
function gst(mode, url, token, seconds, ca) {
  return new Promise((resolve) => {
    const proc = spawn(PYTHON, [CLIENT, mode, url, token, String(seconds), '--ca', ca], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout.on('data', (d) => { out += d; });
    proc.stderr.on('data', (d) => { err += d; });
    const kill = setTimeout(() => proc.kill('SIGKILL'), (seconds + 60) * 1000);
    proc.on('exit', (code) => {
      clearTimeout(kill);
      let report = null;
      try { report = JSON.parse(out.trim().split('\n').pop()); } catch { /* reported below */ }
      resolve({ code, report, err: err.slice(-2000) });
    });
  });
}

test('GStreamer webrtcbin (RSA certificate, libnice) publishes by WHIP and plays by WHEP, and stays up', { timeout: (SECONDS + 120) * 1000 }, async (t) => {
  // The CI's test command installs GStreamer; without it this is a failure, not a skip.
  execFileSync(PYTHON, ['-c', "import gi; gi.require_version('GstWebRTC', '1.0'); from gi.repository import GstWebRTC"]);
  // libnice offers no loopback candidates, and a reply to it must come from the address it
  // sent to: the media plane advertises this machine's own address.
  const ip = Object.values(os.networkInterfaces()).flat().find((a) => a.family === 'IPv4' && !a.internal)?.address;
  assert.ok(ip, 'a non-loopback IPv4 address');
  const sys = await startSystem({ publicIp: ip });
  t.after(() => sys.stop());
  try {
    const room = 'gst';
    await createRoom(sys, room);
    const pubToken = await mintToken(sys, room, 'gst-encoder', { can_subscribe: false });
    const viewToken = await mintToken(sys, room, 'gst-player', { can_publish: false });
    const ca = path.join(sys.dataDir, 'certs', 'ca.pem');
    const base = `https://localhost:${sys.port}`;
    const publishing = gst('publish', `${base}/whip/${room}`, pubToken, SECONDS + 10, ca);
    await sleep(4000);
    const playing = gst('play', `${base}/whep/${room}`, viewToken, SECONDS, ca);
    const [pub, play] = await Promise.all([publishing, playing]);
    console.log(`FIGURE gst_interop seconds=${SECONDS} publisher=${JSON.stringify(pub.report)} player=${JSON.stringify(play.report)}`);
    assert.equal(pub.code, 0, `publisher: ${JSON.stringify(pub.report)} ${pub.err}`);
    assert.equal(play.code, 0, `player: ${JSON.stringify(play.report)} ${play.err}`);
    assert.equal(pub.report.posts, 1, 'one WHIP session');
    assert.equal(play.report.posts, 1, 'one WHEP session');
    assert.ok(pub.report.connected_s >= SECONDS + 10, `the publisher stayed ${pub.report.connected_s} s`);
    assert.ok(play.report.connected_s >= SECONDS, `the player stayed ${play.report.connected_s} s`);
    // videotestsrc sends 30 frames/s; the player decodes them.
    assert.ok(play.report.frames >= 20 * SECONDS, `${play.report.frames} frames decoded in ${SECONDS} s`);
    assert.ok(play.report.received > 30 * SECONDS, `${play.report.received} packets received`);
    assert.ok(play.report.lost <= play.report.received / 1000, `lost ${play.report.lost} of ${play.report.received}`);
    assert.ok(pub.report.lost <= 0.001 * 30 * SECONDS, `the server reported ${pub.report.lost} lost from the publisher`);
    assert.doesNotMatch(sys.output(), /reason=Timeout/, "no session ended by timeout");
  } catch (e) {
    dumpLog(sys);
    throw e;
  }
});
