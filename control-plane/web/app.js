// The conference web app: join form, paged video grid, mute, camera and leave.
// Signaling protocol: docs/signaling.md. Plain ES module, no build step.
//
// The camera is sent as simulcast (rid layers q, h, f, lowest first) unless the join form's
// box is unticked or the URL says ?simulcast=0; layers nobody receives are not encoded
// (`layers_wanted`). The app joins without auto-subscribe: it subscribes to everyone's audio
// and to the video of the tiles on the current page only, at the size each tile is rendered.
// ?tile=WxH fixes the tiles' CSS size (tests); ?relay=1 forces TURN.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const PAGE_SIZE = 16;
// Simulcast layers, lowest first: the server ranks layers in offer order until it knows sizes.
const LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'f', maxBitrate: 1500000 },
];

const conf = {
  ws: null,
  pc: null,
  local: null,
  session: null,
  joinStartedAt: 0,
  firstFrameAt: null,
  tiles: new Map(),        // session -> tile; remote tiles in the order they appear on pages
  trackSession: new Map(), // remote MediaStreamTrack id -> session
  subs: new Map(),         // "session track" -> { ref, settings } of what we subscribed to
  offered: false,
  page: 0,
  queue: Promise.resolve(),
};
window.conf = conf;

/** Adds a line to the call log. */
function log(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $('log').prepend(li);
}

/** Shows an error under the join form. */
function showError(text) {
  $('error').textContent = text;
}

/** Creates the tile of a participant (the local one goes to the self view, not the grid). */
function addTile(session, identity, isLocal, tracks = []) {
  let t = conf.tiles.get(session);
  if (t) return t;
  const el = document.createElement('div');
  el.className = 'tile';
  el.dataset.session = session;
  el.dataset.identity = identity;
  if (isLocal) el.dataset.local = 'true';
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = !!isLocal;
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = isLocal ? `${identity} (you)` : identity;
  const res = document.createElement('span');
  res.className = 'res';
  const badge = document.createElement('span');
  badge.className = 'badge';
  badge.textContent = 'paused';
  badge.hidden = true;
  el.append(video, name, res, badge);
  (isLocal ? $('self') : $('grid')).append(el);
  t = { el, video, res, badge, identity, local: !!isLocal, tracks: new Map(), paused: new Set(), firstFrameAt: null };
  for (const tr of tracks) t.tracks.set(tr.id, tr.kind);
  conf.tiles.set(session, t);
  if (!isLocal) resizes.observe(el);
  return t;
}

/** Removes a participant's tile and forgets what we subscribed to of theirs. */
function removeTile(session) {
  const t = conf.tiles.get(session);
  if (!t) return;
  resizes.unobserve(t.el);
  t.el.remove();
  conf.tiles.delete(session);
  for (const [key, s] of conf.subs) if (s.ref.session === session) conf.subs.delete(key);
}

/** The remote tiles in page order. */
const remoteTiles = () => [...conf.tiles.values()].filter((t) => !t.local);

/** Shows the current page of remote tiles and the page controls, then subscribes to match. */
function render() {
  const remote = remoteTiles();
  const pages = Math.max(1, Math.ceil(remote.length / PAGE_SIZE));
  conf.page = Math.max(0, Math.min(conf.page, pages - 1));
  remote.forEach((t, i) => { t.el.hidden = Math.floor(i / PAGE_SIZE) !== conf.page; });
  const shown = Math.min(PAGE_SIZE, remote.length - conf.page * PAGE_SIZE);
  $('grid').style.setProperty('--cols', Math.max(1, Math.ceil(Math.sqrt(shown))));
  $('page').textContent = `page ${conf.page + 1} of ${pages}`;
  $('prev').disabled = conf.page === 0;
  $('next').disabled = conf.page >= pages - 1;
  sync();
}

/** The size a tile is rendered at, in device pixels (what the server should send at most). */
function tileSize(t) {
  const r = t.el.getBoundingClientRect();
  const px = (v) => Math.min(16384, Math.max(1, Math.round(v * devicePixelRatio)));
  return { max_width: px(r.width), max_height: px(r.height) };
}

