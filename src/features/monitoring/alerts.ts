/**
 * Anomaly rules over each tenant's audit log. They run outside the request path: a loop
 * reads the events committed since its last pass (every ALERT_INTERVAL_MS, so an alert
 * appears within seconds) and raises alerts, one unresolved alert per rule and subject.
 * Thresholds are settings (ALERT_*) with named defaults (DEFAULT_ALERT_THRESHOLDS); the
 * rules never fire on ordinary use (tested). A raised alert is also written to the
 * operator's stream (AUDIT_STREAM) once its transaction commits.
 */
import { sql, type Selectable } from 'kysely';
import { NO_REQUEST, recordPlatformEvent, type Actor } from '../../kernel/audit/record.ts';
import { sealAllLogs } from '../../kernel/audit/sealer.ts';
import { DEFAULT_ALERT_THRESHOLDS, type AlertThresholds } from '../../kernel/config/config.ts';
import { emitAfterCommit, type Database, type Tx } from '../../kernel/db/database.ts';
import type { AuditLogView, PlatformAuditEventsTable } from '../../kernel/db/schema.ts';
import { isPrivilegedRole } from '../access/index.ts';

export const ALERT_INTERVAL_MS = 2000;
/** Exports, of the audit log or of the tenant's records. */
const EXPORT_ACTIONS = ['audit.exported', 'tenant.exported'];
/** Reminders that jobs record as events (integrations, access reviews) and the rules below raise. */
export const STALE_CREDENTIAL_RULE = 'integration_credential_stale';
export const OVERDUE_REVIEW_RULE = 'access_review_overdue';
/**
 * How far back (in seq) the windowed rules look, whatever their time window: each check then
 * reads a bounded range of the index instead of the log's whole history of that action. A
 * tenant would need more events than this inside one window for a count to come up short.
 */
export const HISTORY_LOOKBACK_EVENTS = 100_000;
const lookbackFrom = (seq: string | number | null) => String(Math.max(0, Number(seq) - HISTORY_LOOKBACK_EVENTS));
/** Events read per tenant and pass (the rest wait for the next pass). */
const BATCH = 500;

type Event = Selectable<AuditLogView>;
type Severity = 'low' | 'medium' | 'high';
interface Raised {
  readonly rule: string;
  readonly severity: Severity;
  readonly subject: string;
  readonly details: Record<string, unknown>;
}

const actorSubject = (event: Event | PlatformEvent) => `${event.actor_type}:${event.actor_id ?? 'unknown'}`;

/** The rules that need one event and nothing else. */
function singleEventRules(event: Event): Raised | null {
  const metadata = event.metadata as Record<string, unknown>;
  switch (event.action) {
    case 'auth.lockout':
      return { rule: 'brute_force', severity: 'high', subject: actorSubject(event), details: { until: metadata.until ?? null } };
    case 'auth.mfa.disabled':
      return { rule: 'mfa_disabled', severity: 'medium', subject: actorSubject(event), details: {} };
    case 'member.role_changed':
      // The target is a member, or (a pending SCIM resource's) invitation.
      return isPrivilegedRole(metadata.after) && !isPrivilegedRole(metadata.before) ? { rule: 'privileged_grant', severity: 'medium', subject: `${event.target_type ?? 'user'}:${event.target_id}`, details: { before: metadata.before, after: metadata.after, by: actorSubject(event) } } : null;
    case 'member.joined':
      return isPrivilegedRole(metadata.role) ? { rule: 'privileged_grant', severity: 'medium', subject: `user:${event.target_id}`, details: { role: metadata.role, via: metadata.via ?? 'invitation' } } : null;
    // A person in the tenant reported something: always an alert, one per report.
    case 'security.reported':
      return { rule: 'reported_activity', severity: 'high', subject: `report:${event.target_id}`, details: { what: metadata.what ?? null, when: metadata.when ?? null, eventIds: metadata.eventIds ?? [], by: actorSubject(event) } };
    case 'integration.credential_stale':
      return { rule: STALE_CREDENTIAL_RULE, severity: 'low', subject: `integration:${event.target_id}`, details: metadata };
    case 'access_review.overdue':
      return { rule: OVERDUE_REVIEW_RULE, severity: 'low', subject: 'access_review', details: metadata };
    // The read meter (kernel/http/read-meter.ts) records one event when a principal's reads cross the threshold.
    case 'access.bulk_read':
      return { rule: 'large_read', severity: 'medium', subject: actorSubject(event), details: { records: metadata.records ?? null, windowMinutes: metadata.windowMinutes ?? null, routes: metadata.routes ?? [] } };
    case 'apikey.created':
      return isPrivilegedRole(metadata.role) ? { rule: 'privileged_api_key', severity: 'medium', subject: `apikey:${event.target_id}`, details: { role: metadata.role, by: actorSubject(event) } } : null;
    default:
      return null;
  }
}

