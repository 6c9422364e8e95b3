/**
 * Audit retention: each tenant keeps its events for auditRetentionDays (default 365, never
 * under 90). The scheduled purge cuts each tenant's chain at the newest seq before which
 * every event has expired, signs a checkpoint at that cut (so what remains still verifies
 * from a signed anchor), deletes through the database function cn_audit_purge (which checks
 * all of that again itself) and records the purge in the tenant's log and the platform log.
 */
import { sql } from 'kysely';
import { NO_REQUEST, recordPlatformEvent, recordTenantEvent, SYSTEM_ACTOR } from '../../kernel/audit/record.ts';
import { sealAllLogs, writeTenantCheckpoint, type AuditSigner } from '../../kernel/audit/sealer.ts';
import { asBuffer } from '../../kernel/db/database.ts';
import type { Database } from '../../kernel/db/database.ts';
import { DEFAULT_AUDIT_RETENTION_DAYS } from '../tenancy/index.ts';

export interface PurgeReport {
  readonly tenantId: string;
  readonly throughSeq: number;
  readonly deleted: number;
  readonly retentionDays: number;
}


/** One pass over every tenant; returns what was purged. */
export async function purgeExpiredAuditEvents(db: Database, signer: AuditSigner): Promise<PurgeReport[]> {
  // Only sealed events can be purged; seal first so the cut sees the whole log.
  await sealAllLogs(db);
  const system = db.systemDb({ reason: 'the audit retention purge cuts every tenant log at its retention' });
  // Per tenant: the cut is just before the oldest event still within retention (or the head).
  const { rows: cuts } = await system.transaction((tx) =>
    sql<{ tenant_id: string; cut: string; days: number }>`
      select h.tenant_id, coalesce(young.seq - 1, h.seq) as cut, coalesce(s.audit_retention_days, ${DEFAULT_AUDIT_RETENTION_DAYS}) as days
      from audit_chain_heads h
      left join tenant_settings s on s.tenant_id = h.tenant_id
      left join lateral (
        select min(e.seq) as seq from audit_log e
        where e.tenant_id = h.tenant_id
          and e.at >= now() - make_interval(days => greatest(coalesce(s.audit_retention_days, ${DEFAULT_AUDIT_RETENTION_DAYS}), 90))
      ) young on true
      where exists (
        select 1 from audit_seals old where old.tenant_id = h.tenant_id and old.seq <= coalesce(young.seq - 1, h.seq)
      )`.execute(tx),
  );
  const reports: PurgeReport[] = [];
  for (const row of cuts) {
    const through = Number(row.cut);
    const report = await system.transaction(async (tx) => {
      const event = await tx.selectFrom('audit_seals').select('hash').where('tenant_id', '=', row.tenant_id).where('seq', '=', String(through)).executeTakeFirst();
      if (!event) return null; // already purged through here by another process
      await writeTenantCheckpoint(tx, signer, row.tenant_id, through, asBuffer(event.hash), 'retention');
      const { rows } = await sql<{ deleted: string }>`select cn_audit_purge(${row.tenant_id}::uuid, ${through}::bigint) as deleted`.execute(tx);
      const deleted = Number(rows[0]?.deleted ?? 0);
      const metadata = { throughSeq: through, deleted, retentionDays: row.days, checkpointSeq: through };
      await recordTenantEvent(tx, row.tenant_id, SYSTEM_ACTOR, NO_REQUEST, { action: 'audit.purged', target: { type: 'tenant', id: row.tenant_id }, metadata });
      await recordPlatformEvent(tx, SYSTEM_ACTOR, NO_REQUEST, { action: 'audit.purged', tenantId: row.tenant_id, target: { type: 'tenant', id: row.tenant_id }, metadata });
      return { tenantId: row.tenant_id, throughSeq: through, deleted, retentionDays: row.days };
    });
    if (report) reports.push(report);
  }
  return reports;
}

/** Runs the purge every intervalMinutes (and once shortly after start); failures are logged and retried next time. */
export function startRetentionPurge(
  db: Database,
  signer: AuditSigner,
  intervalMinutes: number,
  log: { info(object: object, message: string): void; error(object: object, message: string): void },
  /** The first pass, a minute after start by default (the server is up first). */
  firstDelayMs = 60_000,
): () => void {
  let running = false;
  const pass = () => {
    if (running) return;
    running = true;
    purgeExpiredAuditEvents(db, signer)
      .then((reports) => {
        for (const report of reports) log.info({ ...report }, 'audit events past retention purged');
      })
      .catch((error: unknown) => log.error({ err: error instanceof Error ? { message: error.message } : String(error) }, 'audit retention purge failed; retrying at the next pass'))
      .finally(() => {
        running = false;
      });
  };
  const first = setTimeout(pass, firstDelayMs);
  const timer = setInterval(pass, intervalMinutes * 60_000);
  first.unref();
  timer.unref();
  return () => {
    clearTimeout(first);
    clearInterval(timer);
  };
}
