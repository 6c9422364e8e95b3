/**
 * Backup and recovery: create, list, restore and verify (a recorded restore drill).
 *
 * A backup is two objects in the target: `backups/<id>.cnb`, the encrypted archive (database
 * snapshot, stored files, manifest), and `backups/<id>.json`, its descriptor (the wrapped
 * content key, size, digest), written last: a backup without a descriptor never finished.
 * Keys are never inside a backup; they are in the keystore (keystore.ts).
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import type { Config } from '../../kernel/config/config.ts';
import { NO_REQUEST, recordPlatformEvent, recordTenantEvent, SYSTEM_ACTOR } from '../../kernel/audit/record.ts';
import { sealAllLogs } from '../../kernel/audit/sealer.ts';
import { loadAuditSigner } from '../../kernel/audit/signing.ts';
import { verifyPlatformLog, verifyTenantLog } from '../../kernel/audit/verify.ts';
import { describeProblem } from '../../kernel/audit/chain.ts';
import { Keyring } from '../../kernel/crypto/envelope.ts';
import type { KeyProvider } from '../../kernel/crypto/key-provider.ts';
import type { Database } from '../../kernel/db/database.ts';
import { openRestoreStage, SnapshotError, type RestoreStage, type RestoreTarget } from '../../kernel/db/snapshot.ts';
import { ARCHIVE_FORMAT, ArchiveReader, ArchiveWriter, backupAad, BackupIntegrityError, drain, type Manifest } from './archive.ts';
import { insertMissingRecords, storedRecords } from '../records/index.ts';
import { readKeystore, refreshKeystore } from './keystore.ts';
import { BackupNotFoundError, type BackupTarget } from './targets.ts';

export interface BackupDescriptor {
  readonly format: number;
  readonly id: string;
  readonly createdAt: string;
  readonly source: 'embedded' | 'postgres';
  readonly schemaVersion: number;
  readonly ownerRole: string | null;
  readonly sizeBytes: number;
  readonly sha256: string;
  readonly kekId: string;
  readonly wrappedKey: string;
  readonly rows: number;
  readonly files: number;
  readonly durationMs: number;
}

export interface BackupContext {
  readonly db: Database;
  readonly config: Config;
  readonly target: BackupTarget;
  readonly provider: KeyProvider;
  /** Bytes of archive written or read so far (a progress bar on a terminal). */
  readonly onProgress?: (bytes: number) => void;
}

/** A restore needs no live database: the target may be a fresh server after a disaster. */
export type RestoreContext = Omit<BackupContext, 'db'>;

const ID_PATTERN = /^\d{8}T\d{6}Z-[0-9a-f]{6}$/;

export function isBackupId(value: string): boolean {
  return ID_PATTERN.test(value);
}

function newBackupId(at: Date): string {
  return `${at.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')}-${randomBytes(3).toString('hex')}`;
}

const archiveName = (id: string) => `backups/${id}.cnb`;
const descriptorName = (id: string) => `backups/${id}.json`;

/** Every regular file under dir, as paths relative to it (sorted, so archives are reproducible in order). */
async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (relative: string) => {
    let entries;
    try {
      entries = await readdir(path.join(dir, relative), { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      const child = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (entry.isDirectory()) await walk(child);
      else if (entry.isFile()) out.push(child);
    }
  };
  await walk('');
  return out;
}

/** Rows in a snapshot's tables (the key tables, not dumped, count as none). */
function totalRows(tables: Readonly<Record<string, number | null>>): number {
  return Object.values(tables).reduce<number>((sum, n) => sum + (n ?? 0), 0);
}

function counting(onProgress: ((bytes: number) => void) | undefined) {
  let bytes = 0;
  return async function* (source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    for await (const piece of source) {
      bytes += piece.length;
      onProgress?.(bytes);
      yield piece;
    }
  };
}

export async function listBackups(target: BackupTarget): Promise<BackupDescriptor[]> {
  const objects = await target.list('backups');
  const out: BackupDescriptor[] = [];
  for (const object of objects) {
    const id = path.basename(object.name, '.json');
    if (!object.name.endsWith('.json') || !isBackupId(id)) continue;
    out.push(await readDescriptor(target, id));
  }
  return out.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id));
}

