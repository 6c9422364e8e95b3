/**
 * Webhook delivery: the tenant's sealed audit events (seq order is commit order) become
 * deliveries for each enabled webhook whose event types match, sent as signed JSON through
 * the egress guard and retried with backoff; each attempt is logged on the delivery.
 *
 * Signature (like Stripe's): header `CustomerNode-Signature: t=<unix seconds>,v1=<hex>` where
 * hex = HMAC-SHA-256(secret, `<t>.<raw body>`). A receiver recomputes it over the raw body,
 * compares in constant time and rejects a t older than a few minutes (replay).
 */
import { createHmac } from 'node:crypto';
import { sql } from 'kysely';
import type { Keyring } from '../../kernel/crypto/envelope.ts';
import { NO_REQUEST, recordTenantEvent, SYSTEM_ACTOR } from '../../kernel/audit/record.ts';
import { sealAllLogs } from '../../kernel/audit/sealer.ts';
import { STALE_CREDENTIAL_RULE } from '../monitoring/index.ts';
import type { Database } from '../../kernel/db/database.ts';
import { egressRefusal, type EgressGuard } from '../../kernel/net/egress.ts';
import { secretPlace, urlPlace } from './routes.ts';

/** Seconds to wait before attempt n+1 (after n failures); then the delivery is failed for good. */
export const BACKOFF_SECONDS = [30, 120, 600, 3600, 6 * 3600] as const;
export const MAX_ATTEMPTS = BACKOFF_SECONDS.length + 1;
const TIMEOUT_MS = 10_000;
const BATCH = 500;

export function signPayload(secret: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

export function matchesEventType(patterns: readonly string[], action: string): boolean {
  return patterns.some((pattern) => pattern === '*' || pattern === action || (pattern.endsWith('.*') && action.startsWith(pattern.slice(0, -1))));
}

/** Turns new sealed events into deliveries for matching webhooks; returns how many were queued. */
export async function enqueueDeliveries(db: Database): Promise<number> {
  const system = db.systemDb({ reason: "webhooks: read each tenant's new audit events and queue deliveries" });
  // Nothing to do (and nothing to seal for) while no tenant has an enabled webhook.
  const anyWebhook = await system.transaction((tx) => tx.selectFrom('webhooks').select('id').where('enabled', '=', true).limit(1).executeTakeFirst());
  if (!anyWebhook) return 0;
  await sealAllLogs(db);
  const cursors = await system.transaction((tx) =>
    tx
      .selectFrom('webhook_cursors as c')
      .innerJoin('audit_chain_heads as h', 'h.tenant_id', 'c.tenant_id')
      .select(['c.tenant_id', 'c.last_seq'])
      .where(sql<boolean>`h.seq > c.last_seq`)
      .where(({ exists, selectFrom }) => exists(selectFrom('webhooks as w').select('w.id').whereRef('w.tenant_id', '=', 'c.tenant_id').where('w.enabled', '=', true)))
      .execute(),
  );
  let queued = 0;
  for (const cursor of cursors) {
    queued += await system.transaction(async (tx) => {
      const hooks = await tx.selectFrom('webhooks').select(['id', 'event_types']).where('tenant_id', '=', cursor.tenant_id).where('enabled', '=', true).execute();
      const events = await tx
        .selectFrom('audit_log')
        .select(['id', 'seq', 'action'])
        .where('tenant_id', '=', cursor.tenant_id)
        .where('seq', '>', String(cursor.last_seq))
        .orderBy('seq')
        .limit(BATCH)
        .execute();
      const rows = events.flatMap((event) =>
        hooks.filter((hook) => matchesEventType(hook.event_types, event.action)).map((hook) => ({ tenant_id: cursor.tenant_id, webhook_id: hook.id, event_id: event.id, action: event.action })),
      );
      if (rows.length > 0) await tx.insertInto('webhook_deliveries').values(rows).onConflict((oc) => oc.doNothing()).execute();
      const last = events.at(-1);
      if (last) await tx.updateTable('webhook_cursors').set({ last_seq: Number(last.seq) }).where('tenant_id', '=', cursor.tenant_id).execute();
      return rows.length;
    });
  }
  return queued;
}

interface Attempt {
  readonly ok: boolean;
  readonly status: number | null;
  readonly error: string | null;
}

async function send(egress: EgressGuard, url: string, secret: string, deliveryId: string, action: string, body: string): Promise<Attempt> {
  const timestamp = Math.floor(Date.now() / 1000);
  try {
    const response = await egress.fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'user-agent': 'CustomerNode-Webhooks/1',
        'customernode-delivery': deliveryId,
        'customernode-event': action,
        'customernode-signature': signPayload(secret, timestamp, body),
      },
      body,
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    await response.body?.cancel().catch(() => undefined);
    if (response.status >= 200 && response.status < 300) return { ok: true, status: response.status, error: null };
    if (response.status >= 300 && response.status < 400) return { ok: false, status: response.status, error: 'redirect not followed' };
    return { ok: false, status: response.status, error: `HTTP ${response.status}` };
  } catch (error) {
    // Reasons a tenant admin may see: never internals of our network beyond "refused".
    const refused = egressRefusal(error);
    if (refused) return { ok: false, status: null, error: refused.message };
    if ((error as { name?: string }).name === 'TimeoutError') return { ok: false, status: null, error: 'timed out' };
    return { ok: false, status: null, error: 'could not connect' };
  }
}

