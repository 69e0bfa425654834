// Abuse against the whole `local` system (the real control plane, media plane and relay
// binaries), with a normal call beside it: a load-tester publisher and subscribers that must
// see no loss and no drop in their packet rate or in the video frames they receive whole
// while each case runs. Every case is bounded, and each reports the servers' memory growth
// and CPU time (FIGURE lines). The relay's cases run against its binary, with a relayed
// client beside them, in `relay/tests/abuse.rs`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import https from 'node:https';
import { basic, bin, cpuTicks, request, startSystem, waitFor } from './harness.js';
import { publisherOffer } from './offer.js';
import { createRoom, mintToken } from './whipwhep.js';
import { openWs } from './wsclient.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TICK = 100; // clock ticks per second (Linux's USER_HZ)

/// Resident memory (KiB) and CPU seconds of a process.
function usage(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
  return { rss, cpu: cpuTicks(pid) / TICK };
}

/// Opens `n` connections with `open` (each reads what it is sent and says nothing more), and
/// resolves with how many connected, how many of those the server closed, and when the last
/// of them went, giving up after `limitMs`. Connections the kernel never accepted (its listen
/// backlog full, the SYN to be retried) hold nothing of the server's and are not waited for.
async function held(n, open, limitMs) {
  const start = Date.now();
  let connected = 0;
  let closed = 0;
  let last = 0;
  let emfile = 0;
  const sockets = [];
  for (let i = 0; i < n; i++) {
    const s = open();
    let up = false;
    s.on('error', (e) => { if (e.code === 'EMFILE') emfile += 1; });
    s.once('connect', () => { up = true; connected += 1; });
    // Reading, so that the server's close is seen.
    s.on('data', () => {});
    s.once('close', () => { if (up) { closed += 1; last = Date.now() - start; } });
    sockets.push(s);
  }
  await sleep(1000);
  await waitFor(() => closed === connected, { timeout: limitMs, interval: 200, what: 'connections closed by the server' }).catch(() => {});
  for (const s of sockets) s.destroy();
  assert.equal(emfile, 0, 'the client ran out of file descriptors: raise ulimit -n');
  return { connected, closed, lastMs: last };
}

