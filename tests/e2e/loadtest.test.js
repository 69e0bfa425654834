// The load tester against real servers: our system (REST + WebSocket, and WHIP/WHEP), our
// TURN relay, and Janus 1.1.2 in a network namespace. Every run is small and bounded, and
// asserts zero loss and that every expected track arrived.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, basic, bin, dumpLog, freePort, request, startSystem, waitFor } from './harness.js';

function loadtest(args, { sys, timeout = 90000 } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loadtest-'));
  const json = path.join(dir, 'report.json');
  const r = spawnSync(bin('loadtest'), [...args, '--quiet', '--json', json], { encoding: 'utf8', timeout });
  console.log(r.stdout);
  if (r.status !== 0) {
    console.error(r.stderr);
    if (sys) dumpLog(sys);
  }
  const report = fs.existsSync(json) ? JSON.parse(fs.readFileSync(json, 'utf8')) : null;
  return { ...r, report, dir };
}

function ours(sys) {
  return ['--url', sys.base, '--api-key', sys.apiKey, '--api-secret', sys.apiSecret, '--ca', path.join(sys.dataDir, 'certs', 'ca.pem')];
}

function assertClean(r, streams) {
  assert.equal(r.status, 0, 'loadtest exits 0');
  assert.equal(r.report.failed, 0);
  assert.equal(r.report.streams_expected, streams);
  assert.equal(r.report.streams_received, streams);
  assert.equal(r.report.loss, 0);
  assert.doesNotMatch(r.stderr, /panicked/);
}

test('loadtest against our server: video + audio publishers, subscribers, plots; WHIP/WHEP; bad input', { timeout: 240000 }, async (t) => {
  const sys = await startSystem();
  t.after(() => sys.stop());
  const mediaPid = sys.mediaPid();
  const r = loadtest([...ours(sys), '--rooms', '1', '--video-publishers', '2', '--audio-publishers', '1', '--subscribers', '2',
    '--duration', '5', '--max-loss', '0', '--server-pid', String(mediaPid), '--plots', path.join(os.tmpdir(), `lt-plots-${process.pid}`)], { sys });
  // 3 publishers each see 2 others; 2 subscribers see 3 each.
  assertClean(r, 12);
  assert.equal(r.report.connected, 5);
  assert.ok(r.report.packets_received > 1500, `received ${r.report.packets_received}`);
  assert.ok(r.report.server_cpu_seconds > 0, 'server CPU sampled');
  assert.ok(r.report.series.length >= 4, 'time series sampled');
  for (const f of ['latency-cdf.svg', 'throughput.svg', 'cpu.svg']) {
    const svg = fs.readFileSync(path.join(os.tmpdir(), `lt-plots-${process.pid}`, f), 'utf8');
    assert.match(svg, /<svg[\s\S]*<polyline|<svg[\s\S]*<path/, `${f} has a line`);
  }
  fs.rmSync(path.join(os.tmpdir(), `lt-plots-${process.pid}`), { recursive: true, force: true });
  console.log(`FIGURE loadtest_smoke rx_pps=${r.report.rx_pps.toFixed(0)} p99_ms=${r.report.latency_ms.p99} server_cpu_s_per_million=${r.report.server_cpu_s_per_million_forwarded.toFixed(1)} loadtest_cpu_s_per_million=${r.report.loadtest_cpu_s_per_million_received.toFixed(1)}`);

  // The same scenario over WHIP (publish) and WHEP (one session per publisher watched).
  const w = loadtest([...ours(sys), '--target', 'whip', '--whip-url', `${sys.base}/whip/{room}`, '--whep-url', `${sys.base}/whep/{room}?participant={publisher}`,
    '--video-publishers', '2', '--subscribers', '1', '--duration', '3', '--max-loss', '0'], { sys });
  assertClean(w, 4);
  // 2 WHIP sessions, 2 WHEP sessions between the publishers, 2 for the subscriber.
  assert.equal(w.report.connected, 6);

  // H.264 simulcast (each layer's keyframes start with an SPS of its size): subscribers that
  // ask for 320x180 get the low layer, the others the top one, with continuous streams.
  for (const [view, size, rid] of [[['--view-size', '320x180'], '320x180', 'l'], [[], '1280x720', 'h']]) {
    const h = loadtest([...ours(sys), '--codec', 'h264', '--simulcast', 'true', '--video-publishers', '1', '--subscribers', '2', '--duration', '4', '--max-loss', '0', ...view], { sys });
    assertClean(h, 2);
    assert.deepEqual(h.report.layers.tracks_by_last_resolution, { [size]: 2 }, `H.264 subscribers${view.length ? ' viewing 320x180' : ''} end on ${size}`);
    assert.deepEqual(Object.keys(h.report.layers.received_by_rid), [rid], `and receive only layer ${rid}`);
    assert.ok(h.report.layers.tracks.every((x) => x.frames > 50), `frames arrive whole: ${h.report.layers.tracks.map((x) => x.frames)}`);
    console.log(`FIGURE loadtest_h264_simulcast view=${size} packets=${h.report.packets_received} frames=${h.report.layers.tracks.map((x) => x.frames).join('/')}`);
  }

  // Bad input: one clear error line and a non-zero exit, never a panic.
  const ca = path.join(sys.dataDir, 'certs', 'ca.pem');
  const bad = spawnSync(bin('loadtest'), ['--url', 'https://127.0.0.1:1', '--api-key', 'k', '--api-secret', 's', '--ca', ca], { encoding: 'utf8' });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /cannot reach/);
  const rejected = spawnSync(bin('loadtest'), ['--url', sys.base, '--api-key', 'k', '--api-secret', 's', '--ca', ca], { encoding: 'utf8' });
  assert.notEqual(rejected.status, 0);
  assert.match(rejected.stderr, /401/);
  const file = path.join(r.dir, 'bad.toml');
  fs.writeFileSync(file, 'rooms = "many"\n');
  const malformed = spawnSync(bin('loadtest'), ['--scenario', file], { encoding: 'utf8' });
  assert.equal(malformed.status, 2);
  assert.match(malformed.stderr, /bad scenario .*bad\.toml/);
  fs.writeFileSync(file, 'romos = 3\n');
  const unknown = spawnSync(bin('loadtest'), ['--scenario', file], { encoding: 'utf8' });
  assert.match(unknown.stderr, /unknown field `romos`/);
  const range = spawnSync(bin('loadtest'), ['--packet-size', '4'], { encoding: 'utf8' });
  assert.match(range.stderr, /packet_size must be between/);
  for (const x of [bad, rejected, malformed, unknown, range]) {
    assert.equal(x.stderr.trim().split('\n').filter((l) => l.includes('error')).length, 1, x.stderr);
    assert.doesNotMatch(x.stderr, /panicked/);
  }
});

