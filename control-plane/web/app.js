// The conference web app: join form, video grid, mute, camera and leave.
// Signaling protocol: docs/signaling.md. Plain ES module, no build step.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const conf = {
  ws: null,
  pc: null,
  local: null,
  session: null,
  joinStartedAt: 0,
  firstFrameAt: null,
  tiles: new Map(),      // session -> { el, video, identity, firstFrameAt }
  trackSession: new Map(), // remote track id -> session
  queue: Promise.resolve(),
};
window.conf = conf;

function log(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $('log').prepend(li);
}

function showError(text) {
  $('error').textContent = text;
}

function addTile(session, identity, isLocal) {
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
  el.append(video, name);
  $('grid').append(el);
  t = { el, video, identity, firstFrameAt: null };
  conf.tiles.set(session, t);
  return t;
}

function removeTile(session) {
  const t = conf.tiles.get(session);
  if (!t) return;
  t.el.remove();
  conf.tiles.delete(session);
}

function watchFirstFrame(t) {
  if (!t.video.requestVideoFrameCallback) return;
  t.video.requestVideoFrameCallback(() => {
    t.firstFrameAt = performance.now();
    if (conf.firstFrameAt === null) conf.firstFrameAt = t.firstFrameAt;
  });
}

// Per remote participant: frames decoded so far, from getStats (used by tests and the UI).
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

function send(msg) {
  if (conf.ws && conf.ws.readyState === WebSocket.OPEN) conf.ws.send(JSON.stringify(msg));
}

async function getMedia() {
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
  } catch (e) {
    log(`no camera/microphone: ${e.message}`);
    return null;
  }
}

async function onJoined(msg) {
  conf.session = msg.session;
  $('where').textContent = `room ${msg.room} as ${msg.identity}`;
  $('join').hidden = true;
  $('call').hidden = false;
  const me = addTile(msg.session, msg.identity, true);
  for (const p of msg.participants) addTile(p.session, p.identity, false);
  log(`joined ${msg.room} (${msg.participants.length} already here)`);

  const config = { iceServers: msg.ice_servers || [], bundlePolicy: 'max-bundle' };
  if (params.get('relay') === '1') config.iceTransportPolicy = 'relay';
  const pc = new RTCPeerConnection(config);
  conf.pc = pc;
  pc.ontrack = (e) => {
    const stream = e.streams[0];
    if (!stream) return;
    conf.trackSession.set(e.track.id, stream.id);
    const t = conf.tiles.get(stream.id) || addTile(stream.id, stream.id, false);
    if (t.video.srcObject !== stream) {
      t.video.srcObject = stream;
      watchFirstFrame(t);
    }
  };
  pc.onconnectionstatechange = () => log(`connection ${pc.connectionState}`);

  if (msg.grants.can_publish) {
    conf.local = await getMedia();
  }
  if (conf.local) {
    me.video.srcObject = conf.local;
    for (const track of conf.local.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [conf.local] });
  } else {
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
  }
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  send({ type: 'offer', sdp: offer.sdp });
}

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
      addTile(msg.participant.session, msg.participant.identity, false);
      log(`${msg.participant.identity} joined`);
      return;
    case 'participant_left':
      removeTile(msg.session);
      log(`${msg.identity} left`);
      return;
    case 'track_published':
      log(`${msg.identity} published ${msg.kind}`);
      return;
    case 'error':
      showError(`${msg.code}: ${msg.message}`);
      log(`error ${msg.code}: ${msg.message}`);
      return;
    case 'pong':
      return;
    default:
      log(`unknown message ${msg.type}`);
  }
}

function teardown() {
  if (conf.pc) conf.pc.close();
  if (conf.local) conf.local.getTracks().forEach((t) => t.stop());
  for (const s of [...conf.tiles.keys()]) removeTile(s);
  Object.assign(conf, { pc: null, local: null, session: null, ws: null, firstFrameAt: null });
  conf.trackSession.clear();
  $('call').hidden = true;
  $('join').hidden = false;
  $('where').textContent = '';
}

async function join(name, room) {
  showError('');
  conf.joinStartedAt = performance.now();
  const res = await fetch('/app/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name, room }),
  });
  const body = await res.json();
  if (!res.ok) {
    showError(`${body.error}: ${body.message}`);
    return;
  }
  const ws = new WebSocket(`wss://${location.host}/ws`);
  conf.ws = ws;
  ws.onopen = () => send({ type: 'join', token: body.token });
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

if (params.get('room')) $('room').value = params.get('room');
if (params.get('name')) $('name').value = params.get('name');
