// Simulcast end to end in Chromium: the web app sends three layers and each viewer receives
// the one its tile needs; layers nobody receives stop being encoded (dynacast); a paged grid
// receives only the videos of its page; WHEP players pick a layer with ?layer=.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { bin, dumpLog, joinApp, newPage, sleep, waitFor, withSystem } from './harness.js';
import { createRoom, mintToken, playWhep, publishWhipSimulcast, sdpPage } from './whipwhep.js';

/** Runs in a viewer's page: no camera, so the app joins receive-only and the browser encodes nothing. */
const noCamera = () => { navigator.mediaDevices.getUserMedia = () => Promise.reject(new Error('no camera in this test')); };

/** The web app's inbound RTP streams that have received something. */
const inbound = async (page) => (await page.evaluate(() => window.conf.inbound())).filter((s) => s.bytesReceived > 0);

/** The one remote video a web-app viewer receives. */
async function oneVideo(page) {
  const v = (await inbound(page)).filter((s) => s.kind === 'video');
  return v.length === 1 ? v[0] : null;
}

/** Waits until `page` decodes frames whose width passes `ok`; returns the stream and the ms since `t0`. */
async function waitWidth(page, ok, what, t0 = Date.now(), timeout = 20000) {
  let last;
  const v = await waitFor(async () => {
    last = await oneVideo(page);
    return last && last.framesDecoded > 0 && ok(last.frameWidth) && last;
  }, { what, timeout }).catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(last)}`); });
  return { ...v, ms: Date.now() - t0 };
}

/** rid -> active of the publisher's video encodings. */
const encodings = (page) => page.evaluate(() => {
  const s = window.conf.pc.getSenders().find((x) => x.track && x.track.kind === 'video');
  return Object.fromEntries(s.getParameters().encodings.map((e) => [e.rid, e.active]));
});

/** Waits until the publisher's encodings are active exactly as `want` says; returns the ms since `t0`. */
async function waitActive(page, want, what, t0 = Date.now(), timeout = 5000) {
  let last;
  await waitFor(async () => {
    last = await encodings(page);
    return Object.entries(want).every(([rid, on]) => last[rid] === on);
  }, { what, timeout, interval: 100 }).catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(last)}`); });
  return Date.now() - t0;
}

/** Bytes the publisher has sent of its layer `rid`. */
const sent = (page, rid) => page.evaluate(async (rid) => {
  let bytes = 0;
  (await window.conf.pc.getStats()).forEach((s) => { if (s.type === 'outbound-rtp' && s.rid === rid) bytes = s.bytesSent; });
  return bytes;
}, rid);

/** Frames decoded by `page`'s one video over `ms`. */
async function framesOver(page, ms) {
  const a = await oneVideo(page);
  await sleep(ms);
  const b = await oneVideo(page);
  return b.framesDecoded - a.framesDecoded;
}

test('web app simulcast: each viewer gets the layer its tile needs, unwatched layers stop (dynacast)', { timeout: 150000 }, async (t) => {
  const { sys, browser } = await withSystem(t);
  try {
    const room = 'simulcast';
    const pub = await joinApp(browser, sys, 'pub', room);
    const sdp = await waitFor(() => pub.evaluate(() => window.conf.pc?.localDescription?.sdp), { what: 'the publisher offer' });
    assert.match(sdp, /a=simulcast:send q;h;f/, 'Chromium offers three rid layers, lowest first');
    // Alone in the room, it is told no one wants any layer and encodes none.
    await waitActive(pub, { q: false, h: false, f: false }, 'no layer encoded while no one watches', Date.now(), 10000);

    // A viewer whose tile is 320x180 gets the lowest layer; the publisher then encodes only it.
    const smallAt = Date.now();
    const small = await joinApp(browser, sys, 'small', room, '?tile=320x180', { init: noCamera });
    const s1 = await waitWidth(small, (w) => w > 0, 'the small viewer decoding', smallAt);
    assert.ok(s1.frameWidth <= 320, `the small viewer decodes ${s1.frameWidth}x${s1.frameHeight}`);
    const smallOnly = await waitActive(pub, { q: true, h: false, f: false }, 'h and f inactive with only a small tile watching', smallAt);

    // A viewer whose window fits two 1280x720 tiles (pub's and small's) gets the top layer, which resumes.
    const largeAt = Date.now();
    const fBefore = await sent(pub, 'f');
    const large = await joinApp(browser, sys, 'large', room, '', { init: noCamera, viewport: { width: 2600, height: 900 } });
    const tileWidth = await large.$eval('.tile:not([data-local])', (e) => Math.round(e.getBoundingClientRect().width * devicePixelRatio));
    const onMs = await waitActive(pub, { q: true, h: false, f: true }, 'f active again for the large viewer', largeAt);
    // Once active again the layer is sent as soon as Chromium's bandwidth estimate, which
    // fell to what q alone needed, has grown back (Chromium's probing: 6 ms to over 5 s here).
    const activeAt = Date.now();
    await waitFor(async () => (await sent(pub, 'f')) > fBefore, { what: 'f sent again', timeout: 10000, interval: 50 });
    const resumeMs = Date.now() - activeAt;
    const l1 = await waitWidth(large, (w) => w === 1280, 'the large viewer decoding 1280 wide', largeAt);
    assert.equal(l1.frameHeight, 720);
    const sNow = await oneVideo(small);
    assert.ok(sNow.frameWidth <= 320, `the small viewer still decodes ${sNow.frameWidth}`);
    const [fs, fl] = await Promise.all([framesOver(small, 2000), framesOver(large, 2000)]);
    assert.ok(fs > 15 && fl > 15, `frames keep being decoded (small +${fs}, large +${fl} in 2 s)`);
    await waitFor(async () => (await small.$eval('.tile:not([data-local]) .res', (e) => e.textContent)) === '320x180', { what: 'the small tile labelled 320x180', timeout: 3000 });

    console.log(`FIGURE simulcast_app small_decodes=${s1.frameWidth}x${s1.frameHeight} large_tile_px=${tileWidth} large_decodes=${l1.frameWidth}x${l1.frameHeight} fps_small=${fs / 2} fps_large=${fl / 2}`);
    console.log(`FIGURE simulcast_app_ms small_join_to_first_frame=${s1.ms} small_join_to_only_q_encoded=${smallOnly} large_join_to_f_active=${onMs} f_active_to_f_sent=${resumeMs} large_join_to_1280_decoded=${l1.ms}`);

    // ?simulcast=0 sends one encoding.
    const single = await joinApp(browser, sys, 'single', 'simulcast-off', '?simulcast=0');
    const sdp0 = await waitFor(() => single.evaluate(() => window.conf.pc?.localDescription?.sdp), { what: 'the single-layer offer' });
    assert.doesNotMatch(sdp0, /a=simulcast/);
    assert.equal(Object.keys(await encodings(single)).length, 1, 'one encoding');
  } catch (e) {
    dumpLog(sys);
    throw e;
  }
});