test('a room that spans both cores: publishers and subscribers on different cores receive every track', { timeout: 120000 }, async (t) => {
  // Three sessions per core: the room starts on one core and spills onto the other.
  const sys = await startSystem({ env: { CAPACITY_PER_CORE: '3', MEDIA_CORES: '2' } });
  t.after(() => sys.stop());
  const r = loadtest([...ours(sys), '--video-publishers', '2', '--audio-publishers', '1', '--subscribers', '3', '--duration', '4', '--join-rate', '10', '--max-loss', '0'], { sys });
  // 3 publishers see 2 others; 3 subscribers see 3 each.
  assertClean(r, 15);
  // The control plane placed part of the room on the other core (its log is read once the
  // synchronous load test has returned).
  await waitFor(() => /room spans another core/.test(sys.output()), { what: 'a participant placed on the second core', timeout: 5000 });
  console.log(`FIGURE cross_core_room rx_pps=${r.report.rx_pps.toFixed(0)} p99_ms=${r.report.latency_ms.p99}`);

  // WHIP publishers and WHEP viewers, 6 sessions in the room once the first run has left: at 3 per core, some WHEP
  // sessions watch a publisher that lives on the other core.
  // The cores report their sessions once a second; the first run's end when their peers go.
  await waitFor(async () => {
    const nodes = (await request(sys, 'GET', '/api/nodes', { headers: { authorization: basic(sys) } })).json;
    return nodes?.[0]?.cores?.every((c) => c.sessions === 0);
  }, { what: 'both cores empty again', timeout: 30000 });
  const before = (sys.output().match(/room spans another core/g) || []).length;
  const w = loadtest([...ours(sys), '--target', 'whip', '--whip-url', `${sys.base}/whip/{room}`, '--whep-url', `${sys.base}/whep/{room}?participant={publisher}`,
    '--video-publishers', '2', '--subscribers', '1', '--duration', '3', '--join-rate', '10', '--max-loss', '0'], { sys });
  assertClean(w, 4);
  assert.equal(w.report.connected, 6);
  await waitFor(() => (sys.output().match(/room spans another core/g) || []).length > before, { what: 'a WHIP/WHEP session on the second core', timeout: 5000 });
});

