// Prometheus metrics during a real call: the control plane's /metrics needs the API
// credentials, parses with the Prometheus project's own parser (tests/metrics/parse.py),
// and its counters and gauges move while load-tester peers are in a call.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { ROOT, basic, bin, request, sleep, startSystem, waitFor } from './harness.js';
import { mintToken } from './whipwhep.js';
import { openWs } from './wsclient.js';

/** Parses exposition text with prometheus_client; returns its samples. */
export function parseMetrics(text) {
  const r = spawnSync('/usr/bin/python3', [path.join(ROOT, 'tests/metrics/parse.py')], { input: text, encoding: 'utf8' });
  assert.equal(r.status, 0, `the Prometheus parser accepts the text: ${r.stderr}\n${text.slice(0, 2000)}`);
  return JSON.parse(r.stdout);
}

/** The sum of the samples named `name` whose labels include `labels`. */
export function total(samples, name, labels = {}) {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}

async function scrape(sys) {
  const r = await request(sys, 'GET', '/metrics', { headers: { authorization: basic(sys) } });
  assert.equal(r.status, 200);
  return parseMetrics(r.body);
}

test('control-plane metrics: behind the API key, parsable, moving during a call', { timeout: 120000 }, async (t) => {
  const sys = await startSystem();
  t.after(() => sys.stop());
  assert.equal((await request(sys, 'GET', '/metrics')).status, 401, 'no credentials, no metrics');
  const before = await scrape(sys);
  assert.equal(total(before, 'media_nodes'), 1);
  assert.equal(total(before, 'joins_total'), 0);

  const lt = spawn(bin('loadtest'), ['--url', sys.base, '--api-key', sys.apiKey, '--api-secret', sys.apiSecret, '--ca', path.join(sys.dataDir, 'certs', 'ca.pem'),
    '--rooms', '1', '--video-publishers', '1', '--subscribers', '2', '--duration', '8', '--quiet'], { stdio: 'ignore' });
  const ended = new Promise((r) => lt.once('exit', r));
  t.after(() => lt.kill('SIGKILL'));
  let during;
  await waitFor(async () => {
    during = await scrape(sys);
    return total(during, 'sessions', { via: 'ws' }) === 3 && total(during, 'media_core_rx_packets_per_second') > 0;
  }, { timeout: 20000, what: 'three sessions and packets in the metrics' });
  assert.equal(total(during, 'rooms'), 1);
  assert.ok(total(during, 'media_core_tx_packets_per_second') > total(during, 'media_core_rx_packets_per_second'), 'two subscribers: more out than in');
  assert.ok(total(during, 'media_core_sessions') >= 3);
  assert.equal(await ended, 0, 'the call ran');
  await sleep(1500);
  const after = await scrape(sys);
  assert.equal(total(after, 'joins_total', { via: 'ws', result: 'ok' }), 3);
  assert.equal(total(after, 'sessions'), 0, 'everyone left');
  assert.ok(total(after, 'media_core_tx_packets_reported') > 500, `packets sent: ${total(after, 'media_core_tx_packets_reported')}`);
  const tokens = total(after, 'http_requests_total', { route: '/api/rooms/{room}/tokens', method: 'POST', status: '201' });
  assert.equal(tokens, 3, 'one token request per peer, by route template');
  assert.equal(total(after, 'http_request_duration_seconds_count', { route: '/ws' }), 3, 'three WebSocket upgrades timed');
  // A refused join is counted by its reason.
  const room = await request(sys, 'POST', '/api/rooms', { headers: { authorization: basic(sys), 'content-type': 'application/json' }, body: JSON.stringify({ name: 'tiny', max_participants: 1 }) });
  assert.equal(room.status, 201);
  const a = await openWs(sys);
  a.send({ type: 'join', token: await mintToken(sys, 'tiny', 'a', {}) });
  await a.next((m) => m.type === 'joined');
  const b = await openWs(sys);
  b.send({ type: 'join', token: await mintToken(sys, 'tiny', 'b', {}) });
  await b.next((m) => m.type === 'error');
  const refused = await scrape(sys);
  assert.equal(total(refused, 'joins_total', { via: 'ws', result: 'room_full' }), 1, 'the refusal, by its code');
  a.close();
  b.close();
  console.log(`FIGURE metrics: ${after.length} samples parsed; joins ok ${total(after, 'joins_total', { result: 'ok' })}; packets sent ${total(after, 'media_core_tx_packets_reported')}`);
});
