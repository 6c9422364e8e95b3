/**
 * Access reviews: who can reach the tenant, and review campaigns that keep or revoke each
 * grant. The review list (JSON or CSV) is every member and every live API key with role,
 * second factor, SSO, last login or use and who created it. A campaign snapshots that list;
 * admins mark each entry keep or revoke; completing it applies the revocations (a member is
 * removed and their sessions and keys go with them; a key is revoked). Entries nobody
 * answered by the deadline are revoked or flagged, as the tenant's policy says, by the job
 * that completes overdue campaigns. Campaigns stay as evidence; overdue reviews raise a
 * reminder alert. Everything is audited.
 */
import { sql } from 'kysely';
import Type from 'typebox';
import type { Actor } from '../../kernel/audit/record.ts';
import { NO_REQUEST, recordTenantEvent, SYSTEM_ACTOR } from '../../kernel/audit/record.ts';
import { OVERDUE_REVIEW_RULE } from '../monitoring/index.ts';
import type { Database, Tx } from '../../kernel/db/database.ts';
import { csvField } from '../../kernel/http/csv.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { actorOf } from '../../kernel/http/principal.ts';
import { tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { keysetPage, ListQuery, page, TenantParams, Timestamp, Uuid } from '../../kernel/http/schemas.ts';
import { checkRoleAssignment, OWNER_ROLE, type Role } from '../access/index.ts';
import { removeMembership } from '../tenancy/index.ts';

export const DEFAULT_REVIEW_DAYS = 14;

const Subject = Type.Object({
  kind: Type.Union([Type.Literal('user'), Type.Literal('apikey')]),
  id: Uuid,
  name: Type.String(),
  email: Type.Union([Type.String(), Type.Null()]),
  role: Type.String(),
  status: Type.String({ description: 'user: active or suspended; apikey: active' }),
  mfaEnabled: Type.Union([Type.Boolean(), Type.Null()]),
  sso: Type.Union([Type.Boolean(), Type.Null()]),
  lastActiveAt: Type.Union([Timestamp, Type.Null()]),
  createdBy: Type.Union([Type.String(), Type.Null()]),
  createdAt: Timestamp,
});
const ReviewListQuery = Type.Object({ format: Type.Optional(Type.Union([Type.Literal('json'), Type.Literal('csv')])) }, { additionalProperties: false });

const Review = Type.Object({
  id: Uuid,
  name: Type.String(),
  status: Type.Union([Type.Literal('open'), Type.Literal('completed')]),
  unansweredAction: Type.Union([Type.Literal('revoke'), Type.Literal('flag')]),
  deadline: Timestamp,
  createdBy: Uuid,
  createdAt: Timestamp,
  completedAt: Type.Union([Timestamp, Type.Null()]),
  completedBy: Type.Union([Type.String(), Type.Null()]),
  summary: Type.Record(Type.String(), Type.Integer()),
});
const Entry = Type.Object({
  id: Uuid,
  kind: Type.Union([Type.Literal('user'), Type.Literal('apikey')]),
  subjectId: Uuid,
  name: Type.String(),
  email: Type.Union([Type.String(), Type.Null()]),
  role: Type.String(),
  mfaEnabled: Type.Union([Type.Boolean(), Type.Null()]),
  sso: Type.Union([Type.Boolean(), Type.Null()]),
  lastActiveAt: Type.Union([Timestamp, Type.Null()]),
  decision: Type.Union([Type.Literal('keep'), Type.Literal('revoke'), Type.Null()]),
  decidedBy: Type.Union([Uuid, Type.Null()]),
  decidedAt: Type.Union([Timestamp, Type.Null()]),
  note: Type.Union([Type.String(), Type.Null()]),
  outcome: Type.Union([Type.Literal('kept'), Type.Literal('revoked'), Type.Literal('flagged'), Type.Literal('skipped'), Type.Null()]),
});
const ReviewWithEntries = Type.Object({ ...Review.properties, entries: Type.Array(Entry) });
const StartBody = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    deadline: Type.Optional(Type.String({ format: 'date-time' })),
  },
  { additionalProperties: false },
);
const ReviewParams = Type.Object({ tenantId: Uuid, reviewId: Uuid }, { additionalProperties: false });
const EntryParams = Type.Object({ tenantId: Uuid, reviewId: Uuid, entryId: Uuid }, { additionalProperties: false });
const DecisionBody = Type.Object(
  { decision: Type.Union([Type.Literal('keep'), Type.Literal('revoke')]), note: Type.Optional(Type.String({ maxLength: 1000 })) },
  { additionalProperties: false },
);