test('loadtest TURN mode: our relay over UDP and TCP with REST credentials, coturn with long-term credentials; wrong ones refused', { timeout: 120000 }, async (t) => {
  const sys = await startSystem();
  t.after(() => sys.stop());
  const turn = ['--target', 'turn', '--turn-server', `127.0.0.1:${sys.turnPort}`, '--turn-secret', sys.turnSecret, '--duration', '3', '--max-loss', '0'];
  const u = loadtest([...turn, '--turn-allocations', '8', '--turn-rate', '100'], { sys });
  assertClean(u, 16);
  assert.equal(u.report.connected, 8);
  assert.equal(u.report.scenario.turn.secret, '<redacted>');
  assert.ok(!JSON.stringify(u.report).includes(sys.turnSecret), 'the report holds no secret');
  assert.ok(u.report.packets_received >= 8 * 2 * 250, `relayed ${u.report.packets_received}`);
  const tcp = loadtest([...turn, '--turn-transport', 'tcp', '--turn-allocations', '4', '--turn-rate', '50'], { sys });
  assertClean(tcp, 8);
  const wrong = loadtest(['--target', 'turn', '--turn-server', `127.0.0.1:${sys.turnPort}`, '--turn-secret', 'not-the-secret', '--turn-allocations', '1', '--duration', '1']);
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /TURN error 401/);

  // The same client against coturn 4.6.1 with long-term credentials (user:password).
  const port = await freePort();
  const coturn = spawn('turnserver', ['-n', '--no-cli', '--listening-ip', '127.0.0.1', '--relay-ip', '127.0.0.1', '-p', String(port), '--no-tls', '--no-dtls',
    '--allow-loopback-peers', '--user', 'lt:secret', '--realm', 'loadtest', '-a', '-f', '--min-port', '45000', '--max-port', '45999', '--log-file', 'stdout', '--simple-log'], { stdio: 'ignore' });
  t.after(() => coturn.kill('SIGKILL'));
  await new Promise((r) => setTimeout(r, 1000));
  const c = loadtest(['--target', 'turn', '--turn-server', `127.0.0.1:${port}`, '--turn-user', 'lt:secret', '--turn-allocations', '4', '--turn-rate', '50', '--duration', '2', '--max-loss', '0']);
  assertClean(c, 8);
  const bad = loadtest(['--target', 'turn', '--turn-server', `127.0.0.1:${port}`, '--turn-user', 'lt:wrong', '--turn-allocations', '1', '--duration', '1']);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /TURN error 401/);
});

test('loadtest against Janus VideoRoom (Debian janus in a network namespace): 1 publisher, 2 subscribers', { timeout: 180000 }, async (t) => {
  const wd = fs.mkdtempSync(path.join(os.tmpdir(), 'janus-'));
  const script = path.join(ROOT, 'tests', 'janus', 'janus.sh');
  const env = { ...process.env, JANUS_NS: `ltj${process.pid % 100000}`, JANUS_HOST_IP: '10.78.0.1', JANUS_NS_IP: '10.78.0.2' };
  t.after(() => { spawnSync('bash', [script, 'stop', wd], { env, stdio: 'inherit' }); fs.rmSync(wd, { recursive: true, force: true }); });
  const start = spawnSync('bash', [script, 'start', wd], { env, encoding: 'utf8', timeout: 300000 });
  if (start.status !== 0) console.error(start.stderr);
  assert.equal(start.status, 0, 'janus starts');
  const url = start.stdout.trim().split('\n').pop();
  assert.match(url, /^http:\/\/10\.78\.0\.2:\d+\/janus$/);
  const r = loadtest(['--target', 'janus', '--janus-url', url, '--video-publishers', '1', '--subscribers', '2', '--duration', '4', '--max-loss', '0', '--server-name', 'janus']);
  if (r.status !== 0) console.error(fs.readFileSync(path.join(wd, 'janus.log'), 'utf8').slice(-4000));
  assertClean(r, 2);
  assert.ok(r.report.packets_received > 400, `received ${r.report.packets_received}`);
  assert.ok(r.report.server_cpu_seconds > 0, 'Janus CPU sampled');
  // Simulcast: three layers (rids h, m, l) with periodic keyframes; Janus forwards one.
  const sim = loadtest(['--target', 'janus', '--janus-url', url, '--video-publishers', '1', '--subscribers', '2', '--duration', '4', '--simulcast', 'true', '--max-loss', '0.01']);
  assert.equal(sim.status, 0, 'simulcast run exits 0');
  assert.equal(sim.report.streams_received, 2);
  assert.ok(sim.report.packets_received > 300, `simulcast received ${sim.report.packets_received}`);
  // Simulcast is VP8 or H.264 (every target); VP9 is refused before any connection.
  const refused = spawnSync(bin('loadtest'), ['--simulcast', 'true', '--codec', 'vp9', '--api-key', 'k', '--api-secret', 's'], { encoding: 'utf8' });
  assert.match(refused.stderr, /simulcast needs codec vp8 or h264/);
  console.log(`FIGURE loadtest_janus_smoke rx_pps=${r.report.rx_pps.toFixed(0)} p99_ms=${r.report.latency_ms.p99} server_cpu_s_per_million=${r.report.server_cpu_s_per_million_forwarded.toFixed(1)}`);
});