/** Sends up to `limit` due deliveries; returns how many were attempted. */
export async function sendDueDeliveries(db: Database, keyring: Keyring, egress: EgressGuard, limit = 20): Promise<number> {
  const system = db.systemDb({ reason: 'webhooks: send due deliveries and log each attempt' });
  // Claim: push the next attempt out first, so a second worker (or a crash) never sends twice at once.
  const due = await system.transaction((tx) =>
    sql<{ tenant_id: string; id: string; webhook_id: string; event_id: string; action: string; attempts: number }>`
      update webhook_deliveries d set next_attempt_at = now() + make_interval(secs => ${TIMEOUT_MS / 1000 + 60})
      where (d.tenant_id, d.id) in (
        select tenant_id, id from webhook_deliveries where status = 'pending' and next_attempt_at <= now()
        order by next_attempt_at limit ${limit} for update skip locked)
      returning d.tenant_id, d.id, d.webhook_id, d.event_id, d.action, d.attempts`.execute(tx).then((r) => r.rows),
  );
  for (const delivery of due) {
    // In the tenant's own transaction: its key decrypts the secret only there (envelope.ts), under RLS.
    const prepared = await db.withTenant(delivery.tenant_id, async (tx) => {
      const hook = await tx.selectFrom('webhooks').select(['url_ct', 'secret', 'enabled']).where('tenant_id', '=', delivery.tenant_id).where('id', '=', delivery.webhook_id).executeTakeFirst();
      const event = await tx.selectFrom('audit_log').selectAll().where('tenant_id', '=', delivery.tenant_id).where('id', '=', delivery.event_id).executeTakeFirst();
      if (!hook || !event) return null;
      const secret = (await keyring.decrypt(tx, secretPlace(delivery.tenant_id, delivery.webhook_id), hook.secret)).toString('utf8');
      const url = (await keyring.decrypt(tx, urlPlace(delivery.tenant_id, delivery.webhook_id), hook.url_ct)).toString('utf8');
      const body = JSON.stringify({
        id: delivery.id,
        type: event.action,
        tenantId: delivery.tenant_id,
        event: {
          id: event.id,
          seq: Number(event.seq),
          at: event.at.toISOString(),
          actor: { type: event.actor_type, id: event.actor_id, ...(event.actor_email ? { email: event.actor_email } : {}) },
          action: event.action,
          ...(event.target_type ? { target: { type: event.target_type, id: event.target_id } } : {}),
          outcome: event.outcome,
          metadata: event.metadata,
        },
      });
      return { url, secret, body, enabled: hook.enabled };
    });
    const attempt: Attempt = prepared === null ? { ok: false, status: null, error: 'webhook or event gone' } : prepared.enabled ? await send(egress, prepared.url, prepared.secret, delivery.id, delivery.action, prepared.body) : { ok: false, status: null, error: 'webhook disabled' };
    const attempts = delivery.attempts + 1;
    const final = attempt.ok || attempts >= MAX_ATTEMPTS || prepared === null || !prepared.enabled;
    await system.transaction((tx) =>
      tx
        .updateTable('webhook_deliveries')
        .set({
          attempts,
          last_status: attempt.status,
          last_error: attempt.error,
          status: attempt.ok ? 'succeeded' : final ? 'failed' : 'pending',
          delivered_at: attempt.ok ? sql`now()` : null,
          next_attempt_at: final ? sql`now()` : sql`now() + make_interval(secs => ${BACKOFF_SECONDS[attempts - 1] ?? 0})`,
        })
        .where('tenant_id', '=', delivery.tenant_id)
        .where('id', '=', delivery.id)
        .execute(),
    );
  }
  return due.length;
}