const iso = (value: Date | null) => (value ? value.toISOString() : null);

/** Every member and live API key of the tenant, as a reviewer sees them. */
export async function reviewSubjects(tx: Tx, tenantId: string) {
  const members = await tx
    .selectFrom('memberships as m')
    .innerJoin('users as u', 'u.id', 'm.user_id')
    .select(['m.user_id as id', 'u.name', 'u.email', 'm.role', 'm.suspended_at', 'u.mfa_enabled', 'u.last_login_at', 'm.created_at'])
    .select((eb) => eb.exists(eb.selectFrom('sso_identities as s').select('s.user_id').whereRef('s.user_id', '=', 'm.user_id').where('s.tenant_id', '=', tenantId)).as('sso'))
    .where('m.tenant_id', '=', tenantId)
    .orderBy('m.created_at')
    .orderBy('m.user_id')
    .execute();
  const keys = await tx
    .selectFrom('api_keys as k')
    .innerJoin('users as u', 'u.id', 'k.created_by')
    .select(['k.id', 'k.name', 'k.role', 'k.last_used_at', 'k.created_at', 'u.email as creator_email'])
    .where('k.tenant_id', '=', tenantId)
    .where('k.revoked_at', 'is', null)
    .where((eb) => eb.or([eb('k.expires_at', 'is', null), eb('k.expires_at', '>', sql<Date>`now()`)]))
    .orderBy('k.created_at')
    .orderBy('k.id')
    .execute();
  return [
    ...members.map((m) => ({
      kind: 'user' as const,
      id: m.id,
      name: m.name,
      email: m.email,
      role: m.role as string,
      status: m.suspended_at ? 'suspended' : 'active',
      mfaEnabled: m.mfa_enabled,
      sso: Boolean(m.sso),
      lastActiveAt: iso(m.last_login_at),
      createdBy: null,
      createdAt: m.created_at.toISOString(),
    })),
    ...keys.map((k) => ({
      kind: 'apikey' as const,
      id: k.id,
      name: k.name,
      email: null,
      role: k.role as string,
      status: 'active',
      mfaEnabled: null,
      sso: null,
      lastActiveAt: iso(k.last_used_at),
      createdBy: k.creator_email,
      createdAt: k.created_at.toISOString(),
    })),
  ];
}

const CSV_COLUMNS = ['kind', 'id', 'name', 'email', 'role', 'status', 'mfaEnabled', 'sso', 'lastActiveAt', 'createdBy', 'createdAt'] as const;

function toReview(row: {
  id: string;
  name: string;
  status: 'open' | 'completed';
  unanswered_action: 'revoke' | 'flag';
  deadline: Date;
  created_by: string;
  created_at: Date;
  completed_at: Date | null;
  completed_by: string | null;
  summary: unknown;
}) {
  return {
    id: row.id,
    name: row.name,
    status: row.status,
    unansweredAction: row.unanswered_action,
    deadline: row.deadline.toISOString(),
    createdBy: row.created_by,
    createdAt: row.created_at.toISOString(),
    completedAt: iso(row.completed_at),
    completedBy: row.completed_by,
    summary: (row.summary ?? {}) as Record<string, number>,
  };
}

const REVIEW_COLUMNS = ['id', 'name', 'status', 'unanswered_action', 'deadline', 'created_by', 'created_at', 'completed_at', 'completed_by', 'summary'] as const;

async function findReview(tx: Tx, tenantId: string, reviewId: string) {
  const row = await tx.selectFrom('access_reviews').select(REVIEW_COLUMNS).where('tenant_id', '=', tenantId).where('id', '=', reviewId.toLowerCase()).executeTakeFirst();
  if (!row) throw new AppError('not_found');
  return row;
}

async function entriesOf(tx: Tx, tenantId: string, reviewId: string) {
  const rows = await tx.selectFrom('access_review_entries').selectAll().where('tenant_id', '=', tenantId).where('review_id', '=', reviewId).orderBy('position').execute();
  return rows.map((row) => ({
    id: row.id,
    kind: row.subject_kind,
    subjectId: row.subject_id,
    name: row.name,
    email: row.email,
    role: row.role,
    mfaEnabled: row.mfa_enabled,
    sso: row.sso,
    lastActiveAt: iso(row.last_active_at),
    decision: row.decision,
    decidedBy: row.decided_by,
    decidedAt: iso(row.decided_at),
    note: row.note,
    outcome: row.outcome,
  }));
}