/** Sends one message per 256 tracks (the protocol's limit per message). */
function sendTracks(msg, tracks) {
  for (let i = 0; i < tracks.length; i += 256) send({ ...msg, tracks: tracks.slice(i, i + 256) });
}

/** Subscribes to everyone's audio and to the video of the tiles on this page at their size; unsubscribes the rest. */
function sync() {
  if (!conf.offered) return;
  const want = new Map();
  for (const [session, t] of conf.tiles) {
    if (t.local) continue;
    for (const [track, kind] of t.tracks) {
      if (kind === 'video' && t.el.hidden) continue;
      const settings = kind === 'video' ? JSON.stringify(tileSize(t)) : '';
      want.set(`${session} ${track}`, { ref: { session, track }, settings });
    }
  }
  const gone = [...conf.subs].filter(([key]) => !want.has(key));
  for (const [key] of gone) conf.subs.delete(key);
  if (gone.length) sendTracks({ type: 'unsubscribe' }, gone.map(([, s]) => s.ref));
  const groups = new Map(); // settings -> tracks
  for (const [key, w] of want) {
    if (conf.subs.get(key)?.settings === w.settings) continue;
    conf.subs.set(key, w);
    groups.set(w.settings, [...(groups.get(w.settings) || []), w.ref]);
  }
  for (const [settings, tracks] of groups) sendTracks({ type: 'subscribe', ...(settings && { settings: JSON.parse(settings) }) }, tracks);
}

let resizeTimer = null;
/** Subscribes again at the new sizes once tiles stop resizing for 300 ms. */
const resizes = new ResizeObserver(() => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(sync, 300);
});

/** Records when a tile shows its first frame (conf.firstFrameAt: the first of all). */
function watchFirstFrame(t) {
  if (!t.video.requestVideoFrameCallback) return;
  t.video.requestVideoFrameCallback(() => {
    if (t.firstFrameAt) return;
    t.firstFrameAt = performance.now();
    if (conf.firstFrameAt === null) conf.firstFrameAt = t.firstFrameAt;
  });
}

/** Shows on each remote tile the video size it receives now. */
function showSizes() {
  for (const t of remoteTiles()) {
    const v = t.video;
    t.res.textContent = v.videoWidth ? `${v.videoWidth}x${v.videoHeight}` : '';
  }
}
setInterval(showSizes, 1000);

/** Every inbound RTP stream: kind, publisher session, bytes, frames decoded and frame size (tests, UI). */
conf.inbound = async function () {
  if (!conf.pc) return [];
  const out = [];
  (await conf.pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    out.push({
      kind: s.kind, ssrc: s.ssrc, session: conf.trackSession.get(s.trackIdentifier) || null,
      bytesReceived: s.bytesReceived || 0, framesDecoded: s.framesDecoded || 0, frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0,
    });
  });
  return out;
};

/** Per remote participant: frames decoded so far, from getStats (tests). */
conf.remoteVideoStats = async function () {
  const out = [];
  if (!conf.pc) return out;
  for (const r of conf.pc.getReceivers()) {
    if (!r.track || r.track.kind !== 'video') continue;
    const session = conf.trackSession.get(r.track.id);
    if (!session || !conf.tiles.has(session)) continue;
    const stats = await r.getStats();
    let frames = 0;
    stats.forEach((s) => { if (s.type === 'inbound-rtp') frames = Math.max(frames, s.framesDecoded || 0); });
    out.push({ session, identity: conf.tiles.get(session).identity, framesDecoded: frames });
  }
  return out;
};

/** Sends a signaling message if the socket is open. */
function send(msg) {
  if (conf.ws && conf.ws.readyState === WebSocket.OPEN) conf.ws.send(JSON.stringify(msg));
}

/** The camera (1280x720 wanted) and microphone, or null. */
async function getMedia() {
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: { ideal: 1280 }, height: { ideal: 720 } } });
  } catch (e) {
    log(`no camera/microphone: ${e.message}`);
    return null;
  }
}

