/**
 * Database snapshots for backups, and restores into a staging database that only replaces
 * the target once everything checked out. The engine-specific half of backup and recovery
 * (features/backup holds the archive, keys, targets and evidence).
 *
 * - PostgreSQL: pg_dump (custom format) of an exported REPEATABLE READ snapshot, in which the
 *   manifest's row counts are taken too; restored by pg_restore into a new database that is
 *   renamed into place.
 * - Embedded PGlite: COPY of every table inside one transaction (the single session makes it
 *   a consistent snapshot); restored into a new data directory that is renamed into place.
 *
 * The data of the key tables is never dumped: keys are kept apart from backups (keystore).
 */
import { PGlite } from '@electric-sql/pglite';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { Kysely, PGliteDialect, PostgresDialect } from 'kysely';
import pg from 'pg';
import { lockDataDir, type DataDirLock } from './lock.ts';
import { migrateEmbedded } from './migrate.ts';
import { MIGRATIONS } from './migrations.ts';
import type { DB } from './schema.ts';
import type { Tx } from './database.ts';

/** Tables whose rows never go into a backup: wrapped keys live in the keystore, apart. */
export const KEY_TABLES = ['tenant_keys', 'platform_keys'] as const;

export const LATEST_SCHEMA_VERSION = Math.max(...MIGRATIONS.map((migration) => migration.version));

/** A backup or restore that cannot proceed as asked (bad target, missing privilege, target in use). */
export class SnapshotError extends Error {
  override name = 'SnapshotError';
}

export interface SnapshotInfo {
  readonly kind: 'embedded' | 'postgres';
  readonly serverVersion: string;
  readonly schemaVersion: number;
  readonly ownerRole?: string;
  readonly appRole?: string;
  /** Rows per table in the snapshot (null: the key tables, not dumped). */
  readonly tables: Record<string, number | null>;
}

export type AddPart = (name: string, data: AsyncIterable<Buffer | Uint8Array | string> | Iterable<Buffer | string>) => Promise<unknown>;

export interface KeyRow {
  readonly owner: string;
  readonly purpose: string;
  readonly version: number;
  readonly kekId: string;
  readonly wrapped: Buffer;
}

function quoteIdent(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(name)) throw new SnapshotError(`unsupported identifier ${JSON.stringify(name)}`);
  return `"${name}"`;
}

const isKeyTable = (table: string) => (KEY_TABLES as readonly string[]).includes(table);

/** A connection string without its password, and the password for PGPASSWORD (never on a command line). */
function splitPassword(url: string): { url: string; password: string } {
  const parsed = new URL(url);
  const password = decodeURIComponent(parsed.password);
  parsed.password = '';
  return { url: parsed.toString(), password };
}

function databaseName(url: string): string {
  const name = decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
  quoteIdent(name);
  return name;
}

function withDatabase(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}

/** Runs a PostgreSQL client program; stdin/stdout are streams, stderr's last line names a failure. */
function runTool(tool: string, args: string[], url: string, io: { stdin?: AsyncIterable<Buffer> }): { stdout: Readable; done: Promise<void>; kill: () => void } {
  const { url: bare, password } = splitPassword(url);
  const child = spawn(tool, [...args, `--dbname=${bare}`], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', PGPASSWORD: password, PGCONNECT_TIMEOUT: '10', LC_ALL: 'C' },
    stdio: [io.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => {
    stderr = (stderr + text).slice(-4000);
  });
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', (error: NodeJS.ErrnoException) => reject(new SnapshotError(error.code === 'ENOENT' ? `${tool} is not installed (PostgreSQL client programs are needed)` : `${tool}: ${error.message}`)));
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new SnapshotError(`${tool} failed (${signal ?? `exit ${code}`}): ${stderr.trim().split('\n').filter(Boolean).pop() ?? 'no message'}`));
    });
  });
  let fed: Promise<void> = Promise.resolve();
  if (io.stdin && child.stdin) {
    const stdin = child.stdin;
    stdin.on('error', () => {}); // the tool exiting early is reported by its exit status
    fed = (async () => {
      try {
        for await (const piece of io.stdin!) {
          if (!stdin.write(piece)) await new Promise<void>((resolve) => stdin.once('drain', resolve));
        }
      } finally {
        stdin.end();
      }
    })();
  }
  const done = Promise.all([exited, fed.catch((error: unknown) => {
    child.kill('SIGTERM');
    throw error;
  })]).then(() => undefined);
  return { stdout: child.stdout!, done, kill: () => child.kill('SIGTERM') };
}