/** The rules that look at recent history too. */
async function historyRules(tx: Tx, tenantId: string, event: Event, limits: AlertThresholds): Promise<Raised | null> {
  if (event.action === 'auth.login.failed' && event.ip !== null) {
    const row = await tx
      .selectFrom('audit_log')
      .select((eb) => eb.fn.count<number>('actor_id').distinct().as('n'))
      .where('tenant_id', '=', tenantId)
      .where('sealed_action', '=', 'auth.login.failed')
      .where('ip', '=', event.ip)
      .where('at', '>', sql<Date>`${event.at}::timestamptz - make_interval(mins => ${limits.sprayWindowMinutes})`)
      .where('seq', '<=', String(event.seq))
      .where('seq', '>', lookbackFrom(event.seq))
      .executeTakeFirstOrThrow();
    if (Number(row.n) >= limits.sprayAccounts) return { rule: 'password_spraying', severity: 'high', subject: `ip:${event.ip}`, details: { accounts: Number(row.n), windowMinutes: limits.sprayWindowMinutes } };
  }
  if (event.action === 'access.denied' && event.actor_id !== null) {
    const row = await tx
      .selectFrom('audit_log')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('tenant_id', '=', tenantId)
      .where('sealed_action', '=', 'access.denied')
      .where('actor_id', '=', event.actor_id)
      .where('at', '>', sql<Date>`${event.at}::timestamptz - make_interval(mins => ${limits.denialWindowMinutes})`)
      .where('seq', '<=', String(event.seq))
      .where('seq', '>', lookbackFrom(event.seq))
      .executeTakeFirstOrThrow();
    if (Number(row.n) >= limits.denialBurst) return { rule: 'access_denied_burst', severity: 'high', subject: actorSubject(event), details: { denials: Number(row.n), windowMinutes: limits.denialWindowMinutes } };
  }
  if (EXPORT_ACTIONS.includes(event.action) && event.actor_id !== null) {
    const row = await tx
      .selectFrom('audit_log')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('tenant_id', '=', tenantId)
      .where('sealed_action', 'in', EXPORT_ACTIONS)
      .where('actor_id', '=', event.actor_id)
      .where('at', '>', sql<Date>`${event.at}::timestamptz - make_interval(mins => ${limits.exportWindowMinutes})`)
      .where('seq', '<=', String(event.seq))
      .where('seq', '>', lookbackFrom(event.seq))
      .executeTakeFirstOrThrow();
    if (Number(row.n) >= limits.exportBurst) return { rule: 'export_burst', severity: 'medium', subject: actorSubject(event), details: { exports: Number(row.n), windowMinutes: limits.exportWindowMinutes } };
  }
  if (event.action === 'auth.login.succeeded' && event.actor_id !== null && event.ip !== null) {
    // A login of an admin or owner from an address and browser never seen for them here.
    const member = await tx.selectFrom('memberships').select('role').where('tenant_id', '=', tenantId).where('user_id', '=', event.actor_id).executeTakeFirst();
    if (member && isPrivilegedRole(member.role)) {
      const seen = await tx
        .selectFrom('audit_log')
        .select('seq')
        .where('tenant_id', '=', tenantId)
        .where('actor_id', '=', event.actor_id)
        .where('sealed_action', 'in', ['auth.login.succeeded', 'auth.signup', 'auth.mfa.succeeded'])
        .where('ip', '=', event.ip)
        .where('user_agent', event.user_agent === null ? 'is' : '=', event.user_agent)
        .where('seq', '<', String(event.seq))
        .limit(1)
        .executeTakeFirst();
      const earlier = await tx
        .selectFrom('audit_log')
        .select('seq')
        .where('tenant_id', '=', tenantId)
        .where('actor_id', '=', event.actor_id)
        .where('sealed_action', 'in', ['auth.login.succeeded', 'auth.signup'])
        .where('seq', '<', String(event.seq))
        .limit(1)
        .executeTakeFirst();
      // Only once there is history to compare with: a first login is not "new".
      if (!seen && earlier) return { rule: 'privileged_login_new_device', severity: 'low', subject: actorSubject(event), details: { ip: event.ip, userAgent: event.user_agent } };
    }
  }
  return null;
}

