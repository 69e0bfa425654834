// Stopping the local system: SIGTERM to the launcher tells each signaling client to
// reconnect (close code 1012), forwards SIGTERM to the media plane and the relay, waits for
// them to exit by themselves (status 0, not killed) and exits 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startSystem, sleep, waitFor } from './harness.js';
import { createRoom, mintToken } from './whipwhep.js';
import { openWs } from './wsclient.js';

/** The pids of `parent`'s children, by command name. */
function children(parent) {
  const found = {};
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent) found[fs.readFileSync(`/proc/${d}/comm`, 'utf8').trim()] = Number(d);
    } catch { /* raced with exit */ }
  }
  return found;
}

const alive = (pid) => fs.existsSync(`/proc/${pid}`) && !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));

test('SIGTERM stops the local system cleanly: clients told to reconnect, children exit 0', { timeout: 60000 }, async (t) => {
  const sys = await startSystem();
  t.after(() => sys.stop());
  const kids = children(sys.proc.pid);
  assert.ok(kids['media-plane'] && kids.relay, `children: ${JSON.stringify(kids)}`);
  await createRoom(sys, 'shutdown-room');
  const joined = await openWs(sys);
  joined.send({ type: 'join', token: await mintToken(sys, 'shutdown-room', 'shutdown-alice', {}) });
  await joined.next((m) => m.type === 'joined');
  const fresh = await openWs(sys);

  const started = Date.now();
  const exited = new Promise((r) => sys.proc.once('exit', (code, signal) => r({ code, signal })));
  sys.proc.kill('SIGTERM');
  const { code, signal } = await Promise.race([exited, sleep(15000).then(() => ({ code: 'timeout' }))]);
  const took = Date.now() - started;
  const out = sys.output();
  try {
    assert.equal(code, 0, `the launcher exits 0 (signal ${signal})`);
    await waitFor(() => joined.closed && fresh.closed, { timeout: 2000, what: 'both sockets closed' });
    assert.equal(joined.closed.code, 1012, `a joined client is told to reconnect: ${JSON.stringify(joined.closed)}`);
    assert.equal(fresh.closed.code, 1012, `so is one that has not joined: ${JSON.stringify(fresh.closed)}`);
    assert.match(out, /media plane exited \(exit status: 0\)/, 'the media plane stopped by itself');
    assert.match(out, /relay exited \(exit status: 0\)/, 'the relay stopped by itself');
    assert.ok(!alive(kids['media-plane']) && !alive(kids.relay), 'no child is left');
    console.log(`FIGURE shutdown: launcher exit ${code} in ${took} ms; close codes ${joined.closed.code}/${fresh.closed.code}`);
  } catch (e) {
    console.error(out.split('\n').slice(-40).join('\n'));
    throw e;
  }
});