/** The simulcast layers for a camera track: as many of LAYERS' top ones as Chromium sends at its size (3 from 960x540, 2 from 480x270, else none). */
function layersFor(track) {
  const { width = 0, height = 0 } = track.getSettings();
  const n = width * height >= 960 * 540 ? 3 : width * height >= 480 * 270 ? 2 : 0;
  return LAYERS.slice(LAYERS.length - n);
}

/** Keeps each layer at its own size: Chromium otherwise shrinks a lone active layer when bandwidth is short, and the server ranks layers by size. */
async function keepLayerSizes(sender) {
  const p = sender.getParameters();
  p.degradationPreference = 'maintain-resolution';
  await sender.setParameters(p).catch((e) => log(`degradationPreference: ${e.message}`));
}

/** Encodes only the layers of our own `track` (a mid) that someone receives (dynacast). */
async function setLayers(track, rids) {
  const tr = conf.pc && conf.pc.getTransceivers().find((x) => x.mid === track);
  if (!tr) return;
  const p = tr.sender.getParameters();
  if (!p.encodings || p.encodings.length < 2) return;
  let changed = false;
  for (const e of p.encodings) {
    const on = rids.includes(e.rid);
    if (e.active !== on) {
      e.active = on;
      changed = true;
    }
  }
  if (changed) await tr.sender.setParameters(p);
  log(`layers wanted: ${rids.join(', ') || 'none'}`);
}

/** Sets up tiles and the peer connection, and sends our one offer. */
async function onJoined(msg) {
  conf.session = msg.session;
  $('where').textContent = `room ${msg.room} as ${msg.identity}`;
  $('join').hidden = true;
  $('call').hidden = false;
  const me = addTile(msg.session, msg.identity, true);
  for (const p of [...msg.participants].sort((a, b) => a.joined_at - b.joined_at)) addTile(p.session, p.identity, false, p.tracks);
  render();
  log(`joined ${msg.room} (${msg.participants.length} already here)`);

  const config = { iceServers: msg.ice_servers || [], bundlePolicy: 'max-bundle' };
  if (params.get('relay') === '1') config.iceTransportPolicy = 'relay';
  const pc = new RTCPeerConnection(config);
  conf.pc = pc;
  pc.ontrack = (e) => {
    const stream = e.streams[0];
    if (!stream) return;
    const t = conf.tiles.get(stream.id);
    // Tracks of our own receive-only lines carry no participant's stream: no tile.
    if (!t || t.local) return;
    conf.trackSession.set(e.track.id, stream.id);
    // Loading the stream again makes the element play a track added after it started.
    t.video.srcObject = stream;
    if (!t.firstFrameAt) watchFirstFrame(t);
  };
  pc.onconnectionstatechange = () => log(`connection ${pc.connectionState}`);

  if (msg.grants.can_publish) {
    conf.local = await getMedia();
  }
  if (conf.local) {
    me.video.srcObject = conf.local;
    const simulcast = $('simulcast').checked;
    for (const track of conf.local.getTracks()) {
      const init = { direction: 'sendonly', streams: [conf.local] };
      const layers = track.kind === 'video' && simulcast ? layersFor(track) : [];
      if (layers.length) init.sendEncodings = layers.map((l) => ({ ...l }));
      const tr = pc.addTransceiver(track, init);
      if (layers.length) await keepLayerSizes(tr.sender);
    }
  } else {
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
  }
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  send({ type: 'offer', sdp: offer.sdp });
  conf.offered = true;
  sync();
}