export interface NewAlert extends Raised {
  readonly tenantId: string;
  readonly id: string;
}

/** Returns the alert's id when this raised a new alert (not when the evidence joined an open one). */
async function raise(tx: Tx, tenantId: string, alert: Raised, evidence: string): Promise<string | null> {
  // One unresolved alert per rule and subject: later evidence joins it.
  const { rows } = await sql<{ id: string; inserted: boolean }>`
    insert into security_alerts (tenant_id, rule, severity, subject, evidence, details)
    values (${tenantId}, ${alert.rule}, ${alert.severity}, ${alert.subject}, array[${evidence}]::uuid[], ${JSON.stringify(alert.details)}::jsonb)
    on conflict (tenant_id, rule, subject) where status <> 'resolved'
    do update set evidence = (security_alerts.evidence || excluded.evidence)[1:100], updated_at = date_trunc('milliseconds', now())
    returning id, (xmax = 0) as inserted`.execute(tx);
  const row = rows[0];
  return row?.inserted ? row.id : null;
}

type PlatformEvent = Selectable<PlatformAuditEventsTable>;

export interface NewPlatformAlert extends Raised {
  readonly id: string;
}

/** Rules over the operators' log: what no single tenant can see. */
async function platformRules(tx: Tx, event: PlatformEvent, limits: AlertThresholds): Promise<Raised | null> {
  const metadata = event.metadata as Record<string, unknown>;
  if (event.action === 'security.reported') {
    return { rule: 'reported_activity', severity: 'high', subject: `report:${event.tenant_id}:${event.target_id}`, details: { tenantId: event.tenant_id, what: metadata.what ?? null, when: metadata.when ?? null, by: actorSubject(event) } };
  }
  if (event.action === 'auth.credential_stuffing') {
    return { rule: 'credential_stuffing', severity: 'high', subject: `ip:${String(metadata.ip ?? event.ip)}`, details: { distinctAccounts: metadata.distinctAccounts ?? null, until: metadata.until ?? null } };
  }
  // Backups that failed, did not happen, or did not restore in a drill: recovery is at risk.
  if (event.action === 'backup.failed' || event.action === 'backup.missed' || (event.action === 'backup.verified' && event.outcome === 'failure')) {
    const rule = event.action === 'backup.failed' ? 'backup_failed' : event.action === 'backup.missed' ? 'backup_missed' : 'restore_drill_failed';
    return { rule, severity: 'high', subject: 'backups', details: { ...metadata } };
  }
  if (event.action === 'access.denied' && event.actor_id !== null) {
    // Denied requests to tenants the caller is not a member of: probing for other tenants' ids.
    const row = await tx
      .selectFrom('platform_audit_events')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('action', '=', 'access.denied')
      .where('actor_id', '=', event.actor_id)
      .where('at', '>', sql<Date>`${event.at}::timestamptz - make_interval(mins => ${limits.denialWindowMinutes})`)
      .where('seq', '<=', String(event.seq))
      .where('seq', '>', lookbackFrom(event.seq))
      .executeTakeFirstOrThrow();
    if (Number(row.n) >= limits.denialBurst) return { rule: 'cross_tenant_probing', severity: 'high', subject: actorSubject(event), details: { denials: Number(row.n), windowMinutes: limits.denialWindowMinutes } };
  }
  return null;
}

/** A new alert's line in the operator's stream (AUDIT_STREAM), beside the audit events' lines. */
function streamLineOf(scope: 'tenant' | 'platform', tenantId: string | null, id: string, alert: Raised, evidence: string): string {
  return JSON.stringify({ stream: 'alert', scope, tenantId, id, rule: alert.rule, severity: alert.severity, subject: alert.subject, status: 'open', evidence: [evidence], details: alert.details });
}