/**
 * Applies a campaign: revoke what was marked revoke, and what nobody answered when the policy
 * says so; flag the rest of the unanswered; keep the kept. A grant that changed since the
 * snapshot is not touched (skipped); the last owner is never removed.
 */
async function applyReview(tx: Tx, tenantId: string, reviewId: string, actor: Actor, completedBy: string | null): Promise<Record<string, number>> {
  const review = await tx.selectFrom('access_reviews').select(['status', 'unanswered_action']).where('tenant_id', '=', tenantId).where('id', '=', reviewId).forUpdate().executeTakeFirstOrThrow();
  if (review.status !== 'open') throw new AppError('access_review.not_open');
  const entries = await tx.selectFrom('access_review_entries').selectAll().where('tenant_id', '=', tenantId).where('review_id', '=', reviewId).orderBy('position').execute();
  const summary: Record<string, number> = { kept: 0, revoked: 0, flagged: 0, skipped: 0 };
  for (const entry of entries) {
    const revoke = entry.decision === 'revoke' || (entry.decision === null && review.unanswered_action === 'revoke');
    let outcome: 'kept' | 'revoked' | 'flagged' | 'skipped' = entry.decision === 'keep' ? 'kept' : revoke ? 'revoked' : 'flagged';
    if (revoke) outcome = (await revokeGrant(tx, tenantId, entry.subject_kind, entry.subject_id, entry.role)) ? 'revoked' : 'skipped';
    summary[outcome] = (summary[outcome] ?? 0) + 1;
    await tx.updateTable('access_review_entries').set({ outcome }).where('tenant_id', '=', tenantId).where('id', '=', entry.id).execute();
    if (outcome === 'revoked') {
      await recordTenantEvent(tx, tenantId, actor, NO_REQUEST, {
        action: entry.subject_kind === 'user' ? 'member.removed' : 'apikey.revoked',
        target: { type: entry.subject_kind === 'user' ? 'user' : 'apikey', id: entry.subject_id },
        metadata: { role: entry.role, via: 'access_review', reviewId, unanswered: entry.decision === null },
      });
    }
  }
  await tx
    .updateTable('access_reviews')
    .set({ status: 'completed', completed_at: sql`now()`, completed_by: completedBy, summary: JSON.stringify(summary) })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', reviewId)
    .execute();
  await recordTenantEvent(tx, tenantId, actor, NO_REQUEST, { action: 'access_review.completed', target: { type: 'access_review', id: reviewId }, metadata: summary });
  return summary;
}

/** Revokes one reviewed grant if it is still as reviewed; false when it changed or is protected. */
async function revokeGrant(tx: Tx, tenantId: string, kind: 'user' | 'apikey', subjectId: string, reviewedRole: string): Promise<boolean> {
  if (kind === 'apikey') {
    const result = await tx.updateTable('api_keys').set({ revoked_at: sql`now()` }).where('tenant_id', '=', tenantId).where('id', '=', subjectId).where('revoked_at', 'is', null).executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }
  const member = await tx.selectFrom('memberships').select('role').where('tenant_id', '=', tenantId).where('user_id', '=', subjectId).forUpdate().executeTakeFirst();
  if (!member || member.role !== reviewedRole) return false;
  if (member.role === OWNER_ROLE) {
    const owners = await tx.selectFrom('memberships').select('user_id').where('tenant_id', '=', tenantId).where('role', '=', OWNER_ROLE).where('suspended_at', 'is', null).forUpdate().execute();
    if (owners.filter((o) => o.user_id !== subjectId).length === 0) return false;
  }
  await removeMembership(tx, tenantId, subjectId);
  return true;
}

