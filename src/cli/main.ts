#!/usr/bin/env node
/**
 * The customernode command (`npm run cli -- <command>`). Reads the same environment as the
 * server. Exit 0 on success; otherwise non-zero with a one-line reason on stderr.
 * Commands that list or create accept --json and then print exactly one JSON document.
 */
import pino from 'pino';
import { ConfigError, loadConfig } from '../kernel/config/config.ts';
import { AlertStatusError, listAllAlerts, setPlatformAlertStatus } from '../features/monitoring/index.ts';
import os from 'node:os';
import { describeProblem, type VerifyResult } from '../kernel/audit/chain.ts';
import { SYSTEM_ACTOR } from '../kernel/audit/record.ts';
import { sealAllLogs } from '../kernel/audit/sealer.ts';
import { loadAuditSigner } from '../kernel/audit/signing.ts';
import { verifyLogInParallel } from '../kernel/audit/verify.ts';
import { isUuid, runMigrations } from '../kernel/db/database.ts';
import { DataDirLockedError } from '../kernel/db/lock.ts';
import { keysCommand, progressTo } from './keys.ts';
import { BackupCheckError, backupCommand } from './backup.ts';
import { BackupIntegrityError, BackupNotFoundError, forgetTenantKeys, targetFromConfig } from '../features/backup/index.ts';
import { SnapshotError } from '../kernel/db/snapshot.ts';
import { UsageError, withCliDatabase } from './support.ts';
import { deleteTenant } from '../features/tenancy/index.ts';
import { createKeyring } from '../kernel/crypto/envelope.ts';
import { AppError } from '../kernel/http/errors.ts';

const USAGE = `Usage: customernode <command> [--json]

Commands:
  migrate                                  apply pending database migrations
  audit verify [--tenant ID] [--platform]  check the audit hash chains and signed checkpoints
                                           (default: every tenant and the platform log);
                                           non-zero exit naming the first bad event
  alerts list [--status S]                 security alerts of the platform and of every tenant,
                                           newest first (S: open, acknowledged or resolved)
  alerts ack|resolve ID                    acknowledge or resolve a platform alert (tenant alerts are
                                           their admins'); recorded in the platform log
  keys rotate-kek                          re-wrap every tenant key under KEY_ENCRYPTION_KEY (the
                                           previous key listed in KEY_ENCRYPTION_KEYS_RETIRED)
  keys rotate-tenant --tenant ID           new data key version for a tenant, re-encrypt its fields,
                                           destroy the older versions (resumable; audited)
  backup create                            write an encrypted backup (database, stored files) to BACKUP_DIR
  backup list                              backups in the target, newest first
  backup restore ID --to DATA_DIR_OR_DATABASE_URL [--force]
                                           restore into a new database, checked, then switched into place
                                           (a non-empty target needs --force and is kept, renamed)
  backup restore-tenant ID --tenant TID    put back one tenant's records missing now (accounts, contacts) from
                                           a backup; other tenants and existing records untouched (audited)
  backup verify ID                         restore drill: restore into a scratch database, compare with the
                                           manifest, verify audit chains, decrypt a sample; recorded
  backup drills                            the recorded restore drills, newest first
  tenants delete --tenant ID --confirm NAME
                                           delete a tenant: destroy its keys (crypto-shredding), then
                                           its data; its audit log stays until retention (audited)
  help                                     show this help`;

export { UsageError };

/** A chain that does not verify: the message names the log and the first bad event. */
export class AuditVerifyError extends Error {
  override name = 'AuditVerifyError';
}

function problemLine(log: string, result: VerifyResult): string {
  return `${log}: ${describeProblem(result.firstBad!)}`;
}

const STATUSES = ['open', 'acknowledged', 'resolved'] as const;

async function alertsList(args: readonly string[], json: boolean, out: (line: string) => void): Promise<void> {
  let status: (typeof STATUSES)[number] | undefined;
  for (let i = 0; i < args.length; i++) {
    const value = args[i] === '--status' ? args[++i] : undefined;
    if (value === undefined) throw new UsageError(`alerts list: unknown argument "${args[i] ?? ''}"`);
    if (!STATUSES.includes(value as (typeof STATUSES)[number])) throw new UsageError('--status must be open, acknowledged or resolved');
    status = value as (typeof STATUSES)[number];
  }
  await withCliDatabase(async (db) => {
    const items = await listAllAlerts(db, status ? { status } : {});
    if (json) out(JSON.stringify({ items }));
    else if (items.length === 0) out('no alerts');
    else for (const a of items) out(`${a.at}  ${a.severity.padEnd(6)} ${a.status.padEnd(12)} ${a.rule}  ${a.subject}  ${a.scope === 'platform' ? 'platform' : `tenant ${a.tenantId}`}  (${a.id})`);
  });
}