async function evaluatePlatformAlerts(db: Database, limits: AlertThresholds): Promise<{ count: number; fresh: NewPlatformAlert[] }> {
  const system = db.systemDb({ reason: "anomaly rules read the operators' log and raise platform alerts" });
  return system.transaction(async (tx) => {
    const cursor = await tx.selectFrom('platform_alert_cursor').select('last_seq').forUpdate().executeTakeFirstOrThrow();
    const events = await tx.selectFrom('platform_audit_events').selectAll().where('seq', '>', cursor.last_seq).orderBy('seq').limit(BATCH).execute();
    const fresh: NewPlatformAlert[] = [];
    let count = 0;
    for (const event of events) {
      const alert = await platformRules(tx, event, limits);
      if (!alert) continue;
      const { rows } = await sql<{ id: string; inserted: boolean }>`
        insert into platform_security_alerts (rule, severity, subject, evidence, details)
        values (${alert.rule}, ${alert.severity}, ${alert.subject}, array[${event.id}]::uuid[], ${JSON.stringify(alert.details)}::jsonb)
        on conflict (rule, subject) where status <> 'resolved'
        do update set evidence = (platform_security_alerts.evidence || excluded.evidence)[1:100], updated_at = date_trunc('milliseconds', now())
        returning id, (xmax = 0) as inserted`.execute(tx);
      const raised = rows[0];
      if (raised?.inserted) {
        fresh.push({ ...alert, id: raised.id });
        emitAfterCommit(() => streamLineOf('platform', null, raised.id, alert, event.id));
      }
      count++;
    }
    const last = events.at(-1);
    if (last) await tx.updateTable('platform_alert_cursor').set({ last_seq: Number(last.seq) }).execute();
    return { count, fresh };
  });
}

/**
 * One pass over every tenant's new events; returns how many alerts were raised or joined.
 * notify hears of each new alert once its transaction has committed.
 */
export async function evaluateAlerts(
  db: Database,
  notify?: (alert: NewAlert) => Promise<void>,
  notifyPlatform?: (alert: NewPlatformAlert) => void,
  limits: AlertThresholds = DEFAULT_ALERT_THRESHOLDS,
): Promise<number> {
  // The rules read the sealed log: seq order there is commit order, with no gaps to miss.
  await sealAllLogs(db);
  const platform = await evaluatePlatformAlerts(db, limits);
  for (const alert of platform.fresh) notifyPlatform?.(alert);
  const system = db.systemDb({ reason: 'anomaly rules read every tenant log and raise alerts' });
  const tenants = await system.transaction((tx) =>
    tx
      .selectFrom('audit_chain_heads as h')
      .leftJoin('alert_cursors as c', 'c.tenant_id', 'h.tenant_id')
      .select(['h.tenant_id', 'h.seq', 'c.last_seq'])
      .where(sql<boolean>`h.seq > coalesce(c.last_seq, 0)`)
      .execute(),
  );
  let raised = platform.count;
  const fresh: NewAlert[] = [];
  for (const tenant of tenants) {
    raised += await system.transaction(async (tx) => {
      const after = Number(tenant.last_seq ?? 0);
      const events = await tx.selectFrom('audit_log').selectAll().where('tenant_id', '=', tenant.tenant_id).where('seq', '>', String(after)).orderBy('seq').limit(BATCH).execute();
      let count = 0;
      for (const event of events) {
        const alert = singleEventRules(event) ?? (await historyRules(tx, tenant.tenant_id, event, limits));
        if (alert) {
          const id = await raise(tx, tenant.tenant_id, alert, event.id);
          if (id !== null) {
            fresh.push({ ...alert, tenantId: tenant.tenant_id, id });
            emitAfterCommit(() => streamLineOf('tenant', tenant.tenant_id, id, alert, event.id));
          }
          count++;
        }
      }
      const last = events.at(-1);
      if (last) {
        await tx
          .insertInto('alert_cursors')
          .values({ tenant_id: tenant.tenant_id, last_seq: Number(last.seq) })
          .onConflict((oc) => oc.column('tenant_id').doUpdateSet({ last_seq: Number(last.seq) }))
          .execute();
      }
      return count;
    });
  }
  for (const alert of fresh) await notify?.(alert);
  return raised;
}

