// Three browsers in one room through the web app, one leaves, a fourth is alone in another room.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { basic, cpuPercent, dumpLog, joinApp, remoteNames, remoteStats, request, sleep, waitFor, withSystem } from './harness.js';

for (const mode of process.env.E2E_FORCE_EPOLL_ONLY ? ['epoll'] : ['io_uring', 'epoll']) {
  test(`group call in the web app (${mode})`, { timeout: 180000 }, async (t) => {
    const { sys, browser } = await withSystem(t, { forceEpoll: mode === 'epoll' });
    try {
      const names = ['alice', 'bob', 'carol'];
      const pages = [];
      for (const n of names) pages.push(await joinApp(browser, sys, n, 'e2e'));

      for (const [i, p] of pages.entries()) {
        let last;
        await waitFor(async () => {
          last = await remoteStats(p);
          return last.length === 2 && last.every((x) => x.framesDecoded > 0);
        }, { timeout: 40000, what: `${names[i]} decoding two remote videos` }).catch((e) => {
          throw new Error(`${e.message}: ${JSON.stringify(last)}`);
        });
        assert.deepEqual(await remoteNames(p), names.filter((n) => n !== names[i]).sort());
      }
      const before = await Promise.all(pages.map(remoteStats));
      await sleep(2000);
      const after = await Promise.all(pages.map(remoteStats));
      for (let i = 0; i < 3; i++) {
        for (const s of after[i]) {
          const b = before[i].find((x) => x.session === s.session);
          assert.ok(s.framesDecoded > b.framesDecoded + 10, `${names[i]}: frames from ${s.identity} keep growing (${b.framesDecoded} -> ${s.framesDecoded})`);
        }
      }
      const firstFrame = await Promise.all(pages.map((p) => p.evaluate(() => window.conf.firstFrameAt - window.conf.joinStartedAt)));
      const mediaPid = sys.mediaPid();
      assert.ok(mediaPid, 'media-plane process found');
      const forwarded = async () => (await request(sys, 'GET', '/api/nodes', { headers: { authorization: basic(sys) } })).json
        .flatMap((n) => n.cores).reduce((a, c) => a + c.tx_total, 0);
      const tx0 = await forwarded();
      const cpu = await cpuPercent(mediaPid, 8000);
      const tx1 = await forwarded();
      assert.ok(tx1 > tx0, 'the node reports forwarded packets');
      const usPerPacket = (cpu / 100) * 8e6 / (tx1 - tx0);
      console.log(`FIGURE mode=${mode} profile=${process.env.E2E_PROFILE || 'debug'} join_to_first_frame_ms=${firstFrame.map((x) => Math.round(x)).join(',')} media_plane_cpu_percent_3_browsers=${cpu.toFixed(1)} forwarded_pps=${((tx1 - tx0) / 8).toFixed(0)} cpu_us_per_forwarded_packet=${usPerPacket.toFixed(1)}`);

      // carol leaves: alice and bob see her tile go.
      await pages[2].click('#leave');
      for (const p of pages.slice(0, 2)) {
        await waitFor(async () => {
          const n = await remoteNames(p);
          return n.length === 1 && !n.includes('carol');
        }, { timeout: 15000, what: 'carol\'s tile to disappear' });
      }
      // alice and bob still receive each other.
      const s1 = await remoteStats(pages[0]);
      await sleep(1500);
      const s2 = await remoteStats(pages[0]);
      assert.equal(s2.length, 1);
      assert.ok(s2[0].framesDecoded > s1[0].framesDecoded, 'alice still decodes bob');

      // dave is alone in another room.
      const dave = await joinApp(browser, sys, 'dave', 'other-room');
      await sleep(3000);
      assert.deepEqual(await remoteNames(dave), []);
      assert.deepEqual(await remoteStats(dave), []);
      assert.deepEqual(await remoteNames(pages[0]), ['bob']);
    } catch (e) {
      dumpLog(sys);
      throw e;
    }
  });
}
