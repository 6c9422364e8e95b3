/**
 * `backup create | list | restore ID --to TARGET [--force] | verify ID | drills`.
 * Progress goes to stderr: a running count on a terminal, a quiet line per 256 MiB otherwise.
 */
import { createBackup, isBackupId, targetFromConfig, listBackups, listRestoreTests, restoreBackup, restoreTenantRecords, verifyBackup, type BackupTarget, type RestoreContext } from '../features/backup/index.ts';
import { isUuid } from '../kernel/db/database.ts';
import { loadConfig, type Config } from '../kernel/config/config.ts';
import { loadKeyProvider } from '../kernel/crypto/providers.ts';
import { UsageError, withCliDatabase } from './support.ts';

/** A verify that found problems: non-zero exit, the first problem on stderr. */
export class BackupCheckError extends Error {
  override name = 'BackupCheckError';
}

const USAGE = 'usage: customernode backup create | list | restore ID --to DATA_DIR_OR_DATABASE_URL [--force] | restore-tenant ID --tenant TENANT_ID | verify ID | drills [--json]';

export function backupTarget(config: Config): BackupTarget {
  const target = targetFromConfig(config);
  if (target === undefined) throw new UsageError('no backup target is configured: set BACKUP_DIR (a directory outside DATA_DIR) or BACKUP_S3_BUCKET');
  return target;
}

function bytesProgress(stream: NodeJS.WriteStream, label: string, total?: number): { update: (bytes: number) => void; end: () => void } {
  const step = 256 * 2 ** 20;
  let nextLine = step;
  const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
  let last = 0;
  return {
    update(bytes) {
      last = bytes;
      if (stream.isTTY) stream.write(`\r${label}: ${mib(bytes)} MiB${total ? ` of ${mib(total)} MiB (${Math.floor((bytes / total) * 100)}%)` : ''}`);
      else if (bytes >= nextLine) {
        nextLine += step;
        stream.write(`${label}: ${mib(bytes)} MiB\n`);
      }
    },
    end() {
      if (stream.isTTY && last > 0) stream.write('\n');
    },
  };
}

function restoreContext(config: Config, onProgress?: (bytes: number) => void): RestoreContext {
  return { config, target: backupTarget(config), provider: loadKeyProvider(config, { warn() {} }), ...(onProgress ? { onProgress } : {}) };
}

export async function backupCommand(args: readonly string[], json: boolean, out: (line: string) => void, stderr: NodeJS.WriteStream = process.stderr): Promise<void> {
  const [sub, ...options] = args;
  if (sub === 'create' || sub === 'verify' || sub === 'drills') {
    const id = sub === 'verify' ? options[0] : undefined;
    if (sub === 'verify' ? options.length !== 1 || !isBackupId(id!) : options.length !== 0) throw new UsageError(sub === 'verify' ? 'usage: customernode backup verify ID [--json] (ID as backup list shows it)' : USAGE);
    const config = loadConfig();
    const progress = bytesProgress(stderr, sub === 'create' ? 'backup' : 'verify');
    // Built before the database opens: a missing target is a usage error, not a failure halfway.
    const context = sub === 'drills' ? null : restoreContext(config, progress.update);
    await withCliDatabase(async (db) => {
      if (sub === 'drills') {
        const items = await listRestoreTests(db);
        if (json) out(JSON.stringify({ items }));
        else if (items.length === 0) out('no restore drills recorded');
        else for (const item of items) out(`${item.startedAt}  ${item.ok ? 'ok    ' : 'FAILED'}  backup ${item.backupId}  restore ${item.restoreMs} ms`);
        return;
      }
      const ctx = { ...context!, db };
      if (sub === 'create') {
        const descriptor = await createBackup(ctx);
        progress.end();
        out(json ? JSON.stringify(summary(descriptor)) : `backup ${descriptor.id}: ${descriptor.sizeBytes} bytes, ${descriptor.rows} rows, ${descriptor.files} files, ${descriptor.durationMs} ms`);
        return;
      }
      const report = await verifyBackup(ctx, id!);
      progress.end();
      if (json) out(JSON.stringify(report));
      else out(report.ok ? `backup ${id}: ok (restored in ${report.restoreMs} ms; ${report.rows} rows in ${report.tables} tables; ${report.auditLogs} audit logs verified; ${report.decryptedFields} encrypted fields decrypted)` : `backup ${id}: FAILED`);
      if (!report.ok) throw new BackupCheckError(`backup ${id} failed verification: ${report.problems[0]}`);
    }, config);
    return;
  }
  if (sub === 'restore-tenant') {
    const [id, flag, tenant, ...extra] = options;
    if (id === undefined || !isBackupId(id) || flag !== '--tenant' || tenant === undefined || !isUuid(tenant) || extra.length > 0) {
      throw new UsageError('usage: customernode backup restore-tenant ID --tenant TENANT_ID [--json]');
    }
    const config = loadConfig();
    const context = restoreContext(config);
    await withCliDatabase(async (db) => {
      const result = await restoreTenantRecords({ ...context, db }, id, tenant.toLowerCase());
      out(json ? JSON.stringify(result) : `tenant ${result.tenantId}: ${result.accountsRestored} accounts and ${result.contactsRestored} contacts put back from backup ${id} (existing records untouched)`);
    }, config);
    return;
  }
  if (sub === 'list') {
    if (options.length !== 0) throw new UsageError(USAGE);
    const config = loadConfig();
    const items = await listBackups(backupTarget(config));
    if (json) out(JSON.stringify({ items: items.map(summary) }));
    else if (items.length === 0) out('no backups');
    else for (const item of items) out(`${item.id}  ${item.createdAt}  ${item.source.padEnd(8)}  ${item.sizeBytes} bytes  ${item.rows} rows  ${item.files} files`);
    return;
  }
  if (sub === 'restore') {
    const [id, ...rest] = options;
    let to: string | undefined;
    let force = false;
    for (let i = 0; i < rest.length; i++) {
      if (rest[i] === '--to' && rest[i + 1] !== undefined) to = rest[++i];
      else if (rest[i] === '--force') force = true;
      else throw new UsageError(USAGE);
    }
    if (id === undefined || !isBackupId(id) || to === undefined) throw new UsageError('usage: customernode backup restore ID --to DATA_DIR_OR_DATABASE_URL [--force] [--json]');
    const config = loadConfig();
    const ctx = restoreContext(config);
    const result = await restoreBackup(ctx, id, to, force);
    out(json ? JSON.stringify(result) : `restored backup ${id} into ${result.target}: ${result.rows} rows, ${result.files} files, ${result.durationMs} ms${result.replaced ? `; the previous data is kept as ${result.replaced}` : ''}`);
    return;
  }
  throw new UsageError(USAGE);
}

/** What an operator sees of a backup: not its wrapped key. */
function summary(descriptor: Awaited<ReturnType<typeof listBackups>>[number]) {
  return { id: descriptor.id, createdAt: descriptor.createdAt, source: descriptor.source, schemaVersion: descriptor.schemaVersion, sizeBytes: descriptor.sizeBytes, sha256: descriptor.sha256, rows: descriptor.rows, files: descriptor.files, durationMs: descriptor.durationMs };
}