/** Runs evaluateAlerts every intervalMs (ALERT_INTERVAL_MS) until stopped; a failing pass is logged and retried. */
export function startAlertLoop(
  db: Database,
  log: { error(object: object, message: string): void; warn(object: object, message: string): void },
  notify?: (alert: NewAlert) => Promise<void>,
  limits: AlertThresholds = DEFAULT_ALERT_THRESHOLDS,
  intervalMs = ALERT_INTERVAL_MS,
): () => void {
  // Platform alerts go to the operators' log (and from there to their SIEM).
  const notifyPlatform = (alert: NewPlatformAlert) => log.warn({ platformSecurityAlert: { id: alert.id, rule: alert.rule, severity: alert.severity, subject: alert.subject } }, 'platform security alert raised');
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    evaluateAlerts(db, notify, notifyPlatform, limits)
      .catch((error: unknown) => log.error({ err: error instanceof Error ? { message: error.message } : String(error) }, 'alert rules failed; retrying'))
      .finally(() => {
        running = false;
      });
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

export interface OperatorAlert {
  readonly scope: 'platform' | 'tenant';
  readonly tenantId: string | null;
  readonly id: string;
  readonly rule: string;
  readonly severity: string;
  readonly subject: string;
  readonly status: string;
  readonly at: string;
  readonly evidence: readonly string[];
  readonly details: Record<string, unknown>;
}

/** The operators' view: platform alerts and every tenant's, newest first. */
export async function listAllAlerts(db: Database, options: { status?: 'open' | 'acknowledged' | 'resolved'; limit?: number } = {}): Promise<OperatorAlert[]> {
  const limit = options.limit ?? 500;
  return db.systemDb({ reason: 'operators list the security alerts of the platform and of every tenant' }).transaction(async (tx) => {
    let platform = tx.selectFrom('platform_security_alerts').selectAll();
    let tenants = tx.selectFrom('security_alerts').selectAll();
    if (options.status) {
      platform = platform.where('status', '=', options.status);
      tenants = tenants.where('status', '=', options.status);
    }
    const rows = [
      ...(await platform.orderBy('at', 'desc').limit(limit).execute()).map((row) => ({ ...row, scope: 'platform' as const, tenant_id: null })),
      ...(await tenants.orderBy('at', 'desc').limit(limit).execute()).map((row) => ({ ...row, scope: 'tenant' as const })),
    ];
    return rows
      .sort((a, b) => b.at.getTime() - a.at.getTime())
      .slice(0, limit)
      .map((row) => ({
        scope: row.scope,
        tenantId: row.tenant_id,
        id: row.id,
        rule: row.rule,
        severity: row.severity,
        subject: row.subject,
        status: row.status,
        at: row.at.toISOString(),
        evidence: row.evidence,
        details: row.details,
      }));
  });
}

export class AlertStatusError extends Error {
  override name = 'AlertStatusError';
}

/**
 * An operator acknowledges or resolves a platform alert (the CLI's `alerts ack|resolve`),
 * recorded in the platform log as alert.acknowledged or alert.resolved with before and after.
 * A resolved alert stays resolved; an unknown id is an AlertStatusError too.
 */
export async function setPlatformAlertStatus(
  db: Database,
  id: string,
  status: 'acknowledged' | 'resolved',
  actor: Actor,
  metadata: Record<string, unknown> = {},
): Promise<{ id: string; rule: string; before: string; status: string }> {
  return db.systemDb({ reason: 'an operator acknowledges or resolves a platform security alert' }).transaction(async (tx) => {
    const before = await tx.selectFrom('platform_security_alerts').select(['status', 'rule']).where('id', '=', id).forUpdate().executeTakeFirst();
    if (!before) throw new AlertStatusError(`no platform alert ${id}`);
    if (before.status === 'resolved') throw new AlertStatusError(`platform alert ${id} is resolved, and a resolved alert stays resolved`);
    await tx.updateTable('platform_security_alerts').set({ status, updated_at: new Date() }).where('id', '=', id).execute();
    await recordPlatformEvent(tx, actor, NO_REQUEST, { action: `alert.${status}`, target: { type: 'platform_security_alert', id }, metadata: { ...metadata, rule: before.rule, before: before.status, after: status } });
    return { id, rule: before.rule, before: before.status, status };
  });
}