async function countRows(query: (text: string) => Promise<{ rows: { n: string | number }[] }>, tables: readonly string[]): Promise<Record<string, number | null>> {
  const counts: Record<string, number | null> = {};
  for (const table of tables) {
    if (isKeyTable(table)) counts[table] = null;
    else counts[table] = Number((await query(`select count(*) as n from public.${quoteIdent(table)}`)).rows[0]!.n);
  }
  return counts;
}

const TABLES_SQL = `select tablename from pg_tables where schemaname = 'public' order by tablename`;
const SCHEMA_VERSION_SQL = `select coalesce(max(version), 0) as v from schema_migrations`;

/** pg_dump of one exported snapshot, row counts from the same snapshot. Needs a role that reads past RLS. */
export async function dumpPostgres(url: string, addPart: AddPart): Promise<SnapshotInfo> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => {}); // a lost connection fails the next query instead of the process
  await client.connect().catch((error: Error) => {
    throw new SnapshotError(`cannot connect for the backup: ${error.message}`);
  });
  try {
    const role = (await client.query<{ ok: boolean; user: string }>(`select rolsuper or rolbypassrls as ok, current_user as user from pg_roles where rolname = current_user`)).rows[0]!;
    if (!role.ok) {
      throw new SnapshotError(`the role ${role.user} cannot read past row-level security: set BACKUP_DATABASE_URL to a role with BYPASSRLS (or a superuser)`);
    }
    await client.query('begin isolation level repeatable read read only');
    const snapshot = (await client.query<{ id: string }>('select pg_export_snapshot() as id')).rows[0]!.id;
    const meta = (
      await client.query<{ server: string; owner: string; v: number }>(
        `select current_setting('server_version') as server, (select tableowner from pg_tables where schemaname = 'public' and tablename = 'tenants') as owner, (${SCHEMA_VERSION_SQL}) as v`,
      )
    ).rows[0]!;
    const tables = (await client.query<{ tablename: string }>(TABLES_SQL)).rows.map((row) => row.tablename);
    const dump = runTool(
      'pg_dump',
      ['--format=custom', '--no-password', `--snapshot=${snapshot}`, ...KEY_TABLES.map((table) => `--exclude-table-data=public.${table}`)],
      url,
      {},
    );
    // Counting runs on our connection while pg_dump streams: both read the same snapshot.
    const [counted, dumped] = await Promise.allSettled([countRows((text) => client.query(text), tables), addPart('database.pgdump', dump.stdout).then(() => dump.done)]);
    if (counted.status === 'rejected' || dumped.status === 'rejected') {
      // A failed target or count stops pg_dump too; its own failure then says nothing new.
      dump.kill();
      await dump.done.catch(() => {});
      throw counted.status === 'rejected' ? counted.reason : (dumped as PromiseRejectedResult).reason;
    }
    const counts = counted.value;
    await client.query('commit');
    return { kind: 'postgres', serverVersion: meta.server, schemaVersion: Number(meta.v), ownerRole: meta.owner, tables: counts };
  } finally {
    await client.end().catch(() => {});
  }
}