/** Applies one server message. */
async function handle(msg) {
  switch (msg.type) {
    case 'joined': return onJoined(msg);
    case 'answer': return conf.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    case 'offer': {
      await conf.pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      const answer = await conf.pc.createAnswer();
      await conf.pc.setLocalDescription(answer);
      send({ type: 'answer', sdp: answer.sdp });
      return;
    }
    case 'participant_joined':
      addTile(msg.participant.session, msg.participant.identity, false, msg.participant.tracks);
      render();
      log(`${msg.participant.identity} joined`);
      return;
    case 'participant_left':
      removeTile(msg.session);
      render();
      log(`${msg.identity} left`);
      return;
    case 'track_published': {
      const t = conf.tiles.get(msg.session) || addTile(msg.session, msg.identity, false);
      t.tracks.set(msg.track, msg.kind);
      render();
      log(`${msg.identity} published ${msg.kind}`);
      return;
    }
    case 'track_paused': {
      const t = conf.tiles.get(msg.session);
      if (!t) return;
      if (msg.paused) t.paused.add(msg.track); else t.paused.delete(msg.track);
      t.badge.hidden = t.paused.size === 0;
      return;
    }
    case 'layers_wanted': return setLayers(msg.track, msg.rids);
    case 'error':
      if (msg.code === 'track_not_found') {
        // A publisher left while we (un)subscribed: subscribe again to what is there.
        conf.subs.clear();
        setTimeout(sync, 300);
      } else {
        showError(`${msg.code}: ${msg.message}`);
      }
      log(`error ${msg.code}: ${msg.message}`);
      return;
    case 'pong':
      return;
    default:
      log(`unknown message ${msg.type}`);
  }
}

/** Closes the call and shows the join form again. */
function teardown() {
  if (conf.pc) conf.pc.close();
  if (conf.local) conf.local.getTracks().forEach((t) => t.stop());
  for (const s of [...conf.tiles.keys()]) removeTile(s);
  Object.assign(conf, { pc: null, local: null, session: null, ws: null, firstFrameAt: null, offered: false, page: 0 });
  conf.trackSession.clear();
  conf.subs.clear();
  $('call').hidden = true;
  $('join').hidden = false;
  $('where').textContent = '';
}

/** Gets a token and opens the signaling socket. */
async function join(name, room) {
  showError('');
  conf.joinStartedAt = performance.now();
  const res = await fetch('/app/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    // The invite secret travels in the link the server printed (?invite=...).
    body: JSON.stringify({ name, room, invite: params.get('invite') }),
  });
  const body = await res.json();
  if (!res.ok) {
    showError(`${body.error}: ${body.message}`);
    return;
  }
  const ws = new WebSocket(`wss://${location.host}/ws`);
  conf.ws = ws;
  ws.onopen = () => send({ type: 'join', token: body.token, auto_subscribe: false });
  ws.onmessage = (e) => {
    let msg;
    try { msg = JSON.parse(e.data); } catch { return; }
    // Messages are applied strictly in order: an offer must wait for the previous answer.
    conf.queue = conf.queue.then(() => handle(msg)).catch((err) => log(`error: ${err.message}`));
  };
  ws.onclose = () => {
    if (conf.ws === ws) {
      log('disconnected');
      teardown();
    }
  };
}

$('join').addEventListener('submit', (e) => {
  e.preventDefault();
  join($('name').value.trim(), $('room').value.trim());
});

$('mic').addEventListener('click', () => {
  const t = conf.local && conf.local.getAudioTracks()[0];
  if (!t) return;
  t.enabled = !t.enabled;
  $('mic').textContent = t.enabled ? 'Mute mic' : 'Unmute mic';
  $('mic').classList.toggle('off', !t.enabled);
});

$('cam').addEventListener('click', () => {
  const t = conf.local && conf.local.getVideoTracks()[0];
  if (!t) return;
  t.enabled = !t.enabled;
  $('cam').textContent = t.enabled ? 'Camera off' : 'Camera on';
  $('cam').classList.toggle('off', !t.enabled);
});

$('leave').addEventListener('click', () => {
  send({ type: 'leave' });
  const ws = conf.ws;
  conf.ws = null;
  if (ws) ws.close();
  teardown();
  log('left');
});

$('prev').addEventListener('click', () => { conf.page -= 1; render(); });
$('next').addEventListener('click', () => { conf.page += 1; render(); });

if (params.get('room')) $('room').value = params.get('room');
if (params.get('name')) $('name').value = params.get('name');
if (params.get('simulcast') === '0') $('simulcast').checked = false;
const fixed = /^(\d+)x(\d+)$/.exec(params.get('tile') || '');
if (fixed) {
  document.body.classList.add('fixed-tiles');
  document.body.style.setProperty('--tile-w', `${fixed[1]}px`);
  document.body.style.setProperty('--tile-h', `${fixed[2]}px`);
}