async function readDescriptor(target: BackupTarget, id: string): Promise<BackupDescriptor> {
  if (!isBackupId(id)) throw new BackupNotFoundError(`${JSON.stringify(id)} is not a backup id`);
  let parsed: BackupDescriptor;
  try {
    parsed = JSON.parse((await buffer(await target.read(descriptorName(id)))).toString('utf8')) as BackupDescriptor;
  } catch (error) {
    if (error instanceof BackupNotFoundError) throw new BackupNotFoundError(`no backup ${id} in ${target.description}`);
    throw new BackupIntegrityError(`the descriptor of backup ${id} is not readable JSON`);
  }
  if (parsed.format !== ARCHIVE_FORMAT || parsed.id !== id || typeof parsed.wrappedKey !== 'string' || typeof parsed.schemaVersion !== 'number' || !['embedded', 'postgres'].includes(parsed.source)) {
    throw new BackupIntegrityError(`the descriptor of backup ${id} is damaged`);
  }
  return parsed;
}

/** Writes a new backup of the whole database and the stored files. Audited in the platform log. */
export async function createBackup(ctx: BackupContext): Promise<BackupDescriptor> {
  const started = Date.now();
  const createdAt = new Date(started);
  const id = newBackupId(createdAt);
  // The backup's own content key, apart from every data key; wrapped once the descriptor it is bound to is known.
  const key = randomBytes(32);
  const writer = new ArchiveWriter(key, id);
  const upload = ctx.target.write(archiveName(id), Readable.from(counting(ctx.onProgress)(writer.encrypted)));
  // A target that fails (full, unreachable) stops the dump at once rather than leaving it waiting.
  upload.catch((error: unknown) => writer.abort(error instanceof Error ? error : new Error(String(error))));
  let files = 0;
  try {
    // Committed events are sealed first, so the backup's audit chains reach as far as possible.
    await sealAllLogs(ctx.db);
    const info = await ctx.db.snapshot((name, data) => writer.addPart(name, data), ctx.config.backup.databaseUrl);
    for (const file of await listFiles(ctx.config.backup.filesDir)) {
      await writer.addPart(`files/${file}`, createReadStream(path.join(ctx.config.backup.filesDir, file)));
      files += 1;
    }
    const manifest: Manifest = {
      format: ARCHIVE_FORMAT,
      id,
      createdAt: createdAt.toISOString(),
      source: { kind: info.kind, serverVersion: info.serverVersion, ...(info.ownerRole ? { ownerRole: info.ownerRole } : {}), appRole: ctx.config.databaseAppUser },
      schemaVersion: info.schemaVersion,
      tables: info.tables,
      parts: [...writer.parts],
      durationMs: Date.now() - started,
    };
    await writer.finish(manifest);
    const stored = await upload;
    const existing = await listBackups(ctx.target);
    const oldest = existing.reduce((min, backup) => (backup.createdAt < min ? backup.createdAt : min), createdAt.toISOString());
    // The keystore must hold every key this backup needs before the backup counts as taken.
    await refreshKeystore(ctx.db, ctx.target, ctx.provider, new Date(oldest));
    const binding = { id, source: info.kind, schemaVersion: info.schemaVersion, ownerRole: info.ownerRole ?? null };
    const wrapped = await ctx.provider.wrap(key, backupAad(binding));
    const descriptor: BackupDescriptor = {
      format: ARCHIVE_FORMAT,
      id,
      createdAt: createdAt.toISOString(),
      source: info.kind,
      schemaVersion: info.schemaVersion,
      ownerRole: info.ownerRole ?? null,
      sizeBytes: stored.bytes,
      sha256: stored.sha256,
      kekId: ctx.provider.keyId,
      wrappedKey: wrapped.toString('base64'),
      rows: totalRows(info.tables),
      files,
      durationMs: Date.now() - started,
    };
    await ctx.target.write(descriptorName(id), Readable.from([JSON.stringify(descriptor, null, 2)]));
    await recordBackupEvent(ctx.db, 'backup.created', { backupId: id, sizeBytes: descriptor.sizeBytes, rows: descriptor.rows, files, durationMs: descriptor.durationMs, target: ctx.target.description });
    return descriptor;
  } catch (error) {
    writer.abort(error instanceof Error ? error : new Error(String(error)));
    await upload.catch(() => {});
    await ctx.target.remove(archiveName(id)).catch(() => {});
    throw error;
  } finally {
    key.fill(0);
  }
}

