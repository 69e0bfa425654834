// Prometheus metrics during real traffic, each text parsed by the Prometheus project's own
// parser (tests/metrics/parse.py): the control plane's /metrics (behind the API
// credentials) and the media plane's --prometheus endpoint while load-tester peers are in a
// call, and the relay's --prometheus endpoint (coturn's words) while it relays.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import http from 'node:http';
import { ROOT, basic, bin, freePort, request, sleep, startSystem, waitFor } from './harness.js';
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

/** GETs a plain-HTTP metrics endpoint and parses it. */
function scrapeHttp(port) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        try {
          assert.equal(res.statusCode, 200);
          assert.match(res.headers['content-type'], /openmetrics-text/);
          resolve(parseMetrics(body));
        } catch (e) { reject(e); }
      });
    }).on('error', reject);
  });
}

async function scrape(sys) {
  const r = await request(sys, 'GET', '/metrics', { headers: { authorization: basic(sys) } });
  assert.equal(r.status, 200);
  return parseMetrics(r.body);
}

test('control-plane metrics: behind the API key, parsable, moving during a call', { timeout: 120000 }, async (t) => {
  // The media plane reads PROMETHEUS_ADDR from the environment that `local` passes on.
  const mediaMetrics = await freePort();
  const sys = await startSystem({ env: { PROMETHEUS_ADDR: `127.0.0.1:${mediaMetrics}` } });
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
    const rx = total(during, 'media_core_rx_packets_per_second');
    return total(during, 'sessions', { via: 'ws' }) === 3 && rx > 0 && total(during, 'media_core_tx_packets_per_second') > rx;
  }, { timeout: 20000, what: 'three sessions, and more packets out than in (two subscribers), in the metrics' });
  assert.equal(total(during, 'rooms'), 1);
  assert.ok(total(during, 'media_core_sessions') >= 3);
  const node = await scrapeHttp(mediaMetrics);
  assert.equal(total(node, 'media_sessions'), 3, 'the node counts the three sessions');
  assert.equal(total(node, 'media_connected_sessions'), 3);
  assert.ok(total(node, 'media_rx_rtp_packets_total') > 0 && total(node, 'media_tx_rtp_packets_total') > total(node, 'media_rx_rtp_packets_total'), 'RTP in and out');
  assert.ok(total(node, 'media_tx_bytes_total') > total(node, 'media_rx_bytes_total'), 'bytes out exceed bytes in with two subscribers');
  assert.ok(total(node, 'media_busy_seconds_total') > 0, 'core CPU time');
  assert.ok(total(node, 'media_syscalls_total') > 0 && total(node, 'media_syscalls_total') < total(node, 'media_tx_datagrams_total') + total(node, 'media_rx_datagrams_total'), 'batched: fewer syscalls than datagrams');
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

test('relay metrics: coturn\'s --prometheus, moving while it relays', { timeout: 60000 }, async (t) => {
  const [turnPort, metricsPort] = [await freePort(), await freePort()];
  const secret = 'metrics-test-secret';
  const low = 40000 + (process.pid % 1000) * 10;
  const relay = spawn(bin('relay'), ['--listening-ip', '127.0.0.1', '--relay-ip', '127.0.0.1', '--listening-port', String(turnPort), '--no-tls',
    '--use-auth-secret', '--static-auth-secret', secret, '--realm', 'metrics', '--allow-loopback-peers', '--min-port', String(low), '--max-port', String(low + 9),
    '--cores', '1', '--prometheus', '--prometheus-address', '127.0.0.1', '--prometheus-port', String(metricsPort)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  relay.stderr.on('data', (d) => { log += d; });
  t.after(() => relay.kill('SIGKILL'));
  const idle = await waitFor(() => scrapeHttp(metricsPort).catch(() => null), { timeout: 10000, what: `the relay's metrics endpoint ${log}` });
  assert.equal(total(idle, 'turn_allocations'), 0);
  const r = spawnSync(bin('loadtest'), ['--target', 'turn', '--turn-server', `127.0.0.1:${turnPort}`, '--turn-secret', secret, '--turn-allocations', '4', '--turn-rate', '50',
    '--duration', '3', '--max-loss', '0', '--quiet'], { encoding: 'utf8', timeout: 30000 });
  assert.equal(r.status, 0, `loadtest: ${r.stderr}\n${log}`);
  await sleep(1500);
  const m = await scrapeHttp(metricsPort);
  assert.equal(total(m, 'turn_allocations_made_total'), 4);
  const toPeer = total(m, 'turn_relayed_packets_total', { direction: 'to_peer' });
  const toClient = total(m, 'turn_relayed_packets_total', { direction: 'to_client' });
  // 4 allocations, each sending 50 packets/s to the next one's peer for 3 s.
  assert.ok(toPeer >= 500 && toClient >= 500, `relayed ${toPeer} to peers, ${toClient} to clients`);
  assert.ok(total(m, 'turn_relayed_bytes_total') > 0);
  assert.ok(total(m, 'turn_refused_requests_total', { code: '401' }) >= 4, 'each allocation starts with a 401 challenge');
  console.log(`FIGURE relay_metrics: allocations ${total(m, 'turn_allocations_made_total')}, relayed ${toPeer}/${toClient} packets`);
});