/** Every table copied inside one transaction of the embedded database (other work waits meanwhile). */
export async function dumpEmbedded(pglite: PGlite, addPart: AddPart): Promise<SnapshotInfo> {
  return pglite.transaction(async (tx) => {
    const tables = (await tx.query<{ tablename: string }>(TABLES_SQL)).rows.map((row) => row.tablename);
    const schemaVersion = Number((await tx.query<{ v: number }>(SCHEMA_VERSION_SQL)).rows[0]!.v);
    const serverVersion = (await tx.query<{ v: string }>(`select current_setting('server_version') as v`)).rows[0]!.v;
    const counts = await countRows((text) => tx.query<{ n: string | number }>(text), tables);
    for (const table of tables) {
      if (isKeyTable(table)) continue;
      const result = await tx.query(`copy public.${quoteIdent(table)} to '/dev/blob'`);
      const blob = result.blob ?? new Blob([]);
      await addPart(`table/${table}`, blob.stream() as unknown as AsyncIterable<Uint8Array>);
    }
    const sequences = (await tx.query<{ name: string; value: string | null }>(`select sequencename as name, last_value::text as value from pg_sequences where schemaname = 'public' order by 1`)).rows;
    await addPart('sequences.json', [JSON.stringify(sequences)]);
    return { kind: 'embedded' as const, serverVersion, schemaVersion, tables: counts };
  });
}

/** Where a restore goes. Scratch targets (backup verify) are dropped after the checks. */
export type RestoreTarget =
  | { readonly kind: 'postgres'; readonly url: string; readonly force: boolean }
  | { readonly kind: 'embedded'; readonly dataDir: string; readonly force: boolean }
  | { readonly kind: 'postgres-scratch'; readonly url: string }
  | { readonly kind: 'embedded-scratch' };

export interface RestoreStage {
  /** Whether a part of the archive belongs to the database (the rest are files). */
  accepts(partName: string): boolean;
  load(name: string, data: AsyncIterable<Buffer>): Promise<void>;
  /** After every part loaded: the keys go in, constraints are checked, the schema is brought up to date. */
  finishLoad(keys: readonly KeyRow[]): Promise<void>;
  countRows(): Promise<Record<string, number | null>>;
  /** A transaction on the restored data with every row visible, for checks. */
  inspect<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  /** Puts the restored database in the target's place; returns where the replaced one was kept. */
  promote(): Promise<{ replaced: string | null }>;
  /** Throws the staged database away (a failed or finished check). */
  discard(): Promise<void>;
}

export async function openRestoreStage(target: RestoreTarget, info: Pick<SnapshotInfo, 'kind' | 'schemaVersion' | 'ownerRole' | 'appRole'>): Promise<RestoreStage> {
  if (info.schemaVersion > LATEST_SCHEMA_VERSION) throw new SnapshotError(`the backup has schema version ${info.schemaVersion}, newer than this program (${LATEST_SCHEMA_VERSION}): restore it with a newer release`);
  if (info.kind === 'postgres') {
    if (target.kind !== 'postgres' && target.kind !== 'postgres-scratch') throw new SnapshotError('a PostgreSQL backup restores into a PostgreSQL database: give --to a postgres:// URL');
    return stagePostgres(target, info);
  }
  if (target.kind !== 'embedded' && target.kind !== 'embedded-scratch') throw new SnapshotError('an embedded-database backup restores into a data directory: give --to a directory');
  return stageEmbedded(target, info);
}

async function ensureRoles(client: pg.Client, roles: readonly string[]): Promise<void> {
  for (const role of new Set(roles)) {
    quoteIdent(role);
    // Created without login; an operator sets passwords (the roles are cluster-wide, not in a dump).
    await client.query(`do $$ begin if not exists (select 1 from pg_roles where rolname = '${role}') then create role ${quoteIdent(role)} nologin nosuperuser nobypassrls; end if; end $$`);
  }
}