test('web app simulcast: a tile resized to between two layers\' sizes gets the middle layer', { timeout: 120000 }, async (t) => {
  const { sys, browser } = await withSystem(t);
  try {
    const room = 'simulcast-resize';
    const pub = await joinApp(browser, sys, 'pub', room);
    await waitActive(pub, { q: false, h: false, f: false }, 'no layer encoded while no one watches', Date.now(), 10000);
    const hEarly = await sent(pub, 'h');
    // One tile filling a 1280x720 window (1248 wide): the top layer only.
    const viewer = await joinApp(browser, sys, 'viewer', room, '', { init: noCamera });
    await waitWidth(viewer, (w) => w === 1280, 'the viewer decoding 1280 wide');
    await waitActive(pub, { q: false, h: false, f: true }, 'only f encoded');
    // The window shrinks to 600 wide: a 568x320 tile, which h (640x360) covers.
    const resizeAt = Date.now();
    await viewer.setViewportSize({ width: 600, height: 600 });
    const v = await waitWidth(viewer, (w) => w === 640, 'the shrunk viewer decoding 640 wide', resizeAt).catch(async (e) => {
      // The server knows a layer's size from its keyframes; h may have been paused before any reached it.
      throw new Error(`${e.message}; the publisher had sent ${hEarly} bytes of h before it was paused; encodings now ${JSON.stringify(await encodings(pub))}`);
    });
    const offMs = await waitActive(pub, { q: false, h: true, f: false }, 'only h encoded once the tile is small', resizeAt);
    await waitFor(async () => (await viewer.$eval('.tile:not([data-local]) .res', (e) => e.textContent)) === '640x360', { what: 'the tile labelled 640x360', timeout: 3000 });
    console.log(`FIGURE simulcast_app_resize resize_to_640_decoded_ms=${v.ms} resize_to_f_inactive_ms=${offMs}`);
  } catch (e) {
    dumpLog(sys);
    throw e;
  }
});

/** Counts `page`'s inbound streams whose bytes grow over 1.5 s: video and audio, and the sessions of the videos. */
async function growing(page) {
  const a = new Map((await inbound(page)).map((s) => [s.ssrc, s.bytesReceived]));
  await sleep(1500);
  const up = (await inbound(page)).filter((s) => s.bytesReceived > (a.get(s.ssrc) || 0));
  const video = up.filter((s) => s.kind === 'video');
  return { video: video.length, audio: up.filter((s) => s.kind === 'audio').length, sessions: video.map((s) => s.session).sort() };
}

/** The sessions of the visible tiles that publish video. */
const pageVideos = (page) => page.evaluate(() => [...window.conf.tiles].filter(([, t]) => !t.local && !t.el.hidden && [...t.tracks.values()].includes('video')).map(([s]) => s).sort());

