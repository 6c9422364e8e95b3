/**
 * Records audit events in the transaction of the change they describe (DESIGN.md
 * invariant 6): the event commits with the change or not at all. The per-tenant sequence
 * is taken from audit_heads in the same statement, so it is gapless and strictly
 * increasing (the row lock serialises concurrent writers of one tenant). Once the
 * transaction commits, each event is also written as one JSON line to the operator's
 * audit stream (AUDIT_STREAM), for a SIEM.
 */
import { sql } from 'kysely';
import { emitAfterCommit, isUuid, type Tx } from '../db/database.ts';
import type { ActorType, Outcome } from '../db/schema.ts';

export interface Actor {
  readonly type: ActorType;
  readonly id: string | null;
  readonly email?: string | null;
}

export interface RequestMeta {
  readonly requestId: string | null;
  readonly ip: string | null;
  readonly userAgent: string | null;
}

export interface AuditEvent {
  readonly action: string;
  readonly target?: { readonly type: string; readonly id: string };
  readonly outcome?: Outcome;
  readonly metadata?: Readonly<Record<string, unknown>>;
}

export const SYSTEM_ACTOR: Actor = Object.freeze({ type: 'system', id: null });
export const ANONYMOUS_ACTOR: Actor = Object.freeze({ type: 'anonymous', id: null });

/** Appends an event to the tenant's log; tx must be a transaction that can see that tenant. */
export async function recordTenantEvent(
  tx: Tx,
  tenantId: string,
  actor: Actor,
  meta: RequestMeta,
  event: AuditEvent,
): Promise<void> {
  const { rows } = await sql<{ id: string; seq: string; at: Date }>`
    with head as (
      insert into audit_heads (tenant_id, seq) values (${tenantId}, 1)
      on conflict (tenant_id) do update set seq = audit_heads.seq + 1
      returning seq
    )
    insert into audit_events (tenant_id, seq, actor_type, actor_id, actor_email, action, target_type, target_id,
      outcome, ip, user_agent, request_id, metadata)
    select ${tenantId}, head.seq, ${actor.type}, ${actor.id}, ${actor.email ?? null}, ${event.action},
      ${event.target?.type ?? null}, ${targetId(event)}, ${event.outcome ?? 'success'},
      ${meta.ip}, ${meta.userAgent}, ${meta.requestId}, ${JSON.stringify(event.metadata ?? {})}::jsonb
    from head
    returning id, seq, at`.execute(tx);
  const row = rows[0]!;
  emitAfterCommit(streamLine('tenant', { id: row.id, seq: Number(row.seq), at: new Date(row.at), tenantId }, actor, meta, event));
}

/** A UUID target id is stored lower-case, whatever case the request used, so a record's history finds it. */
function targetId(event: AuditEvent): string | null {
  const id = event.target?.id;
  if (id === undefined) return null;
  return isUuid(id) ? id.toLowerCase() : id;
}

/** One line of the operator's audit stream. */
function streamLine(log: 'tenant' | 'platform', row: { id: string; seq: number; at: Date; tenantId: string | null }, actor: Actor, meta: RequestMeta, event: AuditEvent): string {
  return JSON.stringify({
    stream: 'audit',
    log,
    id: row.id,
    seq: row.seq,
    at: row.at.toISOString(),
    tenantId: row.tenantId,
    actor: { type: actor.type, id: actor.id, ...(actor.email ? { email: actor.email } : {}) },
    action: event.action,
    ...(event.target ? { target: event.target } : {}),
    outcome: event.outcome ?? 'success',
    ip: meta.ip,
    userAgent: meta.userAgent,
    requestId: meta.requestId,
    metadata: event.metadata ?? {},
  });
}

/** Appends an event to the platform log (operators' view; tenants never read it). */
export async function recordPlatformEvent(
  tx: Tx,
  actor: Actor,
  meta: RequestMeta,
  event: AuditEvent & { readonly tenantId?: string },
): Promise<void> {
  const row = await tx
    .insertInto('platform_audit_events')
    .values({
      tenant_id: event.tenantId ?? null,
      actor_type: actor.type,
      actor_id: actor.id,
      actor_email: actor.email ?? null,
      action: event.action,
      target_type: event.target?.type ?? null,
      target_id: targetId(event),
      outcome: event.outcome ?? 'success',
      ip: meta.ip,
      user_agent: meta.userAgent,
      request_id: meta.requestId,
      metadata: JSON.stringify(event.metadata ?? {}),
    })
    .returning(['id', 'seq', 'at'])
    .executeTakeFirstOrThrow();
  emitAfterCommit(streamLine('platform', { id: row.id, seq: Number(row.seq), at: new Date(row.at), tenantId: event.tenantId ?? null }, actor, meta, event));
}