async function stagePostgres(target: Extract<RestoreTarget, { kind: 'postgres' | 'postgres-scratch' }>, info: Pick<SnapshotInfo, 'ownerRole' | 'appRole'>): Promise<RestoreStage> {
  const targetName = target.kind === 'postgres' ? databaseName(target.url) : null;
  const stageName = targetName === null ? `cn_verify_${randomBytes(6).toString('hex')}` : `${targetName.slice(0, 48)}__restoring`;
  const admin = new pg.Client({ connectionString: withDatabase(target.url, 'postgres') });
  admin.on('error', () => {}); // a lost connection fails the next query instead of the process
  await admin.connect().catch((error: Error) => {
    throw new SnapshotError(`cannot connect to the target server: ${error.message}`);
  });
  let kysely: Kysely<DB> | undefined;
  const stageUrl = withDatabase(target.url, stageName);
  const connections = async (name: string) => Number((await admin.query<{ n: string }>('select count(*) as n from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [name])).rows[0]!.n);
  const exists = async (name: string) => (await admin.query('select 1 from pg_database where datname = $1', [name])).rowCount === 1;
  const drop = async (name: string) => {
    if (await exists(name)) await admin.query(`drop database ${quoteIdent(name)} with (force)`);
  };
  try {
    const privileged = (await admin.query<{ ok: boolean }>('select rolsuper or rolcreatedb as ok from pg_roles where rolname = current_user')).rows[0]!.ok;
    if (!privileged) throw new SnapshotError('the restoring role needs CREATEDB (or superuser) to stage the restore in a new database');
    if (targetName !== null && target.kind === 'postgres') {
      if (await exists(targetName)) {
        const used = await connections(targetName);
        if (used > 0) throw new SnapshotError(`the target database ${targetName} is in use (${used} connections): stop the server first`);
        const probe = new pg.Client({ connectionString: target.url });
        let tables: number;
        try {
          await probe.connect();
          tables = Number((await probe.query<{ n: string }>(`select count(*) as n from pg_tables where schemaname = 'public'`)).rows[0]!.n);
        } finally {
          await probe.end().catch(() => {});
        }
        if (tables > 0 && !target.force) throw new SnapshotError(`the target database ${targetName} is not empty: add --force to replace it (it is kept, renamed)`);
      }
    }
    // A restore killed earlier left its stage behind: it was never in use, so it goes.
    await drop(stageName);
    await ensureRoles(admin, [info.ownerRole ?? 'postgres', info.appRole ?? 'cn_app', 'cn_system', 'cn_audit_purge']);
    // A scratch database (a drill) belongs to the restoring role, with no ownership or grants
    // restored: the backup role then needs only CREATEDB and BYPASSRLS, not superuser.
    await admin.query(`create database ${quoteIdent(stageName)}${info.ownerRole && targetName !== null ? ` owner ${quoteIdent(info.ownerRole)}` : ''}`);
  } catch (error) {
    await admin.end().catch(() => {});
    throw error;
  }
  let loaded = false;
  let pool: pg.Pool | undefined;
  const poolOf = () => {
    if (!pool) {
      pool = new pg.Pool({ connectionString: stageUrl, max: 2 });
      // Dropping the stage terminates any connection still closing; that must not crash the process.
      pool.on('error', () => {});
    }
    return pool;
  };
  const open = () => (kysely ??= new Kysely<DB>({ dialect: new PostgresDialect({ pool: poolOf() }) }));
  const close = async () => {
    if (kysely) await kysely.destroy();
    else await pool?.end();
    kysely = undefined;
    pool = undefined;
  };
  return {
    accepts: (name) => name === 'database.pgdump',
    async load(_name, data) {
      const scratch = targetName === null ? ['--no-owner', '--no-privileges'] : [];
      const restore = runTool('pg_restore', ['--exit-on-error', '--single-transaction', '--no-password', ...scratch], stageUrl, { stdin: data });
      restore.stdout.resume();
      await restore.done;
      loaded = true;
    },
    async finishLoad(keys) {
      if (!loaded) throw new SnapshotError('the backup holds no database dump');
      await insertKeys(open(), keys);
    },
    async countRows() {
      const stage = poolOf();
      const tables = (await stage.query<{ tablename: string }>(TABLES_SQL)).rows.map((row) => row.tablename);
      return countRows((text) => stage.query<{ n: string }>(text), tables);
    },
    async inspect(fn) {
      return open().transaction().execute(fn);
    },
    async promote() {
      await close();
      if (targetName === null) throw new SnapshotError('a scratch restore is never promoted');
      try {
        let replaced: string | null = null;
        if (await exists(targetName)) {
          const used = await connections(targetName);
          if (used > 0) throw new SnapshotError(`the target database ${targetName} is in use (${used} connections): stop the server first`);
          replaced = `${targetName.slice(0, 40)}__replaced_${Date.now().toString(36)}`;
          await admin.query(`alter database ${quoteIdent(targetName)} rename to ${quoteIdent(replaced)}`);
        }
        await admin.query(`alter database ${quoteIdent(stageName)} rename to ${quoteIdent(targetName)}`);
        return { replaced };
      } finally {
        await admin.end().catch(() => {});
      }
    },
    async discard() {
      await close();
      try {
        await drop(stageName);
      } finally {
        await admin.end().catch(() => {});
      }
    },
  };
}

async function insertKeys(db: Kysely<DB>, keys: readonly KeyRow[]): Promise<void> {
  await db.transaction().execute(async (tx) => {
    const tenants = new Set((await tx.selectFrom('tenants').select('id').where('deleted_at', 'is', null).execute()).map((row) => row.id));
    for (const key of keys) {
      const values = { purpose: key.purpose as 'data' | 'index', version: key.version, kek_id: key.kekId, wrapped: key.wrapped };
      if (key.owner === 'platform') await tx.insertInto('platform_keys').values(values).onConflict((oc) => oc.doNothing()).execute();
      // Only tenants that exist in the restored data (a deleted tenant's keys are gone anyway).
      else if (tenants.has(key.owner)) await tx.insertInto('tenant_keys').values({ tenant_id: key.owner, ...values }).onConflict((oc) => oc.doNothing()).execute();
    }
  });
}

/**
 * An empty embedded database migrated to a schema version, as a compressed data-directory
 * image, made once per process: creating and migrating one takes about 10 s here, loading
 * the image about 2 s (every restore and drill stages a database).
 */
const templates = new Map<number, Promise<Blob>>();

function migratedTemplate(schemaVersion: number): Promise<Blob> {
  let template = templates.get(schemaVersion);
  if (!template) {
    template = (async () => {
      const pglite = await PGlite.create();
      try {
        await migrateEmbedded(pglite, schemaVersion);
        return await pglite.dumpDataDir('gzip');
      } finally {
        await pglite.close();
      }
    })();
    template.catch(() => templates.delete(schemaVersion));
    templates.set(schemaVersion, template);
  }
  return template;
}

async function stageEmbedded(target: Extract<RestoreTarget, { kind: 'embedded' | 'embedded-scratch' }>, info: Pick<SnapshotInfo, 'schemaVersion'>): Promise<RestoreStage> {
  let lock: DataDirLock | undefined;
  let stageDir: string | undefined;
  if (target.kind === 'embedded') {
    await mkdir(target.dataDir, { recursive: true, mode: 0o700 });
    lock = lockDataDir(target.dataDir);
    const current = path.join(target.dataDir, 'pgdata');
    if (existsSync(current) && (await readdir(current)).length > 0 && !target.force) {
      lock.release();
      throw new SnapshotError(`the target ${target.dataDir} already holds a database: add --force to replace it (it is kept, renamed)`);
    }
    stageDir = path.join(target.dataDir, 'pgdata.restoring');
    // A restore killed earlier left its stage behind: it was never in use, so it goes.
    await rm(stageDir, { recursive: true, force: true });
  }
  let pglite: PGlite | undefined;
  try {
    pglite = await PGlite.create(stageDir, { loadDataDir: await migratedTemplate(info.schemaVersion) });
    const tables = (await pglite.query<{ tablename: string }>(TABLES_SQL)).rows.map((row) => row.tablename);
    // Triggers stay off while loading (the audit tables refuse TRUNCATE otherwise); rows a
    // migration seeds (and schema_migrations itself) come from the backup instead.
    await pglite.exec(`set session_replication_role = replica; truncate ${tables.map((table) => `public.${quoteIdent(table)}`).join(', ')};`);
  } catch (error) {
    await pglite?.close().catch(() => {});
    if (stageDir) await rm(stageDir, { recursive: true, force: true });
    lock?.release();
    throw error;
  }
  const instance = pglite;
  let kysely: Kysely<DB> | undefined;
  const open = () => (kysely ??= new Kysely<DB>({ dialect: new PGliteDialect({ pglite: instance }) }));
  const closeAll = async () => {
    if (kysely) await kysely.destroy();
    else await instance.close();
  };
  return {
    accepts: (name) => name.startsWith('table/') || name === 'sequences.json',
    async load(name, data) {
      const pieces: Buffer[] = [];
      for await (const piece of data) pieces.push(piece);
      if (name === 'sequences.json') {
        const sequences = JSON.parse(Buffer.concat(pieces).toString('utf8')) as { name: string; value: string | null }[];
        for (const sequence of sequences) {
          if (sequence.value !== null) await instance.query('select setval($1::regclass, $2::bigint, true)', [`public.${quoteIdent(sequence.name)}`, sequence.value]);
        }
        return;
      }
      const table = name.slice('table/'.length);
      await instance.query(`copy public.${quoteIdent(table)} from '/dev/blob'`, [], { blob: new Blob(pieces) });
    },
    async finishLoad(keys) {
      await instance.exec('set session_replication_role = origin');
      // Rows were loaded with triggers off: re-adding each foreign key checks every row against it.
      const foreignKeys = (
        await instance.query<{ tbl: string; name: string; def: string }>(
          `select c.conrelid::regclass::text as tbl, c.conname as name, pg_get_constraintdef(c.oid) as def
             from pg_constraint c join pg_namespace n on n.oid = c.connamespace where n.nspname = 'public' and c.contype = 'f'`,
        )
      ).rows;
      try {
        await instance.transaction(async (tx) => {
          for (const fk of foreignKeys) {
            await tx.exec(`alter table ${fk.tbl} drop constraint ${quoteIdent(fk.name)}; alter table ${fk.tbl} add constraint ${quoteIdent(fk.name)} ${fk.def};`);
          }
        });
      } catch (error) {
        throw new SnapshotError(`the restored rows break a foreign key: ${(error as Error).message}`);
      }
      await insertKeys(open(), keys);
      await migrateEmbedded(pglite);
    },
    async countRows() {
      const tables = (await instance.query<{ tablename: string }>(TABLES_SQL)).rows.map((row) => row.tablename);
      return countRows((text) => instance.query<{ n: string | number }>(text), tables);
    },
    async inspect(fn) {
      return open().transaction().execute(fn);
    },
    async promote() {
      await closeAll();
      try {
        if (target.kind !== 'embedded' || stageDir === undefined) throw new SnapshotError('a scratch restore is never promoted');
        const current = path.join(target.dataDir, 'pgdata');
        let replaced: string | null = null;
        if (existsSync(current)) {
          replaced = `${current}.replaced-${Date.now().toString(36)}`;
          await rename(current, replaced);
        }
        await rename(stageDir, current);
        return { replaced };
      } finally {
        lock?.release();
      }
    },
    async discard() {
      try {
        await closeAll();
        if (stageDir) await rm(stageDir, { recursive: true, force: true });
      } finally {
        lock?.release();
      }
    },
  };
}
