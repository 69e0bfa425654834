// The README's run command takes its configuration from the environment: `control-plane`
// with no subcommand (what `cargo run --release` runs) and only variables set serves with
// the API key and secret it was given, and generates none. (Each documented variable is
// checked one by one in control-plane/tests/config.rs.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bin, freePort, request, sleep, waitFor } from './harness.js';

test('with no subcommand, the control plane runs the whole system from the environment', { timeout: 90000 }, async (t) => {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'conf-env-'));
  const apiKey = 'APIfromTheEnvironment';
  const apiSecret = 'an-api-secret-from-the-environment-0123456789';
  const env = {
    ...process.env,
    HTTP_ADDR: `127.0.0.1:${port}`, DATA_DIR: dataDir, API_KEY: apiKey, API_SECRET: apiSecret,
    PUBLIC_IP: '127.0.0.1', MEDIA_PORT_BASE: '0', NO_RELAY: 'true', MEDIA_CORES: '1',
    MEDIA_PLANE_BIN: bin('media-plane'), RUST_LOG: 'info,str0m=warn',
  };
  const proc = spawn(bin('control-plane'), [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d) => { output += d; });
  proc.stderr.on('data', (d) => { output += d; });
  t.after(async () => {
    proc.kill('SIGTERM');
    await Promise.race([new Promise((r) => proc.once('exit', r)), sleep(3000)]);
    proc.kill('SIGKILL');
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  try {
    const caPath = path.join(dataDir, 'certs', 'ca.pem');
    await waitFor(() => fs.existsSync(caPath), { what: 'the development CA in DATA_DIR', timeout: 30000 });
    const sys = { base: `https://127.0.0.1:${port}`, ca: fs.readFileSync(caPath) };
    const auth = (k, s) => ({ authorization: `Basic ${Buffer.from(`${k}:${s}`).toString('base64')}` });
    const health = await waitFor(async () => {
      const r = await request(sys, 'GET', '/healthz');
      return r.json?.nodes >= 1 && r.json;
    }, { what: 'a media-plane node', timeout: 30000 });
    assert.ok(health.nodes >= 1);
    assert.equal((await request(sys, 'GET', '/api/rooms', { headers: auth(apiKey, apiSecret) })).status, 200, 'API_KEY and API_SECRET are the credentials');
    assert.equal((await request(sys, 'GET', '/api/rooms', { headers: auth(apiKey, `${apiSecret}x`) })).status, 401);
    const secrets = fs.readFileSync(path.join(dataDir, 'secrets.toml'), 'utf8');
    assert.doesNotMatch(secrets, /api_key/, 'no API key was generated');
    assert.match(output, new RegExp(`API key:\\s+${apiKey}`), 'the banner shows the configured key');
    assert.doesNotMatch(output, /TURN relay:/, 'NO_RELAY: no relay');
  } catch (e) {
    console.error(output.split('\n').slice(-60).join('\n'));
    throw e;
  }
});
