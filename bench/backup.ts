/**
 * Backup and restore throughput on real PostgreSQL, against plain pg_dump / pg_restore of the
 * same database in the same run (issue 7: target >= 0.8 each), and the recovery time of a
 * restore drill (backup verify).
 *
 *  1. Generates a database of BENCH_BACKUP_MB (default 1024) MB: one tenant's accounts with a
 *     ~1 KB description each, through the owner role with SQL.
 *  2. Baseline: `pg_dump --format=custom` (same flags as a backup, key tables' data excluded)
 *     into a file, then `pg_restore --single-transaction --exit-on-error` of that file into a
 *     new database.
 *  3. CustomerNode: `createBackup` (dump streamed through the archive and STREAM encryption into
 *     BACKUP_DIR), `restoreBackup` into a new database, then `verifyBackup` (restore into a
 *     scratch database plus every check), timed.
 *  Rounds alternate baseline and ours (BENCH_BACKUP_ROUNDS, default 2); the best of each counts.
 *  MB/s is database size (pg_database_size) per second.
 *
 * Run alone: `node bench/backup.ts` (BENCH_ADMIN_URL, default postgres://postgres@127.0.0.1:5432/postgres).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { createBackup, DirectoryTarget, listBackups, restoreBackup, verifyBackup } from '../src/features/backup/index.ts';
import { loadConfig } from '../src/kernel/config/config.ts';
import { loadKeyProvider } from '../src/kernel/crypto/providers.ts';
import { openDatabase } from '../src/kernel/db/database.ts';
import { KEY_TABLES } from '../src/kernel/db/snapshot.ts';

export const BACKUP_TARGET = 0.8;

export interface BackupBenchResult {
  readonly databaseMB: number;
  readonly archiveMB: number;
  readonly plainDumpS: number;
  readonly plainRestoreS: number;
  readonly backupS: number;
  readonly restoreS: number;
  readonly verifyS: number;
  readonly verifyRestoreMs: number;
  readonly backupRatio: number;
  readonly restoreRatio: number;
}

function run(tool: string, args: string[], env: Record<string, string> = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(tool, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: process.env.PATH ?? '', ...env } });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${tool} exit ${code}: ${stderr.slice(-500)}`))));
  });
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

export async function measureBackup(options: { adminUrl: string; megabytes: number; rounds: number; log: (line: string) => void }): Promise<BackupBenchResult> {
  const { adminUrl, log } = options;
  const id = randomBytes(4).toString('hex');
  const source = `cn_bench_bk_${id}`;
  const owner = 'cn_bench_owner';
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cn-bench-backup-'));
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  const url = (database: string, user?: string) => {
    const parsed = new URL(adminUrl);
    parsed.pathname = `/${database}`;
    if (user) {
      parsed.username = user;
      parsed.password = '';
    }
    return parsed.toString();
  };
  const created: string[] = [source];
  try {
    await admin.query(`do $$ begin if not exists (select 1 from pg_roles where rolname = '${owner}') then create role ${owner} login createrole; end if; end $$`);
    await admin.query(`create database ${source} owner ${owner}`);
    const env = { NODE_ENV: 'test', DATA_DIR: path.join(dir, 'data'), DATABASE_URL: url(source, owner), BACKUP_DATABASE_URL: url(source), BACKUP_DIR: path.join(dir, 'backups'), KEY_ENCRYPTION_KEY: randomBytes(32).toString('hex') };
    const config = loadConfig(env);
    const db = await openDatabase({ config, logger: pino({ level: 'silent' }) });
    try {
      log(`backup: generating a ${options.megabytes} MB database`);
      const seed = new pg.Client({ connectionString: url(source) });
      await seed.connect();
      const tenant = (await seed.query<{ id: string }>(`insert into tenants (name) values ('Bench backup') returning id`)).rows[0]!.id;
      // ~1.2 KB per row on disk with its index entries.
      const rows = Math.ceil((options.megabytes * 1024 * 1024) / 1250);
      for (let done = 0; done < rows; done += 100_000) {
        // Random hex, so the dump's compression has real work (about 2:1), as with real text.
        await seed.query(
          `insert into accounts (tenant_id, name, description)
           select $1, 'Account ' || g, md5(random()::text) || md5(random()::text) || repeat(md5(random()::text) || md5(g::text), 14)
           from generate_series($2::int, $3::int) g`,
          [tenant, done, Math.min(rows, done + 100_000) - 1],
        );
      }
      await seed.query('vacuum analyze');
      const size = Number((await seed.query<{ n: string }>('select pg_database_size(current_database()) as n')).rows[0]!.n);
      await seed.end();
      const databaseMB = size / 2 ** 20;
      const ctx = { db, config, target: new DirectoryTarget(config.backup.dir!), provider: loadKeyProvider(config, { warn() {} }) };
      let best = { plainDumpS: Infinity, plainRestoreS: Infinity, backupS: Infinity, restoreS: Infinity };
      let archiveMB = 0;
      for (let round = 1; round <= options.rounds; round++) {
        const dumpFile = path.join(dir, `plain-${round}.pgdump`);
        const plainDumpS = await timed(() => run('pg_dump', ['--format=custom', '--no-password', ...KEY_TABLES.map((t) => `--exclude-table-data=public.${t}`), `--file=${dumpFile}`, `--dbname=${url(source)}`]));
        const plainTarget = `cn_bench_bk_${id}_p${round}`;
        created.push(plainTarget);
        await admin.query(`create database ${plainTarget} owner ${owner}`);
        const plainRestoreS = await timed(() => run('pg_restore', ['--exit-on-error', '--single-transaction', '--no-password', `--dbname=${url(plainTarget)}`, dumpFile]));
        rmSync(dumpFile);
        let backupId = '';
        const backupS = await timed(async () => {
          const backup = await createBackup(ctx);
          backupId = backup.id;
          archiveMB = backup.sizeBytes / 2 ** 20;
        });
        const ourTarget = `cn_bench_bk_${id}_o${round}`;
        created.push(ourTarget);
        const restoreS = await timed(() => restoreBackup(ctx, backupId, url(ourTarget), false));
        log(`backup round ${round}: pg_dump ${plainDumpS.toFixed(1)} s, backup ${backupS.toFixed(1)} s; pg_restore ${plainRestoreS.toFixed(1)} s, restore ${restoreS.toFixed(1)} s`);
        best = { plainDumpS: Math.min(best.plainDumpS, plainDumpS), plainRestoreS: Math.min(best.plainRestoreS, plainRestoreS), backupS: Math.min(best.backupS, backupS), restoreS: Math.min(best.restoreS, restoreS) };
        if (round < options.rounds) await ctx.target.remove(`backups/${backupId}.cnb`);
      }
      const newest = (await listBackups(ctx.target))[0]!;
      let verifyRestoreMs = 0;
      const verifyS = await timed(async () => {
        const report = await verifyBackup(ctx, newest.id);
        if (!report.ok) throw new Error(`the drill failed: ${report.problems.join('; ')}`);
        verifyRestoreMs = report.restoreMs;
      });
      return {
        databaseMB,
        archiveMB,
        ...best,
        verifyS,
        verifyRestoreMs,
        backupRatio: best.plainDumpS / best.backupS,
        restoreRatio: best.plainRestoreS / best.restoreS,
      };
    } finally {
      await db.close();
    }
  } finally {
    for (const name of created.reverse()) await admin.query(`drop database if exists ${name} with (force)`).catch(() => {});
    await admin.end();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function backupLine(result: BackupBenchResult): string {
  const mbs = (seconds: number) => (result.databaseMB / seconds).toFixed(1);
  const verdict = (ratio: number) => (ratio >= BACKUP_TARGET ? 'PASS' : 'below target');
  return (
    `backup of a ${result.databaseMB.toFixed(0)} MB database (archive ${result.archiveMB.toFixed(0)} MB): ` +
    `backup ${mbs(result.backupS)} MB/s vs pg_dump ${mbs(result.plainDumpS)} MB/s, ratio ${result.backupRatio.toFixed(2)} (${verdict(result.backupRatio)}, target >= ${BACKUP_TARGET}); ` +
    `restore ${mbs(result.restoreS)} MB/s vs pg_restore ${mbs(result.plainRestoreS)} MB/s, ratio ${result.restoreRatio.toFixed(2)} (${verdict(result.restoreRatio)}); ` +
    `backup verify (restore drill) ${result.verifyS.toFixed(1)} s, of which restore ${(result.verifyRestoreMs / 1000).toFixed(1)} s`
  );
}

if (import.meta.main) {
  const megabytes = Number(process.env.BENCH_BACKUP_MB ?? 1024);
  const result = await measureBackup({ adminUrl: process.env.BENCH_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres', megabytes, rounds: Number(process.env.BENCH_BACKUP_ROUNDS ?? 2), log: (line) => console.log(line) });
  console.log(backupLine(result));
}
