import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { Agent, fetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../../../test/harness.ts';

/** One handshake with openssl s_client; ok when a session was negotiated. */
function handshake(port: number, args: string[]): Promise<{ ok: boolean; protocol: string | null; cipher: string | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stdin.end('Q\n');
    const timer = setTimeout(() => child.kill(), 10_000);
    child.on('close', () => {
      clearTimeout(timer);
      // "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384"; "New, (NONE), Cipher is (NONE)" when refused.
      const negotiated = /New, (\S+), Cipher is (\S+)/.exec(output);
      const protocol = negotiated?.[1] ?? null;
      const cipher = negotiated?.[2] ?? null;
      resolve({ ok: cipher !== null && cipher !== '(NONE)', protocol, cipher, output });
    });
  });
}

// Lets the client offer TLS 1.0/1.1 and CBC suites at all (OpenSSL 3 refuses them at its default level).
const LEGACY_CLIENT = ['-cipher', 'DEFAULT@SECLEVEL=0'];

describe('HTTPS served by the app', () => {
  let dir: string;
  let t: TestApp;
  let port: number;
  let control: TlsServer;
  let controlPort: number;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'cn-tls-'));
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { encoding: 'utf8' });
    expect(made.status, made.stderr).toBe(0);
    t = await startTestApp({ env: { TLS_CERT_FILE: path.join(dir, 'cert.pem'), TLS_KEY_FILE: path.join(dir, 'key.pem') } });
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    port = (t.app.server.address() as AddressInfo).port;
    // A control server that allows everything: shows the client really offers TLS 1.0 and 1.1.
    control = createTlsServer({ cert: readFileSync(path.join(dir, 'cert.pem')), key: readFileSync(path.join(dir, 'key.pem')), minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }, (socket) => socket.end());
    await new Promise<void>((resolve) => control.listen(0, '127.0.0.1', resolve));
    controlPort = (control.address() as AddressInfo).port;
  }, 60_000);
  afterAll(async () => {
    await t?.close();
    await new Promise((resolve) => control?.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses TLS 1.0 and 1.1, which the same client negotiates with a permissive server', async () => {
    for (const version of ['-tls1', '-tls1_1']) {
      const permissive = await handshake(controlPort, [version, ...LEGACY_CLIENT]);
      expect(permissive.ok, permissive.output).toBe(true);
      const ours = await handshake(port, [version, ...LEGACY_CLIENT]);
      expect(ours.ok, ours.output).toBe(false);
    }
  });

  it('accepts TLS 1.2 and 1.3, with AEAD suites only', async () => {
    const v12 = await handshake(port, ['-tls1_2']);
    expect(v12.ok, v12.output).toBe(true);
    expect(v12.protocol).toBe('TLSv1.2');
    expect(v12.cipher).toMatch(/GCM|CHACHA20-POLY1305/);
    const v13 = await handshake(port, ['-tls1_3']);
    expect(v13.ok, v13.output).toBe(true);
    expect(v13.protocol).toBe('TLSv1.3');
    // A CBC suite alone: TLS 1.2 without an AEAD cipher is refused (the control server takes it).
    expect((await handshake(controlPort, ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-SHA:@SECLEVEL=0'])).ok).toBe(true);
    expect((await handshake(port, ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-SHA:@SECLEVEL=0'])).ok).toBe(false);
  });

  it('answers over HTTPS with HSTS of a year or more and Secure session cookies', async () => {
    const response = await fetch(`https://127.0.0.1:${port}/api/v1/auth/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: `tls-${Date.now()}@example.com`, password: 'correct horse battery staple 9', name: 'TLS', tenantName: 'TLS' }),
      // The certificate is our own throw-away one.
      dispatcher: new Agent({ connect: { rejectUnauthorized: false } }),
    });
    expect(response.status).toBe(201);
    const maxAge = Number(/max-age=(\d+)/.exec(response.headers.get('strict-transport-security') ?? '')?.[1]);
    expect(maxAge).toBeGreaterThanOrEqual(31_536_000);
    const cookie = response.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/cn_session=/);
    expect(cookie).toMatch(/;\s*Secure/i);
    expect(cookie).toMatch(/;\s*HttpOnly/i);
  });
});