export function reviewRoutes(): RouteDefinition[] {
  return [
    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/access-review',
      permission: 'members.read',
      schema: {
        summary: 'Everyone and everything that can reach the tenant: members and live API keys with role, MFA, SSO, last activity and creator (?format=csv for a spreadsheet)',
        tags: ['members'],
        params: TenantParams,
        querystring: ReviewListQuery,
        response: { 200: Type.Object({ items: Type.Array(Subject) }) },
      },
      async handler({ tx, tenantId, query, reply }) {
        const items = await reviewSubjects(tx, tenantId);
        if (query.format !== 'csv') return { items };
        void reply.type('text/csv; charset=utf-8');
        void reply.header('content-disposition', `attachment; filename="access-review-${tenantId}.csv"`);
        return [CSV_COLUMNS.join(','), ...items.map((item) => CSV_COLUMNS.map((column) => csvField(item[column])).join(','))].join('\r\n') + '\r\n';
      },
    }),

    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/access-reviews',
      permission: 'members.read',
      schema: { summary: 'Access review campaigns, newest first (kept as evidence)', tags: ['members'], params: TenantParams, querystring: ListQuery, response: { 200: page(Review) } },
      async handler({ tx, tenantId, query }) {
        const builder = tx.selectFrom('access_reviews').select(REVIEW_COLUMNS).where('tenant_id', '=', tenantId);
        return keysetPage(builder, query, { by: ['created_at', 'id'], newestFirst: true }, toReview);
      },
    }),

    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/access-reviews',
      permission: 'members.manage',
      status: 201,
      schema: { summary: 'Start an access review campaign over every member and live API key', tags: ['members'], params: TenantParams, body: StartBody, response: { 201: ReviewWithEntries } },
      async handler({ tx, tenantId, principal, body, audit }) {
        const deadline = body.deadline ? new Date(body.deadline) : new Date(Date.now() + DEFAULT_REVIEW_DAYS * 86_400_000);
        if (deadline.getTime() <= Date.now() + 60_000) throw new AppError('validation.failed', { detail: 'body.deadline must be in the future' });
        if (deadline.getTime() > Date.now() + 366 * 86_400_000) throw new AppError('validation.failed', { detail: 'body.deadline must be within a year' });
        const open = await tx.selectFrom('access_reviews').select('id').where('tenant_id', '=', tenantId).where('status', '=', 'open').executeTakeFirst();
        if (open) throw new AppError('access_review.already_open', { detail: `Complete review ${open.id} first` });
        const policy = await tx.selectFrom('tenant_settings').select('access_review_unanswered').where('tenant_id', '=', tenantId).executeTakeFirst();
        const review = await tx
          .insertInto('access_reviews')
          .values({ tenant_id: tenantId, name: body.name?.trim() ?? `Access review ${new Date().toISOString().slice(0, 10)}`, unanswered_action: policy?.access_review_unanswered ?? 'flag', deadline, created_by: principal.userId })
          .returning(REVIEW_COLUMNS)
          .executeTakeFirstOrThrow();
        const subjects = await reviewSubjects(tx, tenantId);
        if (subjects.length > 0) {
          await tx
            .insertInto('access_review_entries')
            .values(
              subjects.map((s, position) => ({
                tenant_id: tenantId,
                review_id: review.id,
                position,
                subject_kind: s.kind,
                subject_id: s.id,
                name: s.name,
                email: s.email,
                role: s.role,
                mfa_enabled: s.mfaEnabled,
                sso: s.sso,
                last_active_at: s.lastActiveAt,
              })),
            )
            .execute();
        }
        await audit({ action: 'access_review.started', target: { type: 'access_review', id: review.id }, metadata: { entries: subjects.length, deadline: deadline.toISOString(), unansweredAction: review.unanswered_action } });
        return { ...toReview(review), entries: await entriesOf(tx, tenantId, review.id) };
      },
    }),

    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/access-reviews/:reviewId',
      permission: 'members.read',
      schema: { summary: 'One access review campaign with its entries and decisions', tags: ['members'], params: ReviewParams, response: { 200: ReviewWithEntries } },
      async handler({ tx, tenantId, params }) {
        const review = await findReview(tx, tenantId, params.reviewId);
        return { ...toReview(review), entries: await entriesOf(tx, tenantId, review.id) };
      },
    }),

    tenantRoute({
      method: 'PATCH',
      url: '/api/v1/tenants/:tenantId/access-reviews/:reviewId/entries/:entryId',
      permission: 'members.manage',
      schema: { summary: 'Mark one entry keep or revoke (applied when the campaign completes)', tags: ['members'], params: EntryParams, body: DecisionBody, response: { 200: Entry } },
      async handler({ tx, tenantId, principal, params, body, audit }) {
        const review = await findReview(tx, tenantId, params.reviewId);
        const entry = await tx
          .selectFrom('access_review_entries')
          .select(['id', 'subject_kind', 'subject_id', 'role'])
          .where('tenant_id', '=', tenantId)
          .where('review_id', '=', review.id)
          .where('id', '=', params.entryId.toLowerCase())
          .executeTakeFirst();
        if (!entry) throw new AppError('not_found');
        if (review.status !== 'open') throw new AppError('access_review.not_open');
        // Nobody reviews their own access, and nobody revokes a role above their own (admins and owners).
        if (entry.subject_kind === 'user' && entry.subject_id === principal.userId) throw new AppError('access.forbidden', { detail: 'You cannot review your own access' });
        if (body.decision === 'revoke' && entry.subject_kind === 'user') {
          const denial = checkRoleAssignment({ actorRole: principal.role as Role, targetCurrentRole: entry.role as Role, targetNewRole: null, isSelf: false });
          if (denial !== null) throw new AppError('access.forbidden', { detail: 'Only an owner can revoke an owner' });
        }
        await tx
          .updateTable('access_review_entries')
          .set({ decision: body.decision, note: body.note ?? null, decided_by: principal.userId, decided_at: sql`now()` })
          .where('tenant_id', '=', tenantId)
          .where('id', '=', entry.id)
          .execute();
        await audit({ action: 'access_review.decided', target: { type: 'access_review', id: review.id }, metadata: { entryId: entry.id, subject: `${entry.subject_kind}:${entry.subject_id}`, decision: body.decision } });
        return (await entriesOf(tx, tenantId, review.id)).find((e) => e.id === entry.id)!;
      },
    }),

    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/access-reviews/:reviewId/complete',
      permission: 'members.manage',
      schema: { summary: 'Complete the campaign: apply the revocations; unanswered entries are revoked or flagged per tenant policy', tags: ['members'], params: ReviewParams, response: { 200: ReviewWithEntries } },
      async handler({ tx, tenantId, principal, params }) {
        const review = await findReview(tx, tenantId, params.reviewId);
        await applyReview(tx, tenantId, review.id, actorOf(principal), principal.userId);
        return { ...toReview(await findReview(tx, tenantId, review.id)), entries: await entriesOf(tx, tenantId, review.id) };
      },
    }),
  ];
}

