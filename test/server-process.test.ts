import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, PASSWORD, type TestDatabase } from './harness.ts';

// Threats: a deploy (SIGTERM) loses writes the server already acknowledged; two processes
// open the same embedded data directory and corrupt it.
const MAIN = path.resolve(import.meta.dirname, '../src/main.ts');

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  return port;
}

interface Running {
  child: ChildProcess;
  base: string;
  output: () => string;
}

async function startServer(env: Record<string, string>): Promise<Running> {
  const port = await freePort();
  const child = spawn(process.execPath, [MAIN], { env: { PATH: process.env.PATH ?? '', ...env, PORT: String(port), LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`server exited early: ${output}`);
    try {
      if ((await fetch(`${base}/healthz`)).ok) return { child, base, output: () => output };
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`server did not become ready: ${output}`);
}

describe('the server process', () => {
  let t: TestDatabase;
  let env: Record<string, string>;
  let dataDir: string;

  beforeAll(async () => {
    t = await openTestDatabase();
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'cn-proc-'));
    env = t.kind === 'postgres' ? { ...t.env, DATA_DIR: dataDir } : { NODE_ENV: 'test', DATA_DIR: dataDir };
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('on SIGTERM finishes in-flight requests and loses no acknowledged write', async () => {
    const first = await startServer(env);
    if (t.kind === 'embedded') {
      // A second process on the same data directory refuses with a clear message.
      const second = spawn(process.execPath, [MAIN], { env: { PATH: process.env.PATH ?? '', ...env, PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      second.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      const [code] = (await once(second, 'exit')) as [number];
      expect(code).not.toBe(0);
      expect(err).toMatch(/in use by another CustomerNode process/);
    }
    const signup = await fetch(`${first.base}/api/v1/auth/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'shutdown@example.com', password: PASSWORD, name: 'S', tenantName: 'T' }),
    });
    expect(signup.status).toBe(201);
    const { tenant, csrfToken } = (await signup.json()) as { tenant: { id: string }; csrfToken: string };
    const cookie = signup.headers.get('set-cookie')!.split(';')[0]!;
    const headers = { 'content-type': 'application/json', cookie, 'x-csrf-token': csrfToken };
    // SIGTERM as soon as the first write is acknowledged: the others are in flight then.
    let signalled = false;
    const writes = Array.from({ length: 60 }, (_, i) =>
      fetch(`${first.base}/api/v1/tenants/${tenant.id}/accounts`, { method: 'POST', headers, body: JSON.stringify({ name: `acct-${i}` }) })
        .then(async (r) => {
          if (r.status !== 201) return null;
          const { id } = (await r.json()) as { id: string };
          if (!signalled) {
            signalled = true;
            first.child.kill('SIGTERM');
          }
          return id;
        })
        .catch(() => null),
    );
    const acknowledged = (await Promise.all(writes)).filter((id): id is string => id !== null);
    const [code] = (await once(first.child, 'exit')) as [number];
    expect(code).toBe(0);
    expect(acknowledged.length).toBeGreaterThan(0);

    const again = await startServer(env);
    try {
      const login = await fetch(`${again.base}/api/v1/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: 'shutdown@example.com', password: PASSWORD }),
      });
      const cookie2 = login.headers.get('set-cookie')!.split(';')[0]!;
      const stored = new Set<string>();
      let cursor: string | null = null;
      do {
        const page = await fetch(`${again.base}/api/v1/tenants/${tenant.id}/accounts?limit=100${cursor ? `&cursor=${cursor}` : ''}`, { headers: { cookie: cookie2 } });
        const body = (await page.json()) as { items: { id: string }[]; nextCursor: string | null };
        for (const item of body.items) stored.add(item.id);
        cursor = body.nextCursor;
      } while (cursor);
      for (const id of acknowledged) expect(stored.has(id)).toBe(true);
    } finally {
      again.child.kill('SIGTERM');
      await once(again.child, 'exit');
    }
  }, 120_000);
});
