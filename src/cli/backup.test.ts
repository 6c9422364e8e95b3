import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../test/harness.ts';

const CLI = path.resolve(import.meta.dirname, 'main.ts');

function cli(args: string[], env: Record<string, string>) {
  const result = spawnSync(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 120_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

// Each command is a process that opens the database; the embedded one takes seconds to open.
describe('customernode backup (the command)', { timeout: 180_000 }, () => {
  let t: TestDatabase;
  let env: Record<string, string>;
  let backupDir: string;
  let dataDir: string;

  beforeAll(async () => {
    t = await openTestDatabase();
    backupDir = mkdtempSync(path.join(os.tmpdir(), 'cn-cli-backups-'));
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'cn-cli-backup-data-'));
    const keys = { KEY_ENCRYPTION_KEY: randomBytes(32).toString('hex'), BACKUP_DIR: backupDir };
    // The embedded database is a data directory the command opens itself (no server holds it here).
    env = t.kind === 'postgres' ? { ...t.env, ...keys } : { NODE_ENV: 'test', DATA_DIR: dataDir, ...keys };
    if (t.kind === 'embedded') expect(cli(['migrate'], env).code).toBe(0);
  });
  afterAll(async () => {
    await t?.close();
    rmSync(backupDir, { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('creates, lists, verifies and restores, each printing one JSON document with --json', () => {
    const created = cli(['backup', 'create', '--json'], env);
    expect(created.code, created.stderr).toBe(0);
    const backup = JSON.parse(created.stdout) as { id: string; sizeBytes: number; wrappedKey?: string };
    expect(backup.sizeBytes).toBeGreaterThan(0);
    expect(backup).not.toHaveProperty('wrappedKey');

    const listed = JSON.parse(cli(['backup', 'list', '--json'], env).stdout) as { items: { id: string; createdAt: string }[] };
    expect(listed.items[0]!.id).toBe(backup.id);

    const verified = cli(['backup', 'verify', backup.id, '--json'], env);
    expect(verified.code, verified.stderr).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({ backupId: backup.id, ok: true });
    const drills = JSON.parse(cli(['backup', 'drills', '--json'], env).stdout) as { items: { backupId: string; ok: boolean }[] };
    expect(drills.items[0]).toMatchObject({ backupId: backup.id, ok: true });

    const to = t.newRestoreTarget();
    const restored = cli(['backup', 'restore', backup.id, '--to', to, '--json'], env);
    expect(restored.code, restored.stderr).toBe(0);
    expect(JSON.parse(restored.stdout)).toMatchObject({ backupId: backup.id, replaced: null });
    const refused = cli(['backup', 'restore', backup.id, '--to', to], env);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/--force/);
  });

  it('answers usage errors and an unknown backup with a one-line reason', () => {
    for (const args of [['backup'], ['backup', 'verify'], ['backup', 'verify', '../../etc/passwd'], ['backup', 'restore', '20260101T000000Z-abcdef']]) {
      const result = cli(args, env);
      expect(result.code, args.join(' ')).toBe(64);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
    }
    const missing = cli(['backup', 'restore', '20260101T000000Z-abcdef', '--to', t.newRestoreTarget()], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no backup 20260101T000000Z-abcdef/);
    const unconfigured = cli(['backup', 'create'], { ...env, BACKUP_DIR: '' });
    expect(unconfigured.code).toBe(64);
    expect(unconfigured.stderr).toMatch(/set BACKUP_DIR/);
  });

  it('a restore killed midway leaves the target unused, and running it again completes', async () => {
    const backup = JSON.parse(cli(['backup', 'create', '--json'], env).stdout) as { id: string };
    const to = t.newRestoreTarget();
    const stageName = t.kind === 'postgres' ? `${new URL(to).pathname.slice(1)}__restoring` : path.join(to, 'pgdata.restoring');
    const stageExists = async () =>
      t.kind === 'postgres' ? (await t.admin.query('select 1 from pg_database where datname = $1', [stageName])).length === 1 : existsSync(stageName);
    const child = spawn(process.execPath, [CLI, 'backup', 'restore', backup.id, '--to', to], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    const deadline = Date.now() + 60_000;
    while (!(await stageExists()) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(await stageExists()).toBe(true);
    child.kill('SIGKILL');
    await exited;
    // The target itself was never created, let alone used.
    if (t.kind === 'postgres') expect(await t.admin.query('select 1 from pg_database where datname = $1', [new URL(to).pathname.slice(1)])).toHaveLength(0);
    else expect(existsSync(path.join(to, 'pgdata'))).toBe(false);

    const again = cli(['backup', 'restore', backup.id, '--to', to, '--json'], env);
    expect(again.code, again.stderr).toBe(0);
    expect(await stageExists()).toBe(false);
  });

  it.runIf(process.env.TEST_DATABASE_URL)('refuses to dump through a role that row-level security would filter, naming the fix', () => {
    const result = cli(['backup', 'create'], { ...env, BACKUP_DATABASE_URL: env.DATABASE_URL! });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/cannot read past row-level security: set BACKUP_DATABASE_URL to a role with BYPASSRLS/);
  });

  it.runIf(process.env.TEST_DATABASE_URL)('works through a least-privileged backup role (BYPASSRLS, CREATEDB, pg_read_all_data): dump and drill, no superuser', async () => {
    await t.admin.query(`do $$ begin if not exists (select 1 from pg_roles where rolname = 'cn_test_backup') then create role cn_test_backup login bypassrls createdb nosuperuser; end if; end $$`);
    await t.admin.query('grant pg_read_all_data to cn_test_backup');
    const url = new URL(env.BACKUP_DATABASE_URL!);
    url.username = 'cn_test_backup';
    url.password = '';
    const roleEnv = { ...env, BACKUP_DATABASE_URL: url.toString() };
    const created = cli(['backup', 'create', '--json'], roleEnv);
    expect(created.code, created.stderr).toBe(0);
    const verified = cli(['backup', 'verify', (JSON.parse(created.stdout) as { id: string }).id, '--json'], roleEnv);
    expect(verified.code, verified.stderr).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({ ok: true });
  });
});