/** A backup event in the platform log (the alert rules read the failures there). */
export async function recordBackupEvent(db: Database, action: string, metadata: Record<string, unknown>, outcome: 'success' | 'failure' = 'success'): Promise<void> {
  await db.systemDb({ reason: 'backups are recorded in the platform audit log' }).transaction((tx) => recordPlatformEvent(tx, SYSTEM_ACTOR, NO_REQUEST, { action, outcome, metadata }));
}

async function unwrapBackupKey(provider: KeyProvider, descriptor: BackupDescriptor): Promise<Buffer> {
  try {
    return await provider.unwrap(Buffer.from(descriptor.wrappedKey, 'base64'), backupAad(descriptor), descriptor.kekId);
  } catch {
    throw new BackupIntegrityError(`the key of backup ${descriptor.id} does not unwrap: a different key-encryption key (KEY_ENCRYPTION_KEY, retired keys, HSM key) or a tampered descriptor`);
  }
}

interface Loaded {
  readonly stage: RestoreStage;
  readonly manifest: Manifest;
  readonly filesDir: string | null;
}

/** Reads the whole archive into a staged database (and staged files); nothing is in place yet. */
async function loadIntoStage(ctx: RestoreContext, descriptor: BackupDescriptor, target: RestoreTarget, filesStage: string | null): Promise<Loaded> {
  const key = await unwrapBackupKey(ctx.provider, descriptor);
  const keys = await readKeystore(ctx.target, ctx.provider);
  const reader = new ArchiveReader(Readable.from(counting(ctx.onProgress)(await ctx.target.read(archiveName(descriptor.id)))), key, descriptor.id);
  key.fill(0);
  const stage = await openRestoreStage(target, { kind: descriptor.source, schemaVersion: descriptor.schemaVersion, ...(descriptor.ownerRole ? { ownerRole: descriptor.ownerRole } : {}), appRole: ctx.config.databaseAppUser });
  try {
    if (filesStage) {
      await rm(filesStage, { recursive: true, force: true });
      await mkdir(filesStage, { recursive: true, mode: 0o700 });
    }
    for await (const part of reader.parts()) {
      if (stage.accepts(part.name)) await stage.load(part.name, part.data);
      else if (part.name.startsWith('files/')) {
        const relative = part.name.slice('files/'.length);
        if (relative.split('/').some((segment) => segment === '' || segment === '.' || segment === '..')) throw new BackupIntegrityError(`the backup holds a file with an unsafe path: ${JSON.stringify(relative)}`);
        if (filesStage === null) await drain(part.data);
        else {
          const destination = path.join(filesStage, ...relative.split('/'));
          await mkdir(path.dirname(destination), { recursive: true, mode: 0o700 });
          await pipeline(Readable.from(part.data), createWriteStream(destination, { mode: 0o600, flags: 'wx' }));
        }
      } else throw new BackupIntegrityError(`the backup holds an unknown part ${JSON.stringify(part.name)}`);
    }
    const manifest = reader.manifest();
    if (manifest.schemaVersion !== descriptor.schemaVersion || manifest.source.kind !== descriptor.source) throw new BackupIntegrityError('the descriptor does not match the manifest inside the archive');
    await stage.finishLoad(keys);
    const counts = await stage.countRows();
    for (const [table, rows] of Object.entries(manifest.tables)) {
      if (rows !== null && counts[table] !== rows) throw new BackupIntegrityError(`table ${table}: ${counts[table] ?? 'missing'} rows restored, the manifest says ${rows}`);
    }
    return { stage, manifest, filesDir: filesStage };
  } catch (error) {
    await stage.discard().catch(() => {});
    if (filesStage) await rm(filesStage, { recursive: true, force: true });
    throw error;
  }
}

export interface RestoreResult {
  readonly backupId: string;
  readonly target: string;
  readonly replaced: string | null;
  readonly rows: number;
  readonly files: number;
  readonly durationMs: number;
}

/**
 * Restores a backup into a database (postgres:// URL) or a data directory: into a new one
 * first, checked, then switched into the target's place. A non-empty target needs force (and
 * is kept, renamed). An interrupted restore leaves the target as it was.
 */
