// Webhooks from a real call: a local HTTP receiver, configured with WEBHOOK_URLS, checks
// each POST's Standard Webhooks signature (HMAC-SHA256 with the API secret over
// "id.timestamp.body", checked here with Node's own crypto) and the order of the events:
// room_started first, each participant's join before its tracks, its tracks' end before it
// leaves, room_finished last. The receiver fails its first POST, which must come again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { bin, dumpLog, startSystem, waitFor } from './harness.js';

/** A receiver on a free loopback port that records every POST; the first one gets a 503. */
async function receiver() {
  const got = [];
  let posts = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      posts += 1;
      if (posts === 1) {
        res.writeHead(503).end();
        return;
      }
      got.push({ headers: req.headers, body, at: Date.now() });
      res.writeHead(204).end();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}/hooks`, got, posts: () => posts, close: () => server.close() };
}

function verify(secret, { headers, body }) {
  const id = headers['webhook-id'];
  const ts = Number(headers['webhook-timestamp']);
  assert.ok(id && Number.isFinite(ts), `headers: ${JSON.stringify(headers)}`);
  assert.ok(Math.abs(Date.now() / 1000 - ts) < 300, 'a fresh timestamp');
  const expected = crypto.createHmac('sha256', secret).update(`${id}.${ts}.${body}`).digest('base64');
  const given = headers['webhook-signature'].split(' ').filter((s) => s.startsWith('v1,')).map((s) => s.slice(3));
  assert.ok(given.some((g) => crypto.timingSafeEqual(Buffer.from(g), Buffer.from(expected)) ), 'the signature verifies');
  const ev = JSON.parse(body);
  assert.equal(ev.id, id, 'the body carries the header id');
  return ev;
}

test('webhooks: signed, retried, in order, for a whole call', { timeout: 120000 }, async (t) => {
  const hooks = await receiver();
  t.after(() => hooks.close());
  const sys = await startSystem({ env: { WEBHOOK_URLS: hooks.url } });
  t.after(() => sys.stop());
  const run = spawnSync(bin('loadtest'), ['--url', sys.base, '--api-key', sys.apiKey, '--api-secret', sys.apiSecret, '--ca', path.join(sys.dataDir, 'certs', 'ca.pem'),
    '--rooms', '1', '--video-publishers', '1', '--audio-publishers', '1', '--subscribers', '1', '--duration', '3', '--quiet'], { encoding: 'utf8', timeout: 60000 });
  if (run.status !== 0) {
    console.error(run.stdout, run.stderr);
    dumpLog(sys);
  }
  assert.equal(run.status, 0, 'the call ran');
  await waitFor(() => hooks.got.some((g) => JSON.parse(g.body).event === 'room_finished'), { timeout: 20000, what: 'room_finished' });
  const events = hooks.got.map((g) => verify(sys.apiSecret, g));
  const names = events.map((e) => e.event);
  console.log(names.join(' '));
  assert.equal(hooks.posts(), hooks.got.length + 1, 'the refused first POST came again');
  assert.equal(new Set(events.map((e) => e.id)).size, events.length, 'ids are unique');
  assert.equal(names[0], 'room_started');
  assert.equal(names.at(-1), 'room_finished');
  assert.equal(names.filter((n) => n === 'participant_joined').length, 3);
  assert.equal(names.filter((n) => n === 'participant_left').length, 3);
  const published = events.filter((e) => e.event === 'track_published');
  assert.ok(published.length >= 2, `tracks published: ${published.length}`);
  assert.equal(events.filter((e) => e.event === 'track_unpublished').length, published.length, 'every published track ends');
  for (const e of events.filter((x) => x.participant)) {
    const s = e.participant.session;
    const at = (name, pred = () => true) => events.findIndex((x) => x.event === name && x.participant?.session === s && pred(x));
    const i = events.indexOf(e);
    assert.ok(at('participant_joined') <= i, `${e.event} of ${s} after its join`);
    assert.ok(at('participant_left') >= i, `${e.event} of ${s} before it left`);
    if (e.event === 'track_published') assert.ok(at('track_unpublished', (x) => x.track.id === e.track.id) > i, 'a track ends after it starts');
    assert.equal(e.room.name, events[0].room.name);
  }
  assert.equal(events.at(-1).room.num_participants, 0);
  console.log(`FIGURE webhooks: ${events.length} events verified, first POST retried`);
});