test('paged grid: a viewer of 19 publishers receives the 16 videos of its page and every audio', { timeout: 150000 }, async (t) => {
  const { sys, browser } = await withSystem(t);
  try {
    // The load tester's room; the viewer joins first, so tiles follow the publishers' join order.
    const viewer = await joinApp(browser, sys, 'viewer', 'load-0', '', { init: noCamera });
    const videos = 17;
    const audios = 2;
    const lt = spawn(bin('loadtest'), ['--url', sys.base, '--api-key', sys.apiKey, '--api-secret', sys.apiSecret, '--ca', path.join(sys.dataDir, 'certs', 'ca.pem'),
      '--rooms', '1', '--video-publishers', String(videos), '--audio-publishers', String(audios), '--subscribers', '0', '--duration', '60', '--join-rate', '10',
      '--video-kbps', '150', '--fps', '15', '--quiet'], { stdio: 'ignore' });
    t.after(() => lt.kill('SIGTERM'));
    await waitFor(async () => (await viewer.evaluate(() => [...window.conf.tiles.values()].reduce((n, x) => n + x.tracks.size, 0))) === videos + audios,
      { what: `${videos + audios} published tracks known to the viewer`, timeout: 30000 });
    assert.equal(await viewer.$eval('#page', (e) => e.textContent), 'page 1 of 2');

    // Exactly the page's videos (and every audio) keep arriving.
    const check = async (label) => {
      const want = await pageVideos(viewer);
      let last;
      await waitFor(async () => {
        last = await growing(viewer);
        return last.video === want.length && last.audio === audios && JSON.stringify(last.sessions) === JSON.stringify(want);
      }, { what: `${label}: ${want.length} videos and ${audios} audio receiving`, timeout: 20000 }).catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(last)}`); });
      return want;
    };
    const p1 = await check('page 1');
    assert.equal(p1.length, 16, 'page 1 shows 16 video publishers');
    const clickAt = Date.now();
    await viewer.click('#next');
    assert.equal(await viewer.$eval('#page', (e) => e.textContent), 'page 2 of 2');
    const want2 = await pageVideos(viewer);
    // Time from the click to the first bytes of every video of page 2.
    await waitFor(async () => {
      const v = (await inbound(viewer)).filter((s) => s.kind === 'video');
      return want2.every((session) => v.some((s) => s.session === session));
    }, { what: 'page 2 videos arriving', timeout: 20000, interval: 50 });
    const switchMs = Date.now() - clickAt;
    const p2 = await check('page 2');
    assert.equal(p2.length, videos - 16, 'page 2 shows the remaining video publisher');
    console.log(`FIGURE simulcast_paging publishers=${videos}+${audios} page1_videos=${p1.length} page2_videos=${p2.length} audio=${audios} click_to_page2_video_ms=${switchMs}`);
  } catch (e) {
    dumpLog(sys);
    throw e;
  }
});

test('WHIP simulcast publisher and WHEP players with ?layer=low and ?layer=high', { timeout: 120000 }, async (t) => {
  const { sys, browser } = await withSystem(t);
  try {
    const room = 'whip-simulcast';
    await createRoom(sys, room);
    const publisher = await sdpPage(browser, sys);
    const pub = await publishWhipSimulcast(publisher, room, await mintToken(sys, room, 'encoder', { can_subscribe: false }));
    assert.equal(pub.status, 201, JSON.stringify(pub));
    assert.match(pub.sdp, /a=simulcast:send q;h;f/);

    const got = {};
    for (const layer of ['low', 'high']) {
      const player = await sdpPage(browser, sys);
      const t0 = Date.now();
      const play = await playWhep(player, room, await mintToken(sys, room, `player-${layer}`, { can_publish: false }), `?layer=${layer}`);
      assert.equal(play.status, 201, JSON.stringify(play));
      const v = await waitFor(async () => {
        const x = await player.evaluate(() => window.video());
        return x && x.frames > 0 && (layer === 'low' || x.w === 1280) && x;
      }, { what: `WHEP ?layer=${layer} frames`, timeout: 20000 });
      got[layer] = { ...v, ms: Date.now() - t0, page: player };
    }
    await sleep(2000);
    for (const layer of ['low', 'high']) {
      const v = await got[layer].page.evaluate(() => window.video());
      assert.ok(v.frames > got[layer].frames + 15, `${layer}: frames keep growing (${got[layer].frames} -> ${v.frames})`);
      got[layer].now = v;
    }
    assert.ok(got.low.now.w <= 320, `?layer=low decodes ${got.low.now.w}x${got.low.now.h}`);
    assert.equal(got.high.now.w, 1280, `?layer=high decodes ${got.high.now.w}x${got.high.now.h}`);
    console.log(`FIGURE simulcast_whep low=${got.low.now.w}x${got.low.now.h} high=${got.high.now.w}x${got.high.now.h} low_first_frame_ms=${got.low.ms} high_first_frame_ms=${got.high.ms}`);
  } catch (e) {
    dumpLog(sys);
    throw e;
  }
});
