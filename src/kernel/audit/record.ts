/**
 * Records audit events in the transaction of the change they describe (DESIGN.md
 * invariant 6): the event commits with the change or not at all. The write path only
 * inserts: no per-tenant lock, no hashing. The sealer (sealer.ts) later gives each committed
 * event its per-tenant seq and chain hash, in batches, and writes the operator stream line.
 */
import type { CompiledQuery } from 'kysely';
import type { Tx } from '../db/database.ts';
import { compileOnly, deferUntilCommit, isUuid } from '../db/database.ts';
import { jcs } from './chain.ts';
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
/** The request metadata of work no request caused (jobs, commands). */
export const NO_REQUEST: RequestMeta = Object.freeze({ requestId: null, ip: null, userAgent: null });

/**
 * Appends an event to the tenant's log; tx must be a transaction that can see that tenant.
 * Its metadata is stored as JCS text (RFC 8785): the sealer hashes that text in the database.
 */
export async function recordTenantEvent(tx: Tx, tenantId: string, actor: Actor, meta: RequestMeta, event: AuditEvent): Promise<void> {
  // Nothing reads the insert's result: it travels with the transaction's COMMIT (pg-driver.ts).
  await tx.executeQuery(deferUntilCommit(withValues(TENANT_INSERT, tenantId, columns(actor, meta, event, jcs(event.metadata ?? {})))));
}

/** The columns a writer gives besides tenant_id; metadata is the tenant table's JCS text or the platform table's JSON. */
function columns(actor: Actor, meta: RequestMeta, event: AuditEvent, metadata: string): Record<Column, unknown> {
  return {
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
    metadata,
  };
}

/**
 * The two inserts, compiled once: every event is recorded in the transaction of its change, and
 * building and compiling the statement anew cost more CPU than the rest of recording it. The
 * values here only fix the statement's shape; each event gives its own parameters.
 */
const COMMON_SHAPE = {
  actor_type: 'system',
  actor_id: null,
  actor_email: null,
  action: '',
  target_type: null,
  target_id: null,
  outcome: 'success',
  ip: null,
  user_agent: null,
  request_id: null,
} as const;
type Column = keyof typeof COMMON_SHAPE | 'metadata';
/** The order of the compiled inserts' parameters after tenant_id: the shared columns, then the metadata (JCS text or JSON). */
const COLUMNS: readonly Column[] = [...(Object.keys(COMMON_SHAPE) as Column[]), 'metadata'];
const TENANT_INSERT = compileOnly.insertInto('audit_events').values({ tenant_id: '', ...COMMON_SHAPE, canonical_metadata: '{}' }).compile();
const PLATFORM_INSERT = compileOnly.insertInto('platform_audit_events').values({ tenant_id: null, ...COMMON_SHAPE, metadata: '{}' }).compile();

function withValues(statement: CompiledQuery, tenantId: string | null, values: Record<Column, unknown>): CompiledQuery {
  const parameters = [tenantId, ...COLUMNS.map((column) => values[column])];
  if (parameters.length !== statement.parameters.length) throw new Error('an audit insert got the wrong number of values');
  return { ...statement, parameters };
}

/** A UUID target id is stored lower-case, whatever case the request used, so a record's history finds it. */
function targetId(event: AuditEvent): string | null {
  const id = event.target?.id;
  if (id === undefined) return null;
  return isUuid(id) ? id.toLowerCase() : id;
}

/** Appends an event to the platform log (operators' view; tenants never read it). */
export async function recordPlatformEvent(tx: Tx, actor: Actor, meta: RequestMeta, event: AuditEvent & { readonly tenantId?: string }): Promise<void> {
  await tx.executeQuery(deferUntilCommit(withValues(PLATFORM_INSERT, event.tenantId ?? null, columns(actor, meta, event, JSON.stringify(event.metadata ?? {})))));
}