/**
 * Integrations whose credential is older than maxAgeDays: an `integration.credential_stale`
 * event in the tenant's log, which the alert rules turn into an alert for its admins (mailed by
 * the notifier). Only while no such alert is open, so an ignored reminder is not repeated hourly.
 */
export async function remindStaleCredentials(db: Database, maxAgeDays: number): Promise<number> {
  const system = db.systemDb({ reason: 'integrations: remind admins of credentials past their rotation age' });
  return system.transaction(async (tx) => {
    const { rows } = await sql<{ tenant_id: string; id: string; name: string; provider: string; credential_rotated_at: Date }>`
      select i.tenant_id, i.id, i.name, i.provider, i.credential_rotated_at
      from integrations i
      where i.credential_rotated_at < now() - make_interval(days => ${maxAgeDays}::int)
        and not exists (select 1 from security_alerts a where a.tenant_id = i.tenant_id and a.rule = ${STALE_CREDENTIAL_RULE} and a.subject = 'integration:' || i.id and a.status <> 'resolved')
        and not exists (select 1 from audit_events e where e.tenant_id = i.tenant_id and e.action = 'integration.credential_stale' and e.target_id = i.id::text and e.at > now() - interval '1 day')`.execute(tx);
    for (const row of rows) {
      await recordTenantEvent(tx, row.tenant_id, SYSTEM_ACTOR, NO_REQUEST, {
        action: 'integration.credential_stale',
        target: { type: 'integration', id: row.id },
        metadata: { integration: row.name, provider: row.provider, rotatedAt: new Date(row.credential_rotated_at).toISOString(), maxAgeDays },
      });
    }
    return rows.length;
  });
}

/** Runs the delivery loop every intervalMs and the credential reminder hourly; returns stop. */
export function startWebhookWorker(
  db: Database,
  keyring: Keyring,
  egress: EgressGuard,
  options: { intervalMs: number; credentialMaxAgeDays: number },
  log: { error(object: object, message: string): void },
): () => void {
  let running = false;
  let lastReminder = 0;
  const tick = async () => {
    await enqueueDeliveries(db);
    while ((await sendDueDeliveries(db, keyring, egress)) > 0) {
      // drain what is due, 20 at a time
    }
    if (Date.now() - lastReminder > 3_600_000) {
      lastReminder = Date.now();
      await remindStaleCredentials(db, options.credentialMaxAgeDays);
    }
  };
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    tick()
      .catch((error: unknown) => log.error({ err: error instanceof Error ? { message: error.message } : String(error) }, 'webhook delivery pass failed'))
      .finally(() => {
        running = false;
      });
  }, options.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