async function auditVerify(args: readonly string[], json: boolean, out: (line: string) => void): Promise<void> {
  let tenant: string | undefined;
  let platformOnly = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '--tenant') {
      tenant = args[++i];
      if (tenant === undefined || !isUuid(tenant)) throw new UsageError('--tenant needs a tenant id (a UUID)');
    } else if (arg === '--platform') platformOnly = true;
    else throw new UsageError(`audit verify: unknown argument "${arg}"`);
  }
  await withCliDatabase(async (db, config) => {
    const keys = loadAuditSigner(config, { warn() {} }).publicKeys;
    // Events committed but not yet sealed would not be covered: seal them first.
    await sealAllLogs(db);
    const system = db.systemDb({ reason: 'the audit verify command checks every chain' });
    const results: { log: string; tenantId: string | null; result: VerifyResult }[] = [];
    // Each chain is checked range by range, several ranges at once on PostgreSQL.
    if (!tenant) results.push({ log: 'platform', tenantId: null, result: await verifyLogInParallel(db, 'platform', keys) });
    if (!platformOnly) {
      const tenants = tenant ? [tenant.toLowerCase()] : (await system.transaction((tx) => tx.selectFrom('audit_chain_heads').select('tenant_id').orderBy('tenant_id').execute())).map((row) => row.tenant_id);
      for (const id of tenants) results.push({ log: `tenant ${id}`, tenantId: id, result: await verifyLogInParallel(db, { tenantId: id }, keys) });
    }
    const ok = results.every((entry) => entry.result.ok);
    if (json) out(JSON.stringify({ ok, logs: results.map((entry) => ({ log: entry.tenantId ? 'tenant' : 'platform', tenantId: entry.tenantId, ...entry.result })) }));
    else for (const entry of results) out(entry.result.ok ? `${entry.log}: ok, ${entry.result.count} events, head seq ${entry.result.head.seq}` : problemLine(entry.log, entry.result));
    const bad = results.find((entry) => !entry.result.ok);
    if (bad) throw new AuditVerifyError(problemLine(bad.log, bad.result));
  });
}

export async function runCli(argv: readonly string[], out: (line: string) => void): Promise<void> {
  const json = argv.includes('--json');
  const args = argv.filter((arg) => arg !== '--json');
  const [command, ...rest] = args;
  if (command === undefined || command === 'help' || command === '--help') {
    out(USAGE);
    return;
  }
  if (command === 'audit') {
    const [sub, ...options] = rest;
    if (sub !== 'verify') throw new UsageError('usage: customernode audit verify [--tenant ID] [--platform] [--json]');
    await auditVerify(options, json, out);
    return;
  }
  if (command === 'alerts') {
    const [sub, ...options] = rest;
    if (sub === 'ack' || sub === 'resolve') {
      const [id, ...extra] = options;
      if (id === undefined || !isUuid(id) || extra.length > 0) throw new UsageError(`usage: customernode alerts ${sub} ALERT_ID [--json]`);
      await withCliDatabase(async (db) => {
        const status = sub === 'ack' ? 'acknowledged' : 'resolved';
        // The command runs as the platform (no user); the operating-system account says who ran it.
        const result = await setPlatformAlertStatus(db, id.toLowerCase(), status, SYSTEM_ACTOR, { via: 'cli', osUser: os.userInfo().username });
        out(json ? JSON.stringify(result) : `platform alert ${result.id} (${result.rule}): ${result.before} -> ${result.status}`);
      });
      return;
    }
    if (sub !== 'list') throw new UsageError('usage: customernode alerts list [--status open|acknowledged|resolved] [--json] | alerts ack|resolve ALERT_ID');
    await alertsList(options, json, out);
    return;
  }
  if (command === 'backup') {
    await backupCommand(rest, json, out);
    return;
  }
  if (command === 'keys') {
    await keysCommand(rest, json, out, progressTo(process.stderr));
    return;
  }
  if (command === 'tenants') {
    const [sub, ...options] = rest;
    const tenant = options[0] === '--tenant' ? options[1] : undefined;
    const confirm = options[2] === '--confirm' ? options[3] : undefined;
    if (sub !== 'delete' || tenant === undefined || !isUuid(tenant) || confirm === undefined || options.length !== 4) {
      throw new UsageError('usage: customernode tenants delete --tenant ID --confirm "TENANT NAME" [--json]');
    }
    await withCliDatabase(async (db, config) => {
      try {
        const keyring = createKeyring(config, { warn() {} });
        const result = await deleteTenant(db, keyring, { tenantId: tenant.toLowerCase(), confirmName: confirm, actor: SYSTEM_ACTOR });
        // The keystore beside the backups loses the tenant's keys too: older backups are shredded as well.
        const target = targetFromConfig(config);
        const backupKeysRemoved = target === undefined ? null : (await forgetTenantKeys(target, keyring.provider, tenant.toLowerCase())).removed;
        out(
          json
            ? JSON.stringify({ tenantId: tenant.toLowerCase(), ...result, backupKeysRemoved })
            : `tenant ${tenant.toLowerCase()} deleted: ${result.keysDestroyed} keys destroyed${backupKeysRemoved === null ? '' : ` (and ${backupKeysRemoved} in the backup keystore)`}, ${result.rows} rows removed; its audit log stays until retention`,
        );
      } catch (error) {
        if (error instanceof AppError) throw new UsageError(error.publicDetail ?? error.message);
        throw error;
      }
    });
    return;
  }
  if (command !== 'migrate') throw new UsageError(`unknown command "${command}" (try: customernode help)`);
  if (rest.length > 0) throw new UsageError(`migrate takes no arguments`);
  const config = loadConfig();
  const applied = await runMigrations({ config, logger: pino({ level: 'silent' }) });
  out(json ? JSON.stringify({ applied }) : applied.length > 0 ? `applied migrations: ${applied.join(', ')}` : 'database is up to date');
}

if (import.meta.main) {
  runCli(process.argv.slice(2), (line) => process.stdout.write(`${line}\n`)).catch((error: unknown) => {
    const known =
      error instanceof ConfigError ||
      error instanceof DataDirLockedError ||
      error instanceof UsageError ||
      error instanceof AuditVerifyError ||
      error instanceof AlertStatusError ||
      error instanceof BackupCheckError ||
      error instanceof BackupIntegrityError ||
      error instanceof BackupNotFoundError ||
      error instanceof SnapshotError;
    const message = known ? (error as Error).message : `failed: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`;
    process.stderr.write(`customernode: ${message}\n`);
    process.exit(known && error instanceof UsageError ? 64 : 1);
  });
}