/// `POST /app/token` with `form`, from the local address `from` (another loopback address
/// is another client to the server's per-address limits). Resolves with the status.
function askToken(sys, form, from = '127.0.0.1') {
  return new Promise((resolve) => {
    const req = https.request(`${sys.base}/app/token`, { method: 'POST', ca: sys.ca, servername: 'localhost', localAddress: from, headers: { 'content-type': 'application/json' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(0));
    req.end(JSON.stringify(form));
  });
}

/// A STUN Binding request with a made-up MESSAGE-INTEGRITY, to the session whose ICE ufrag is
/// `serverUfrag` (random by default): what a spoofer without the session's password can send.
function spoofedBinding(serverUfrag = Math.random().toString(36).slice(2, 10)) {
  const user = Buffer.from(`${serverUfrag}:${Math.random().toString(36).slice(2, 10)}`);
  const pad = (4 - (user.length % 4)) % 4;
  const attrs = Buffer.concat([
    Buffer.from([0x00, 0x06, 0x00, user.length]), user, Buffer.alloc(pad),
    Buffer.from([0x00, 0x08, 0x00, 20]), Buffer.alloc(20, 7),
  ]);
  const head = Buffer.alloc(20);
  head.writeUInt16BE(0x0001, 0);
  head.writeUInt16BE(attrs.length, 2);
  head.writeUInt32BE(0x2112a442, 4);
  for (let i = 8; i < 20; i++) head[i] = Math.floor(Math.random() * 256);
  return Buffer.concat([head, attrs]);
}

/// The room of the call beside (the load tester names it) and its participants.
async function callRoom(sys) {
  const rooms = (await request(sys, 'GET', '/api/rooms', { headers: { authorization: basic(sys) } })).json;
  const name = rooms.find((r) => r.num_participants >= 4).name;
  const room = (await request(sys, 'GET', `/api/rooms/${name}`, { headers: { authorization: basic(sys) } })).json;
  return { name, core: room.core, sessions: room.participants.map((p) => p.session).sort() };
}

/// `DELETE urlPath` with a bearer token; resolves with the status.
async function deleteWith(sys, urlPath, token) {
  return (await request(sys, 'DELETE', urlPath, { headers: { authorization: `Bearer ${token}` } })).status;
}

/// A viewer of the call, with its own subscribe-only token, tries to end each participant's
/// session by every WHIP/WHEP resource URL it can form from the ids it sees. A WHIP publisher
/// in the room (whose resource URL carries its secret) is among them, and ends its own session.
async function viewerDeletesSessions(sys) {
  const { name, sessions } = await callRoom(sys);
  const viewer = await mintToken(sys, name, 'abuse-viewer', { can_publish: false });
  const whip = await request(sys, 'POST', `/whip/${name}`, { headers: { authorization: `Bearer ${await mintToken(sys, name, 'abuse-whip', {})}`, 'content-type': 'application/sdp' }, body: publisherOffer() });
  assert.equal(whip.status, 201, whip.body);
  const own = whip.headers.location;
  const whipSession = own.split('/')[3];
  const statuses = {};
  for (const session of [...sessions, whipSession]) {
    for (const kind of ['whip', 'whep']) {
      for (const url of [`/${kind}/${name}/${session}`, `/${kind}/${name}/${session}/${'0'.repeat(32)}`]) {
        const st = await deleteWith(sys, url, viewer);
        statuses[st] = (statuses[st] || 0) + 1;
      }
    }
  }
  const still = (await callRoom(sys)).sessions;
  const survivors = [...sessions, whipSession].filter((x) => still.includes(x)).length;
  const ownDelete = await deleteWith(sys, own, await mintToken(sys, name, 'abuse-whip2', {}));
  const gone = !(await callRoom(sys)).sessions.includes(whipSession);
  return { attempts: Object.values(statuses).reduce((a, b) => a + b, 0), s401: statuses[401] || 0, s404: statuses[404] || 0, other: Object.entries(statuses).filter(([k]) => k !== '401' && k !== '404').length, survivors, targets: sessions.length + 1, own_delete: ownDelete, whip_gone: gone };
}

/// A participant joins the call's room by `/ws`, is kicked through the API, and tries to come
/// back with the same token; a token minted after the kick works.
async function kickedRejoins(sys) {
  const { name } = await callRoom(sys);
  const token = await mintToken(sys, name, 'abuse-mallory', {});
  const ws = await openWs(sys);
  ws.send({ type: 'join', token });
  await ws.next((m) => m.type === 'joined');
  const kick = (await request(sys, 'DELETE', `/api/rooms/${name}/participants/abuse-mallory`, { headers: { authorization: basic(sys) } })).status;
  const kicked = await ws.next((m) => m.type === 'error');
  await waitFor(() => ws.closed, { timeout: 5000, what: 'the kicked connection closed' });
  const again = await openWs(sys);
  again.send({ type: 'join', token });
  const refused = await again.next((m) => m.type === 'joined' || m.type === 'error');
  again.close();
  // `iat` counts whole seconds: a token minted in the kick's own second is refused too.
  await sleep(1100);
  const fresh = await openWs(sys);
  fresh.send({ type: 'join', token: await mintToken(sys, name, 'abuse-mallory', {}) });
  const back = await fresh.next((m) => m.type === 'joined' || m.type === 'error');
  fresh.send({ type: 'leave' });
  await waitFor(() => fresh.closed, { timeout: 5000, what: 'the leave closed the connection' });
  return { kick, kicked: kicked.code, rejoin: refused.type === 'error' ? refused.code : refused.type, fresh_token: back.type };
}

/// A join to the room that the debug-only trigger (`MEDIA_PLANE_PANIC_ROOM`) names panics its
/// core: the join fails at once, the process stays, and the restarted core takes a new join.
/// Twice, so that the second round shows what a panic costs in memory once the first has paid
/// for what is loaded only once (the backtrace's symbols, when `RUST_BACKTRACE` is set).
async function corePanics(sys, room, mediaPid) {
  await createRoom(sys, room);
  const offer = (r, who) => mintToken(sys, r, who, {}).then((t) => request(sys, 'POST', `/whip/${r}`, { headers: { authorization: `Bearer ${t}`, 'content-type': 'application/sdp' }, body: publisherOffer() }));
  const rounds = [];
  for (const round of [1, 2]) {
    const rss = usage(mediaPid).rss;
    const t0 = Date.now();
    const failed = await offer(room, `abuse-panic-${round}`);
    const failMs = Date.now() - t0;
    const after = `${room}-after-${round}`;
    await createRoom(sys, after);
    const joined = await offer(after, 'abuse-after');
    if (joined.status === 201) await deleteWith(sys, joined.headers.location, await mintToken(sys, after, 'abuse-after2', {}));
    rounds.push({ status: failed.status, ms: failMs, after: joined.status, rss_growth_kib: usage(mediaPid).rss - rss });
  }
  const log = sys.output().replace(/\x1b\[[0-9;]*m/g, '');
  const cores = [...log.matchAll(new RegExp(`room placed room=${room} .*?core=(\\d+)`, 'g'))].map((m) => Number(m[1]));
  return {
    join_status: rounds.map((r) => r.status).join('/'), join_failed_ms: Math.max(...rounds.map((r) => r.ms)), cores: cores.join('/'),
    after_status: rounds.map((r) => r.after).join('/'), first_rss_growth_kib: rounds[0].rss_growth_kib, second_rss_growth_kib: rounds[1].rss_growth_kib,
    same_process: sys.mediaPid() === mediaPid,
  };
}

test('abuse against the whole system: each case contained, the call beside it undisturbed', { timeout: 200000 }, async (t) => {
  const panicRoom = 'abuse-panic';
  const sys = await startSystem({ env: { MEDIA_PLANE_PANIC_ROOM: panicRoom } });
  t.after(() => sys.stop());
  const pids = { control: sys.proc.pid, media: sys.mediaPid() };
  assert.ok(pids.media, 'the media plane runs');
  const log = sys.output().replace(/\x1b\[[0-9;]*m/g, '');
  const mediaPorts = [...new Set([...log.matchAll(/media_plane.*?core started.*?port=(\d+)/g)].map((m) => Number(m[1])))];
  assert.ok(mediaPorts.length >= 1, 'media ports logged');

  // The call beside the attacks: 1 video and 1 audio publisher, 2 subscribers, 110 s.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'abuse-call-'));
  const json = path.join(dir, 'report.json');
  const call = spawn(bin('loadtest'), ['--url', sys.base, '--api-key', sys.apiKey, '--api-secret', sys.apiSecret, '--ca', path.join(sys.dataDir, 'certs', 'ca.pem'),
    '--video-publishers', '1', '--audio-publishers', '1', '--subscribers', '2', '--duration', '110', '--quiet', '--json', json], { stdio: 'ignore' });
  // The load tester's series counts seconds from its start, about when it is spawned.
  const spawnedAt = Date.now();
  const since = () => (Date.now() - spawnedAt) / 1000;
  const callDone = new Promise((r) => call.once('exit', r));
  t.after(() => call.kill('SIGKILL'));
  await sleep(8000);

  const windows = [];
  const measure = async (name, run) => {
    const before = { control: usage(pids.control), media: usage(pids.media) };
    const from = since();
    const result = await run();
    await sleep(1000);
    const after = { control: usage(pids.control), media: usage(pids.media) };
    windows.push({ name, from, to: since() });
    const d = (k) => `${k}_rss_growth_kib=${after[k].rss - before[k].rss} ${k}_cpu_s=${(after[k].cpu - before[k].cpu).toFixed(2)}`;
    console.log(`FIGURE abuse_${name} ${d('control')} ${d('media')} ${Object.entries(result).map(([k, v]) => `${k}=${v}`).join(' ')}`);
    return result;
  };
  const [host, port] = ['127.0.0.1', sys.port];

  // 300 /ws connections that upgrade and then say nothing: the join timeout (10 s) or the
  // per-address limit (200) ends every one.
  const ws = await measure('silent_ws_300', () => held(300, () => {
    const s = tls.connect({ host, port, rejectUnauthorized: false, servername: 'localhost' });
    s.once('secureConnect', () => s.write(`GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`));
    return s;
  }, 20000));
  assert.equal(ws.connected, 300, 'every /ws connection was accepted by the kernel');
  assert.equal(ws.closed, ws.connected, 'every silent /ws connection closed');

  // 100 connections that finish TLS and stall in their headers (slowloris).
  const slow = await measure('slow_headers_100', () => held(100, () => {
    const s = tls.connect({ host, port, rejectUnauthorized: false, servername: 'localhost' });
    s.once('secureConnect', () => s.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: '));
    return s;
  }, 20000));
  assert.equal(slow.connected, 100);
  assert.equal(slow.closed, slow.connected, 'every stalled request closed');

  // 2000 TCP connections that never start TLS. A burst beyond the listen backlog (1024)
  // leaves some half-open on the client's side until the kernel completes them, and the
  // server then gives those their own handshake deadline: what must hold is that the
  // server's descriptors go back to what they were.
  const fds = () => fs.readdirSync(`/proc/${pids.control}/fd`).length;
  const fdsBefore = fds();
  const tcp = await measure('silent_tcp_2000', async () => {
    const r = await held(2000, () => net.connect({ host, port }), 20000);
    await waitFor(() => fds() <= fdsBefore + 20, { timeout: 20000, interval: 500, what: 'the control plane back to its descriptors' }).catch(() => {});
    return { ...r, server_fds_after_minus_before: fds() - fdsBefore };
  });
  assert.ok(tcp.connected >= 1800, `${tcp.connected} of 2000 connected`);
  assert.ok(tcp.closed >= 0.9 * tcp.connected, `${tcp.closed} of ${tcp.connected} closed by the server`);
  assert.ok(tcp.server_fds_after_minus_before <= 20, `the control plane holds ${tcp.server_fds_after_minus_before} more descriptors than before`);

  // 20,000 STUN bindings with made-up credentials at each media port.
  await measure('spoofed_stun_20000', async () => {
    const sock = dgram.createSocket('udp4');
    let sent = 0;
    for (let i = 0; i < 20000; i++) {
      for (const p of mediaPorts) {
        sock.send(spoofedBinding(), p, host);
        sent += 1;
      }
      if (i % 500 === 0) await sleep(5);
    }
    await sleep(500);
    sock.close();
    return { sent };
  });

  // 20,000 bindings that name a real session's ufrag (the attacker's own WHIP session, whose
  // answer it read) with a made-up MESSAGE-INTEGRITY: each is checked, and none is learned.
  await measure('known_ufrag_stun_20000', async () => {
    const { name } = await callRoom(sys);
    const whip = await request(sys, 'POST', `/whip/${name}`, { headers: { authorization: `Bearer ${await mintToken(sys, name, 'abuse-ufrag', {})}`, 'content-type': 'application/sdp' }, body: publisherOffer() });
    assert.equal(whip.status, 201, whip.body);
    const ufrag = /a=ice-ufrag:(\S+)/.exec(whip.body)[1];
    const port = Number(/a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host/i.exec(whip.body)[1]);
    const sock = dgram.createSocket('udp4');
    for (let i = 0; i < 20000; i++) {
      sock.send(spoofedBinding(ufrag), port, host);
      if (i % 500 === 0) await sleep(5);
    }
    await sleep(500);
    sock.close();
    const status = await deleteWith(sys, whip.headers.location, await mintToken(sys, name, 'abuse-ufrag2', {}));
    return { sent: 20000, port, session_deleted: status };
  });

  // A viewer tries to end the sessions of everyone it sees.
  const del = await measure('viewer_deletes_sessions', () => viewerDeletesSessions(sys));
  assert.equal(del.other, 0, 'every attempt is refused with 401 (no API key) or 404 (no such resource)');
  assert.equal(del.survivors, del.targets, 'every session survives the viewer');
  assert.equal(del.own_delete, 200, 'the WHIP publisher ends its own session by its resource URL');
  assert.ok(del.whip_gone, 'and it is gone');

  // A kicked participant comes back with its token.
  const kick = await measure('kicked_rejoins', () => kickedRejoins(sys));
  assert.deepEqual(kick, { kick: 204, kicked: 'kicked', rejoin: 'token_revoked', fresh_token: 'joined' });

  // A media core panics on purpose, on the core that the call does not use.
  if (mediaPorts.length >= 2) {
    const callCore = (await callRoom(sys)).core;
    const panic = await measure('core_panic', () => corePanics(sys, panicRoom, pids.media));
    assert.ok(panic.cores.split('/').length === 2 && !panic.cores.split('/').includes(String(callCore)), `the panicking room sat on the other core both times (${panic.cores}; the call's: ${callCore})`);
    assert.equal(panic.join_status, '503/503', 'each join that panicked its core fails');
    assert.ok(panic.join_failed_ms < 5000, `and fails at once (${panic.join_failed_ms} ms)`);
    assert.ok(panic.same_process, 'the media plane did not exit');
    assert.equal(panic.after_status, '201/201', 'the restarted core takes a new join');
    assert.ok(panic.second_rss_growth_kib < 16 * 1024, `a panic costs ${panic.second_rss_growth_kib} KiB of memory`);
  } else {
    console.log('core_panic skipped: one media core, and the call would share it');
  }

  // 300 anonymous token requests without the invite, or with a guessed one: none gets a
  // token; after the first 20 failures that address gets 429 before any work. Another
  // address with the invite still gets its token.
  const tokens = await measure('anonymous_tokens_300', async () => {
    const statuses = {};
    for (let i = 0; i < 300; i += 30) {
      const batch = await Promise.all(Array.from({ length: 30 }, (_, j) => askToken(sys, { name: `guest${i + j}`, room: 'call', ...(j % 2 ? { invite: `guess${i + j}` } : {}) })));
      for (const st of batch) statuses[st] = (statuses[st] || 0) + 1;
    }
    const legit = await askToken(sys, { name: 'alice', room: 'call', invite: sys.invite }, '127.0.0.2');
    return { s401: statuses[401] || 0, s429: statuses[429] || 0, s201: statuses[201] || 0, other: 300 - (statuses[401] || 0) - (statuses[429] || 0) - (statuses[201] || 0), legit };
  });
  assert.equal(tokens.s201, 0, 'no token without the invite');
  assert.equal(tokens.other, 0, 'every refusal is 401 or 429');
  assert.ok(tokens.s429 >= 250, `throttled after the first failures: ${tokens.s429} × 429`);
  assert.equal(tokens.legit, 201, 'another address with the invite gets its token');

  const code = await callDone;
  assert.equal(code, 0, 'the call ran to its end');
  const report = JSON.parse(fs.readFileSync(json, 'utf8'));
  assert.equal(report.connected, 4, 'every participant of the call connected');
  assert.equal(report.streams_received, report.streams_expected, 'every stream arrived');
  assert.ok(report.loss <= 0.001, `the call lost ${(report.loss * 100).toFixed(3)} %`);
  // Its packet rate during each case, against the seconds before the first.
  const series = report.series;
  const rate = (a, b) => {
    const s = series.filter((x) => x.t >= a && x.t < b);
    return s.length ? s.reduce((n, x) => n + x.rx_pps, 0) / s.length : 0;
  };
  const fps = (a, b) => {
    const s = series.filter((x) => x.t >= a && x.t < b);
    return s.length ? s.reduce((n, x) => n + x.rx_fps, 0) / s.length : 0;
  };
  const calm = rate(3, windows[0].from - 0.5);
  const calmFps = fps(3, windows[0].from - 0.5);
  assert.ok(calmFps > 0, 'the call receives whole video frames');
  for (const w of windows) {
    const during = rate(w.from, w.to);
    const duringFps = fps(w.from, w.to);
    console.log(`FIGURE abuse_${w.name}_call rx_pps_before=${calm.toFixed(0)} rx_pps_during=${during.toFixed(0)} frames_per_s_before=${calmFps.toFixed(1)} frames_per_s_during=${duringFps.toFixed(1)}`);
    assert.ok(during >= 0.9 * calm, `${w.name}: the call's rate fell from ${calm.toFixed(0)} to ${during.toFixed(0)} packets/s`);
    assert.ok(duringFps >= 0.9 * calmFps, `${w.name}: the call's whole frames fell from ${calmFps.toFixed(1)} to ${duringFps.toFixed(1)} a second`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
});