export async function restoreBackup(ctx: RestoreContext, id: string, to: string, force: boolean): Promise<RestoreResult> {
  const started = Date.now();
  const descriptor = await readDescriptor(ctx.target, id);
  const isUrl = /^postgres(ql)?:\/\//.test(to);
  const target: RestoreTarget = isUrl ? { kind: 'postgres', url: to, force } : { kind: 'embedded', dataDir: path.resolve(to), force };
  const filesDir = isUrl ? ctx.config.backup.filesDir : path.join(path.resolve(to), 'files');
  const { stage, manifest } = await loadIntoStage(ctx, descriptor, target, `${filesDir}.restoring`);
  try {
    // Recorded in the restored database itself, so the event arrives in place with the data.
    await stage.inspect((tx) => recordPlatformEvent(tx, SYSTEM_ACTOR, NO_REQUEST, { action: 'backup.restored', metadata: { backupId: id, backupCreatedAt: descriptor.createdAt, force } }));
  } catch (error) {
    await stage.discard().catch(() => {});
    await rm(`${filesDir}.restoring`, { recursive: true, force: true });
    throw error;
  }
  const { replaced } = await stage.promote();
  const fileCount = manifest.parts.filter((part) => part.name.startsWith('files/')).length;
  // The files the restore replaces are kept, like the replaced database (never deleted here).
  await rename(filesDir, `${filesDir}.replaced-${Date.now().toString(36)}`).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error;
  });
  await rename(`${filesDir}.restoring`, filesDir);
  return {
    backupId: id,
    target: isUrl ? new URL(to).pathname.slice(1) : path.resolve(to),
    replaced,
    rows: totalRows(manifest.tables),
    files: fileCount,
    durationMs: Date.now() - started,
  };
}

export interface VerifyReport {
  readonly backupId: string;
  readonly ok: boolean;
  readonly restoreMs: number;
  readonly totalMs: number;
  readonly rows: number;
  readonly tables: number;
  readonly auditLogs: number;
  readonly decryptedFields: number;
  /** Tenants in the backup whose keys are gone (deleted since): their ciphertexts are unreadable by design. */
  readonly shreddedTenants: number;
  readonly problems: readonly string[];
}

/** A whole field sample: this many encrypted values are decrypted with the keystore's keys. */
const SAMPLE = 25;

/**
 * The restore drill: restores into a scratch database, compares it with the manifest,
 * verifies every audit chain, decrypts a sample of encrypted fields, and records the result
 * and the measured restore time (restore_tests and the platform log). Throws nothing for a
 * bad backup: the report says what is wrong (ok false).
 */
