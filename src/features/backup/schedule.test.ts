import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../../test/harness.ts';
import { loadConfig } from '../../kernel/config/config.ts';
import { createKeyring } from '../../kernel/crypto/envelope.ts';
import { evaluateAlerts, listAllAlerts } from '../monitoring/index.ts';
import { listBackups, type BackupContext } from './backups.ts';
import { startBackupSchedule, type BackupScheduler } from './schedule.ts';
import { DirectoryTarget, type BackupTarget } from './targets.ts';

const quiet = pino({ level: 'silent' });

async function platformAlerts(t: TestDatabase, rule: string) {
  await evaluateAlerts(t.db);
  return (await listAllAlerts(t.db)).filter((alert) => alert.rule === rule && alert.scope === 'platform');
}

// Threat: backups silently stop (a full disk, a revoked credential, a schedule nobody watches)
// and the loss is discovered during the incident that needs them.
describe('scheduled backups', { timeout: 120_000 }, () => {
  let t: TestDatabase;
  let backupDir: string;
  let ctx: BackupContext;
  let scheduler: BackupScheduler;

  beforeAll(async () => {
    t = await openTestDatabase();
    backupDir = mkdtempSync(path.join(os.tmpdir(), 'cn-scheduled-'));
    const config = loadConfig({ ...t.env, BACKUP_DIR: backupDir, BACKUP_SCHEDULE: '0 2 * * *', BACKUP_RETAIN_COUNT: '1', BACKUP_RETAIN_DAYS: '7' });
    ctx = { db: t.db, config, target: new DirectoryTarget(backupDir), provider: createKeyring(config, { warn() {} }).provider };
    scheduler = startBackupSchedule(ctx, quiet)!;
  });
  afterAll(async () => {
    scheduler?.stop();
    await t?.close();
    rmSync(backupDir, { recursive: true, force: true });
  });

  it('raises a backup_missed alert once when no backup followed the last scheduled time', async () => {
    const now = new Date();
    await scheduler.runWatchdog(now);
    await scheduler.runWatchdog(now); // the same missed slot is reported once
    const events = await t.admin.query<{ n: number }>(`select count(*)::int as n from platform_audit_events where action = 'backup.missed'`);
    expect(events[0]!.n).toBe(1);
    const alerts = await platformAlerts(t, 'backup_missed');
    expect(alerts).toHaveLength(1);
    expect(alerts[0]).toMatchObject({ severity: 'high', status: 'open' });
  });

  it('a scheduled run writes a backup, prunes by retention (count and age), and clears the missed state', async () => {
    await scheduler.runBackup();
    const [first] = await listBackups(ctx.target);
    const old = '20200101T000000Z-0a0a0a';
    const descriptor = JSON.parse(readFileSync(path.join(backupDir, 'backups', `${first!.id}.json`), 'utf8')) as Record<string, unknown>;
    writeFileSync(path.join(backupDir, 'backups', `${old}.json`), JSON.stringify({ ...descriptor, id: old, createdAt: '2020-01-01T00:00:00.000Z' }));
    writeFileSync(path.join(backupDir, 'backups', `${old}.cnb`), 'old');
    await scheduler.runBackup();
    const ids = (await listBackups(ctx.target)).map((backup) => backup.id);
    expect(ids).not.toContain(old);
    expect(existsSync(path.join(backupDir, 'backups', `${old}.cnb`))).toBe(false);
    // Younger than the retention age: kept even beyond the count.
    expect(ids).toContain(first!.id);
    expect(ids).toHaveLength(2);
    const pruned = await t.admin.query<{ metadata: { removed: string[] } }>(`select metadata from platform_audit_events where action = 'backup.pruned'`);
    expect(pruned[0]!.metadata.removed).toEqual([old]);
    await scheduler.runWatchdog(new Date());
    expect((await t.admin.query<{ n: number }>(`select count(*)::int as n from platform_audit_events where action = 'backup.missed'`))[0]!.n).toBe(1);
  });

  it('a failed scheduled backup raises a backup_failed alert', async () => {
    const broken: BackupTarget = {
      description: 'a target that refuses writes',
      write: () => Promise.reject(new Error('no space left on device')),
      read: (name) => ctx.target.read(name),
      list: (prefix) => ctx.target.list(prefix),
      remove: () => Promise.resolve(),
    };
    const failing = startBackupSchedule({ ...ctx, target: broken }, quiet)!;
    try {
      await failing.runBackup();
    } finally {
      failing.stop();
    }
    const alerts = await platformAlerts(t, 'backup_failed');
    expect(alerts).toHaveLength(1);
  });

  it('a restore drill that fails raises a restore_drill_failed alert', async () => {
    const [newest] = await listBackups(ctx.target);
    const file = path.join(backupDir, 'backups', `${newest!.id}.cnb`);
    const bytes = readFileSync(file);
    bytes[bytes.length - 20]! ^= 0xff;
    writeFileSync(file, bytes);
    await scheduler.runDrill();
    const alerts = await platformAlerts(t, 'restore_drill_failed');
    expect(alerts).toHaveLength(1);
  });
});
