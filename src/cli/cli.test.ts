import { PGlite } from '@electric-sql/pglite';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../test/harness.ts';
import { recordTenantEvent, SYSTEM_ACTOR } from '../kernel/audit/record.ts';
import { sealAllLogs } from '../kernel/audit/sealer.ts';
import { loadConfig } from '../kernel/config/config.ts';
import { openDatabase, type Database } from '../kernel/db/database.ts';
import { lockDataDir } from '../kernel/db/lock.ts';
import { MIGRATIONS } from '../kernel/db/migrations.ts';

const CLI = path.resolve(import.meta.dirname, 'main.ts');

function cli(args: string[], env: Record<string, string>) {
  const result = spawnSync(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

// Each command is a process that opens the database; creating and migrating an embedded one takes seconds.
describe('customernode migrate', { timeout: 120_000 }, () => {
  let t: TestDatabase;
  let dataDir: string;
  beforeAll(async () => {
    t = await openTestDatabase();
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'cn-cli-'));
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('applies pending migrations once and prints one JSON document with --json', () => {
    const env = t.kind === 'postgres' ? { ...t.env } : { NODE_ENV: 'test', DATA_DIR: dataDir };
    const first = cli(['migrate', '--json'], env);
    expect(first.code, first.stderr).toBe(0);
    // The PostgreSQL test database is a clone of an already migrated template.
    expect(JSON.parse(first.stdout)).toEqual({ applied: t.kind === 'postgres' ? [] : MIGRATIONS.map((m) => m.version) });
    const second = cli(['migrate', '--json'], env);
    expect(JSON.parse(second.stdout)).toEqual({ applied: [] });
  });

  it('refuses, with a clear one-line reason, a data directory held by a running server', () => {
    const held = mkdtempSync(path.join(os.tmpdir(), 'cn-cli-held-'));
    const lock = lockDataDir(held);
    try {
      // Our own pid holds the lock, as a running server would.
      const result = cli(['migrate'], { NODE_ENV: 'test', DATA_DIR: held });
      expect(result.code).not.toBe(0);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).toMatch(/in use by another CustomerNode process/);
    } finally {
      lock.release();
      rmSync(held, { recursive: true, force: true });
    }
  });

  it('rejects unknown commands and bad configuration with a non-zero exit', () => {
    const unknown = cli(['frobnicate'], { NODE_ENV: 'test', DATA_DIR: dataDir });
    expect(unknown.code).toBe(64);
    expect(unknown.stderr).toMatch(/unknown command/);
    const badConfig = cli(['migrate'], { NODE_ENV: 'test', DATABASE_URL: 'mysql://x/y' });
    expect(badConfig.code).toBe(1);
    expect(badConfig.stderr).toMatch(/DATABASE_URL/);
  });
});

describe('customernode audit verify', { timeout: 120_000 }, () => {
  let t: TestDatabase | undefined;
  let env: Record<string, string>;
  let superQuery: (text: string, params?: unknown[]) => Promise<unknown>;
  let close: () => Promise<void>;
  let tenantId: string;
  let secondId: string;
  const alertId = randomUUID();

  beforeAll(async () => {
    t = await openTestDatabase();
    let db: Database;
    if (t.kind === 'postgres') {
      db = t.db;
      env = { ...t.env };
      superQuery = (text, params) => t!.admin.query(text, params);
      close = async () => {};
    } else {
      // The CLI opens DATA_DIR itself: seed a real data directory, then let go of it.
      const dir = mkdtempSync(path.join(os.tmpdir(), 'cn-cli-audit-'));
      env = { NODE_ENV: 'test', DATA_DIR: dir };
      const pglite = await PGlite.create(path.join(dir, 'pgdata'));
      db = await openDatabase({ config: loadConfig(env), logger: pino({ level: 'silent' }), pglite });
      superQuery = (text, params) => pglite.query(text, params);
      close = async () => {
        await db.close();
        if (!pglite.closed) await pglite.close();
      };
    }
    const ids: string[] = [];
    for (const name of ['CLI audit A', 'CLI audit B']) {
      const id = randomUUID();
      await superQuery('insert into tenants (id, name) values ($1, $2)', [id, name]);
      for (let i = 0; i < 5; i++) {
        await db.withTenant(id, (tx) => recordTenantEvent(tx, id, SYSTEM_ACTOR, { requestId: null, ip: null, userAgent: null }, { action: 'test.event', metadata: { i } }));
      }
      ids.push(id);
    }
    [tenantId, secondId] = ids as [string, string];
    await sealAllLogs(db);
    await superQuery('alter table audit_seals disable trigger audit_seals_append_only');
    await superQuery(`update audit_seals set canonical_metadata = '{"i":99}' where tenant_id = $1 and seq = 2`, [secondId]);
    await superQuery('alter table audit_seals enable trigger audit_seals_append_only');
    await superQuery(`insert into platform_security_alerts (id, rule, severity, subject) values ($1, 'credential_stuffing', 'high', 'ip:192.0.2.7')`, [alertId]);
    await close();
  });
  afterAll(async () => {
    await t?.close();
    if (env?.DATABASE_URL === undefined && env?.DATA_DIR) rmSync(env.DATA_DIR, { recursive: true, force: true });
  });

  it('checks one tenant chain and prints one JSON document', () => {
    const result = cli(['audit', 'verify', '--tenant', tenantId, '--json'], env);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ ok: true, logs: [{ log: 'tenant', tenantId, ok: true, count: 5, head: { seq: 5 } }] });
  });

  it('exits non-zero with one line naming the first bad event of a tampered chain', async () => {
    const result = cli(['audit', 'verify'], env);
    expect(result.code).toBe(1);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(new RegExp(`tenant ${secondId}: first bad event at seq 2 \\(id [0-9a-f-]{36}\\): hash mismatch`));
    expect(result.stdout).toMatch(new RegExp(`tenant ${tenantId}: ok, 5 events`));
    expect(result.stdout).toMatch(/platform: ok/);
  });

  it('alerts list prints the operators view as one JSON document and refuses an unknown status', () => {
    const result = cli(['alerts', 'list', '--status', 'open', '--json'], env);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({ items: [expect.objectContaining({ scope: 'platform', id: alertId, rule: 'credential_stuffing', status: 'open' })] });
    expect(JSON.parse(cli(['alerts', 'list', '--status', 'resolved', '--json'], env).stdout)).toEqual({ items: [] });
    expect(cli(['alerts', 'list', '--status', 'sleeping'], env).code).toBe(64);
  });

  it('alerts ack and resolve move a platform alert on; a resolved one stays resolved, and an unknown or malformed id is refused', () => {
    const ack = cli(['alerts', 'ack', alertId, '--json'], env);
    expect(ack.code, ack.stderr).toBe(0);
    expect(JSON.parse(ack.stdout)).toEqual({ id: alertId, rule: 'credential_stuffing', before: 'open', status: 'acknowledged' });
    const resolve = cli(['alerts', 'resolve', alertId], env);
    expect(resolve.code, resolve.stderr).toBe(0);
    expect(resolve.stdout.trim()).toBe(`platform alert ${alertId} (credential_stuffing): acknowledged -> resolved`);
    const again = cli(['alerts', 'ack', alertId], env);
    expect(again.code).toBe(1);
    expect(again.stderr.trim()).toBe(`customernode: platform alert ${alertId} is resolved, and a resolved alert stays resolved`);
    const unknown = cli(['alerts', 'resolve', randomUUID()], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/no platform alert/);
    expect(cli(['alerts', 'ack', 'not-an-id'], env).code).toBe(64);
  });

  it('refuses a tenant that is not a UUID', () => {
    const result = cli(['audit', 'verify', '--tenant', 'nope'], env);
    expect(result.code).toBe(64);
  });
});