export async function verifyBackup(ctx: BackupContext, id: string): Promise<VerifyReport> {
  const started = Date.now();
  const problems: string[] = [];
  let restoreMs = 0;
  let rows = 0;
  let tables = 0;
  let auditLogs = 0;
  let decryptedFields = 0;
  let shreddedTenants = 0;
  try {
    const descriptor = await readDescriptor(ctx.target, id);
    const { stage, manifest } = await loadIntoStage(ctx, descriptor, scratchTarget(ctx.config, descriptor), null);
    restoreMs = Date.now() - started;
    try {
      rows = totalRows(manifest.tables);
      tables = Object.keys(manifest.tables).length;
      const publicKeys = loadAuditSigner(ctx.config, { warn() {} }).publicKeys;
      const keyring = new Keyring(ctx.provider, { ttlMs: 60_000, maxEntries: 10_000 });
      await stage.inspect(async (tx) => {
        const platform = await verifyPlatformLog(tx, publicKeys);
        auditLogs += 1;
        if (!platform.ok) problems.push(`platform audit log: ${describeProblem(platform.firstBad!)}`);
        const tenants = await tx.selectFrom('tenants').select('id as tenant_id').union(tx.selectFrom('audit_chain_heads').select('tenant_id')).orderBy('tenant_id').execute();
        for (const { tenant_id: tenantId } of tenants) {
          const result = await verifyTenantLog(tx, tenantId, publicKeys);
          auditLogs += 1;
          if (!result.ok) problems.push(`audit log of tenant ${tenantId}: ${describeProblem(result.firstBad!)}`);
        }
        const withKeys = (await tx.selectFrom('tenant_keys').select('tenant_id').distinct().execute()).map((row) => row.tenant_id);
        shreddedTenants = Number(
          (await tx.selectFrom('contacts').select((eb) => eb.fn.count<string>('tenant_id').distinct().as('n')).where('email_ct', 'is not', null).$if(withKeys.length > 0, (qb) => qb.where('tenant_id', 'not in', withKeys)).executeTakeFirstOrThrow()).n,
        );
        if (withKeys.length > 0) {
          const sample = await tx
            .selectFrom('contacts')
            .select(['id', 'tenant_id', 'email_ct'])
            .where('email_ct', 'is not', null)
            .where('tenant_id', 'in', withKeys)
            .orderBy((eb) => eb.fn('random'))
            .limit(SAMPLE)
            .execute();
          for (const row of sample) {
            if (await keyring.opens(tx, { tenantId: row.tenant_id, table: 'contacts', column: 'email', rowId: row.id }, row.email_ct!)) decryptedFields += 1;
            else problems.push(`an encrypted field of tenant ${row.tenant_id} (contact ${row.id}) does not decrypt with the keystore's keys`);
          }
        }
        // Fields under the platform's key: users' second-factor seeds.
        const seeds = await tx.selectFrom('users').select(['id', 'totp_secret_ct']).where('totp_secret_ct', 'is not', null).orderBy((eb) => eb.fn('random')).limit(SAMPLE).execute();
        for (const row of seeds) {
          if (await keyring.opensPlatform(tx, { table: 'users', column: 'totp_secret', rowId: row.id }, row.totp_secret_ct!)) decryptedFields += 1;
          else problems.push(`the second-factor seed of user ${row.id} does not decrypt with the keystore's platform keys`);
        }
      });
    } finally {
      await stage.discard();
    }
  } catch (error) {
    // Whatever went wrong is the drill's finding, recorded as evidence like a success.
    problems.push(error instanceof Error ? error.message.split('\n')[0]! : String(error));
  }
  const report: VerifyReport = { backupId: id, ok: problems.length === 0, restoreMs, totalMs: Date.now() - started, rows, tables, auditLogs, decryptedFields, shreddedTenants, problems };
  await recordVerification(ctx.db, report, new Date(started));
  return report;
}

export interface TenantRestoreResult {
  readonly backupId: string;
  readonly tenantId: string;
  readonly accountsRestored: number;
  readonly contactsRestored: number;
  /** Data key versions the restored records need that only the keystore still had. */
  readonly keyVersionsRestored: readonly number[];
  readonly durationMs: number;
}

/**
 * Puts back one tenant's records (accounts, contacts) that are missing now, from a backup,
 * without touching any other tenant or any record that exists now. Access state (members,
 * API keys, sessions, SSO) is never rolled back: a restore must not re-grant revoked access.
 * The backup is staged in a scratch database; the live one changes in one transaction, audited.
 */
export async function restoreTenantRecords(ctx: BackupContext, id: string, tenantId: string): Promise<TenantRestoreResult> {
  const started = Date.now();
  const tenant = await ctx.db
    .systemDb({ reason: 'a single-tenant restore checks that the tenant exists' })
    .transaction((tx) => tx.selectFrom('tenants').select(['id', 'deleted_at']).where('id', '=', tenantId).executeTakeFirst());
  if (!tenant) throw new SnapshotError(`no tenant ${tenantId} in this database`);
  if (tenant.deleted_at !== null) throw new SnapshotError(`tenant ${tenantId} was deleted: its keys are destroyed, so its records cannot be restored`);
  const descriptor = await readDescriptor(ctx.target, id);
  const { stage } = await loadIntoStage(ctx, descriptor, scratchTarget(ctx.config, descriptor), null);
  let records;
  try {
    records = await stage.inspect((tx) => storedRecords(tx, tenantId));
  } finally {
    await stage.discard();
  }
  const needed = new Set<number>();
  for (const row of records.contacts) for (const value of [row.email_ct, row.phone_ct]) if (value) needed.add(Keyring.versionOf(value));
  const keystore = (await readKeystore(ctx.target, ctx.provider)).filter((entry) => entry.owner === tenantId && entry.purpose === 'data');
  const result = await ctx.db.withTenant(tenantId, async (tx) => {
    const have = new Set((await tx.selectFrom('tenant_keys').select('version').where('tenant_id', '=', tenantId).where('purpose', '=', 'data').execute()).map((row) => row.version));
    const keyVersionsRestored: number[] = [];
    for (const version of [...needed].filter((v) => !have.has(v)).sort((a, b) => a - b)) {
      const entry = keystore.find((key) => key.version === version);
      if (!entry) throw new BackupIntegrityError(`the records need data key version ${version} of tenant ${tenantId}, which neither the database nor the keystore holds`);
      await tx.insertInto('tenant_keys').values({ tenant_id: tenantId, purpose: 'data', version, kek_id: entry.kekId, wrapped: entry.wrapped }).execute();
      keyVersionsRestored.push(version);
    }
    const put = await insertMissingRecords(tx, tenantId, records);
    await recordTenantEvent(tx, tenantId, SYSTEM_ACTOR, NO_REQUEST, {
      action: 'tenant.restored',
      metadata: { backupId: id, backupCreatedAt: descriptor.createdAt, accounts: put.accounts.length, contacts: put.contacts.length, keyVersionsRestored },
    });
    return { accountsRestored: put.accounts.length, contactsRestored: put.contacts.length, keyVersionsRestored };
  });
  await recordBackupEvent(ctx.db, 'backup.tenant_restored', { backupId: id, tenantId, ...result });
  return { backupId: id, tenantId, ...result, durationMs: Date.now() - started };
}