/** Completes campaigns past their deadline (as the system); returns how many. */
export async function completeOverdueReviews(db: Database): Promise<number> {
  const overdue = await db
    .systemDb({ reason: 'access reviews: find campaigns past their deadline' })
    .transaction((tx) => tx.selectFrom('access_reviews').select(['tenant_id', 'id']).where('status', '=', 'open').where('deadline', '<=', sql<Date>`now()`).execute());
  let completed = 0;
  for (const review of overdue) {
    await db.withTenant(review.tenant_id, async (tx) => {
      const still = await tx.selectFrom('access_reviews').select('status').where('tenant_id', '=', review.tenant_id).where('id', '=', review.id).forUpdate().executeTakeFirst();
      if (still?.status !== 'open') return;
      await applyReview(tx, review.tenant_id, review.id, SYSTEM_ACTOR, null);
      completed++;
    });
  }
  return completed;
}

/**
 * Tenants with no completed review within their interval (default quarterly; counted from
 * the tenant's creation when there has never been one): an `access_review.overdue` event in the
 * tenant's log, which the alert rules turn into an alert for its admins (mailed by the
 * notifier). Only while no such alert is open, so an ignored reminder is not repeated hourly.
 */
export async function remindOverdueReviews(db: Database): Promise<number> {
  return db.systemDb({ reason: 'access reviews: remind tenants whose review is overdue' }).transaction(async (tx) => {
    const { rows } = await sql<{ id: string; last: Date | null; interval_days: number }>`
      select t.id, r.last, coalesce(s.access_review_interval_days, 90) as interval_days
      from tenants t
      left join tenant_settings s on s.tenant_id = t.id
      left join lateral (select max(completed_at) as last from access_reviews a where a.tenant_id = t.id and a.status = 'completed') r on true
      where t.deleted_at is null
        and coalesce(r.last, t.created_at) < now() - make_interval(days => coalesce(s.access_review_interval_days, 90))
        and not exists (select 1 from security_alerts a where a.tenant_id = t.id and a.rule = ${OVERDUE_REVIEW_RULE} and a.status <> 'resolved')
        and not exists (select 1 from audit_events e where e.tenant_id = t.id and e.action = 'access_review.overdue' and e.at > now() - interval '1 day')`.execute(tx);
    for (const row of rows) {
      await recordTenantEvent(tx, row.id, SYSTEM_ACTOR, NO_REQUEST, {
        action: 'access_review.overdue',
        target: { type: 'tenant', id: row.id },
        metadata: { lastCompletedAt: row.last ? new Date(row.last).toISOString() : null, intervalDays: Number(row.interval_days) },
      });
    }
    return rows.length;
  });
}

/** Hourly: completes overdue campaigns and raises reminders; returns stop. */
export function startReviewJobs(db: Database, log: { error(object: object, message: string): void }, intervalMs = 3_600_000): () => void {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    completeOverdueReviews(db)
      .then(() => remindOverdueReviews(db))
      .catch((error: unknown) => log.error({ err: error instanceof Error ? { message: error.message } : String(error) }, 'access review jobs failed'))
      .finally(() => {
        running = false;
      });
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
