// A small WebSocket client over TLS for the signaling tests that need no browser (Node 20
// has no WebSocket client): text messages as JSON, masked as RFC 6455 requires of a client;
// server pings are answered, a close frame ends it.
import crypto from 'node:crypto';
import tls from 'node:tls';

/** Opens `/ws` of `sys`; resolves with a client once the server has upgraded. */
export function openWs(sys) {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: '127.0.0.1', port: sys.port, ca: sys.ca, servername: 'localhost' });
    const key = crypto.randomBytes(16).toString('base64');
    let buf = Buffer.alloc(0);
    let upgraded = false;
    const client = {
      messages: [],
      closed: null,
      sock,
      /** Sends `msg` as one JSON text frame. */
      send(msg) { sock.write(frame(0x1, Buffer.from(JSON.stringify(msg)))); },
      /** Resolves with the first message (now or later) that `pred` accepts; rejects after `ms`. */
      next(pred, ms = 10000) { return waitMessage(client, pred, ms); },
      /** Ends the connection. */
      close() { sock.destroy(); },
    };
    sock.once('secureConnect', () => {
      sock.write(`GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString();
        if (!head.startsWith('HTTP/1.1 101')) { reject(new Error(`no upgrade: ${head.split('\r\n')[0]}`)); sock.destroy(); return; }
        upgraded = true;
        buf = buf.subarray(end + 4);
        resolve(client);
      }
      buf = readFrames(client, buf);
    });
    sock.on('error', (e) => { if (!upgraded) reject(e); });
    sock.on('close', () => { if (!client.closed) client.closed = { code: 1006, reason: '' }; });
  });
}

/** A masked client frame. */
function frame(opcode, payload) {
  const mask = crypto.randomBytes(4);
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, 0x80 | len])
    : Buffer.from([0x80 | opcode, 0x80 | 126, len >> 8, len & 0xff]);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  return Buffer.concat([head, mask, body]);
}

/** Takes the whole frames off `buf` into `client`; returns what is left. */
function readFrames(client, buf) {
  for (;;) {
    if (buf.length < 2) return buf;
    const opcode = buf[0] & 0x0f;
    let len = buf[1] & 0x7f;
    let at = 2;
    if (len === 126) { if (buf.length < 4) return buf; len = buf.readUInt16BE(2); at = 4; }
    else if (len === 127) { if (buf.length < 10) return buf; len = Number(buf.readBigUInt64BE(2)); at = 10; }
    if (buf.length < at + len) return buf;
    const payload = buf.subarray(at, at + len);
    buf = buf.subarray(at + len);
    if (opcode === 0x1) {
      try { client.messages.push(JSON.parse(payload.toString())); } catch { client.messages.push({ type: 'unparsed' }); }
    } else if (opcode === 0x9) {
      client.sock.write(frame(0xa, payload));
    } else if (opcode === 0x8) {
      client.closed = { code: payload.length >= 2 ? payload.readUInt16BE(0) : 1005, reason: payload.subarray(2).toString() };
      client.sock.end();
    }
  }
}

function waitMessage(client, pred, ms) {
  const end = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const poll = () => {
      const m = client.messages.find(pred);
      if (m) { resolve(m); return; }
      if (Date.now() > end) { reject(new Error(`no such message within ${ms} ms; got ${JSON.stringify(client.messages.map((x) => x.type))}, closed ${JSON.stringify(client.closed)}`)); return; }
      setTimeout(poll, 50);
    };
    poll();
  });
}
