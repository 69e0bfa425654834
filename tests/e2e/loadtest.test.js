// The load tester's smoke scenario against our server: synthetic str0m peers join through
// the REST API and WebSocket signaling, publish and subscribe; zero loss and every track.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bin, dumpLog, startSystem } from './harness.js';

test('loadtest smoke scenario: 1 room, 2 publishers, 2 subscribers', { timeout: 120000 }, async (t) => {
  const sys = await startSystem();
  t.after(() => sys.stop());
  const json = path.join(os.tmpdir(), `loadtest-${process.pid}.json`);
  const args = ['--url', sys.base, '--api-key', sys.apiKey, '--api-secret', sys.apiSecret, '--ca', path.join(sys.dataDir, 'certs', 'ca.pem'),
    '--rooms', '1', '--publishers', '2', '--subscribers', '2', '--duration', '5', '--max-loss', '0', '--json', json];
  const mediaPid = sys.mediaPid();
  if (mediaPid) args.push('--server-pid', String(mediaPid));
  const r = spawnSync(bin('loadtest'), args, { encoding: 'utf8', timeout: 60000 });
  console.log(r.stdout);
  if (r.status !== 0) {
    console.error(r.stderr);
    dumpLog(sys);
  }
  assert.equal(r.status, 0, 'loadtest exits 0');
  const report = JSON.parse(fs.readFileSync(json, 'utf8'));
  fs.rmSync(json, { force: true });
  assert.equal(report.connected, 4);
  assert.equal(report.streams_received, report.streams_expected);
  assert.equal(report.streams_expected, 6);
  assert.equal(report.loss, 0);
  assert.ok(report.packets_received > 1000, `received ${report.packets_received}`);
  console.log(`FIGURE loadtest_smoke rx_pps=${report.rx_pps.toFixed(0)} p99_ms=${report.latency_ms.p99} server_cpu_s_per_million=${report.server_cpu_s_per_million_forwarded.toFixed(1)}`);

  // Bad input: an unreachable target and a rejected key each give one clear error and a non-zero exit.
  const bad = spawnSync(bin('loadtest'), ['--url', 'https://127.0.0.1:1', '--api-key', 'k', '--api-secret', 's', '--ca', path.join(sys.dataDir, 'certs', 'ca.pem')], { encoding: 'utf8' });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /cannot reach/);
  const rejected = spawnSync(bin('loadtest'), ['--url', sys.base, '--api-key', 'k', '--api-secret', 's', '--ca', path.join(sys.dataDir, 'certs', 'ca.pem')], { encoding: 'utf8' });
  assert.notEqual(rejected.status, 0);
  assert.match(rejected.stderr, /401/);
  assert.doesNotMatch(bad.stderr + rejected.stderr, /panicked/);
});