/** Where a drill or a single-tenant restore stages a backup: a scratch database of the backup's kind. */
function scratchTarget(config: Config, descriptor: BackupDescriptor): RestoreTarget {
  if (descriptor.source === 'embedded') return { kind: 'embedded-scratch' };
  // BACKUP_DATABASE_URL already falls back to DATABASE_URL (config.ts).
  if (config.backup.databaseUrl === undefined) throw new SnapshotError('a PostgreSQL backup is staged on a PostgreSQL server: set BACKUP_DATABASE_URL or DATABASE_URL');
  return { kind: 'postgres-scratch', url: config.backup.databaseUrl };
}

async function recordVerification(db: Database, report: VerifyReport, startedAt: Date): Promise<void> {
  await db.systemDb({ reason: 'a restore drill records its evidence' }).transaction(async (tx) => {
    await tx
      .insertInto('restore_tests')
      .values({ backup_id: report.backupId, started_at: startedAt, ok: report.ok, restore_ms: report.restoreMs, detail: JSON.stringify(report) })
      .execute();
    await recordPlatformEvent(tx, SYSTEM_ACTOR, NO_REQUEST, {
      action: 'backup.verified',
      outcome: report.ok ? 'success' : 'failure',
      metadata: { backupId: report.backupId, restoreMs: report.restoreMs, totalMs: report.totalMs, rows: report.rows, auditLogs: report.auditLogs, decryptedFields: report.decryptedFields, problems: report.problems.slice(0, 5) },
    });
  });
}

export interface RestoreTestRow {
  readonly id: string;
  readonly backupId: string;
  readonly startedAt: string;
  readonly ok: boolean;
  readonly restoreMs: number;
  readonly detail: unknown;
}

/** The recorded restore drills, newest first (operators' evidence). */
export async function listRestoreTests(db: Database, limit = 50): Promise<RestoreTestRow[]> {
  const rows = await db
    .systemDb({ reason: 'operators list the recorded restore drills' })
    .transaction((tx) => tx.selectFrom('restore_tests').selectAll().orderBy('started_at', 'desc').limit(limit).execute());
  return rows.map((row) => ({ id: row.id, backupId: row.backup_id, startedAt: new Date(row.started_at).toISOString(), ok: row.ok, restoreMs: row.restore_ms, detail: row.detail }));
}

/** Removes backups beyond retention: the newest retainCount stay, older ones go once older than retainDays. */
export async function pruneBackups(ctx: BackupContext): Promise<string[]> {
  const backups = await listBackups(ctx.target);
  const cutoff = Date.now() - ctx.config.backup.retainDays * 86_400_000;
  const removed: string[] = [];
  for (const backup of backups.slice(ctx.config.backup.retainCount)) {
    if (new Date(backup.createdAt).getTime() >= cutoff) continue;
    // The descriptor first: from then on it is no longer a backup, even if the archive lingers.
    await ctx.target.remove(descriptorName(backup.id));
    await ctx.target.remove(archiveName(backup.id));
    removed.push(backup.id);
  }
  if (removed.length > 0) await recordBackupEvent(ctx.db, 'backup.pruned', { removed });
  return removed;
}
