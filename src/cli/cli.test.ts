import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../test/harness.ts';
import { lockDataDir } from '../kernel/db/lock.ts';
import { MIGRATIONS } from '../kernel/db/migrations.ts';

const CLI = path.resolve(import.meta.dirname, 'main.ts');

function cli(args: string[], env: Record<string, string>) {
  const result = spawnSync(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('customernode migrate', () => {
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
