// Starts the real system (control plane in `local` mode, which supervises a media-plane
// node) on loopback with generated certificates, and launches Debian's Chromium.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PROFILE = process.env.E2E_PROFILE || 'debug';
export const bin = (name) => path.join(ROOT, 'target', PROFILE, name);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(fn, { timeout = 30000, interval = 250, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(interval);
  }
  throw new Error(`timed out waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/// HTTPS request trusting the system's development CA. Returns { status, headers, body, json }.
export function request(sys, method, urlPath, { headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request(
      `${sys.base}${urlPath}`,
      { method, headers, ca: sys.ca, servername: 'localhost' },
      (res) => {
        let data = '';
        res.on('data', (c) => { data += c; });
        res.on('end', () => {
          let json;
          try { json = JSON.parse(data); } catch { json = undefined; }
          resolve({ status: res.statusCode, headers: res.headers, body: data, json });
        });
      },
    );
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

export function basic(sys) {
  return `Basic ${Buffer.from(`${sys.apiKey}:${sys.apiSecret}`).toString('base64')}`;
}

/// utime + stime of a process, in clock ticks.
export function cpuTicks(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}

/// CPU use of a process over `ms`, in percent of one core.
export async function cpuPercent(pid, ms) {
  const a = cpuTicks(pid);
  await sleep(ms);
  const b = cpuTicks(pid);
  return ((b - a) / 100) / (ms / 1000) * 100; // USER_HZ = 100
}

/// `httpHost`: the address the control plane listens on (`0.0.0.0` to be reached from a
/// network namespace); `publicIp`: the media plane's advertised address(es), comma-separated.
export async function startSystem({ forceEpoll = false, env: extraEnv = {}, httpHost = '127.0.0.1', publicIp = '127.0.0.1' } = {}) {
  const port = await freePort();
  const turnPort = await freePort();
  const turnsPort = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'conf-e2e-'));
  const args = ['local', '--http-addr', `${httpHost}:${port}`, '--data-dir', dataDir, '--public-ip', publicIp, '--media-port-base', '0',
    '--turn-port', String(turnPort), '--turns-port', String(turnsPort)];
  if (forceEpoll) args.push('--force-epoll');
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info,str0m=warn', MEDIA_PLANE_BIN: bin('media-plane'), RELAY_BIN: bin('relay'), ...extraEnv };
  const proc = spawn(bin('control-plane'), args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d) => { output += d; });
  proc.stderr.on('data', (d) => { output += d; });
  const sys = {
    base: `https://127.0.0.1:${port}`,
    port,
    turnPort,
    turnsPort,
    dataDir,
    proc,
    output: () => output,
    async stop() {
      proc.kill('SIGTERM');
      await Promise.race([new Promise((r) => proc.once('exit', r)), sleep(3000)]);
      proc.kill('SIGKILL');
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
    mediaPid() {
      for (const d of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        try {
          const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
          const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
          if (ppid === proc.pid && fs.readFileSync(`/proc/${d}/comm`, 'utf8').trim().startsWith('media-plane')) return Number(d);
        } catch { /* raced with exit */ }
      }
      return null;
    },
  };
  try {
    await waitFor(() => fs.existsSync(path.join(dataDir, 'certs', 'ca.pem')) && fs.existsSync(path.join(dataDir, 'secrets.toml')), { what: 'certificates and secrets', timeout: 20000 });
    sys.ca = fs.readFileSync(path.join(dataDir, 'certs', 'ca.pem'));
    const secrets = fs.readFileSync(path.join(dataDir, 'secrets.toml'), 'utf8');
    sys.apiKey = /api_key\s*=\s*"([^"]+)"/.exec(secrets)[1];
    sys.apiSecret = /api_secret\s*=\s*"([^"]+)"/.exec(secrets)[1];
    sys.turnSecret = /turn_secret\s*=\s*"([^"]+)"/.exec(secrets)[1];
    sys.invite = /invite_secret\s*=\s*"([^"]+)"/.exec(secrets)[1];
    await waitFor(async () => (await request(sys, 'GET', '/healthz')).json?.nodes >= 1, { what: 'a registered media-plane node', timeout: 30000 });
  } catch (e) {
    console.error(output);
    await sys.stop();
    throw e;
  }
  return sys;
}

/// `executablePath`: another Chromium to run (e.g. a wrapper that runs it in a network namespace).
export async function launchBrowser({ executablePath = process.env.CHROMIUM || '/usr/bin/chromium' } = {}) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--ignore-certificate-errors', '--allow-loopback-in-peer-connection',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
}

/// `urlPath` with the open join's invite secret in its query, as in the link the server prints.
export function withInvite(urlPath, invite) {
  if (!invite) return urlPath;
  const url = new URL(urlPath, 'https://x');
  url.searchParams.set('invite', invite);
  return `${url.pathname}${url.search}${url.hash}`;
}

/// A page at the system's origin (a secure context) in a fresh browser context;
/// `init` (a function) runs in the page before its scripts, `viewport` sets its size.
export async function newPage(browser, sys, urlPath = '/', { init, viewport } = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, ...(viewport && { viewport }) });
  await context.grantPermissions(['camera', 'microphone'], { origin: sys.base });
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  await page.goto(`${sys.base}${withInvite(urlPath, sys.invite)}`);
  return page;
}

/// Joins `room` as `name` through the web app's form (`options` as for `newPage`).
export async function joinApp(browser, sys, name, room, query = '', options = {}) {
  const page = await newPage(browser, sys, `/${query}`, options);
  await page.fill('#name', name);
  await page.fill('#room', room);
  await page.click('#join-btn');
  await page.waitForSelector('#call:not([hidden])', { timeout: 15000 });
  return page;
}

export const remoteStats = (page) => page.evaluate(() => window.conf.remoteVideoStats());
export const remoteNames = (page) => page.$$eval('.tile:not([data-local])', (els) => els.map((e) => e.dataset.identity).sort());

/// Prints the system's log tail, or all of it to E2E_LOG_FILE when set.
export function dumpLog(sys) {
  if (process.env.E2E_LOG_FILE) {
    fs.writeFileSync(process.env.E2E_LOG_FILE, sys.output());
    console.error(`system log written to ${process.env.E2E_LOG_FILE}`);
  } else {
    console.error(sys.output().split('\n').slice(-80).join('\n'));
  }
}

/// Starts the system and a browser for one test, and stops both when the test ends.
export async function withSystem(t, options = {}) {
  const sys = await startSystem(options);
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close();
    await sys.stop();
  });
  return { sys, browser };
}

/// Defines `window.sdpExchange(pc, url, token)` in the page: the WHIP/WHEP offer/answer
/// exchange of RFC 9725 (POST the offer, apply the 201's answer).
export async function installSdpExchange(page) {
  await page.evaluate(() => {
    window.sdpExchange = async (pc, url, token) => {
      await pc.setLocalDescription(await pc.createOffer());
      const res = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/sdp' },
        body: pc.localDescription.sdp,
      });
      const answer = await res.text();
      if (res.status !== 201) return { status: res.status, answer };
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      window.pc = pc;
      return { status: res.status, location: res.headers.get('location'), type: res.headers.get('content-type') };
    };
  });
}
