import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { completeOverdueReviews, remindOverdueReviews } from './reviews.ts';
import { readOutbox } from '../../../test/support/outbox.ts';
import { createMailer } from '../../kernel/mail/mailer.ts';
import { createAlertNotifier, evaluateAlerts } from '../monitoring/index.ts';

// Threats: access nobody needs any more stays because nobody looks; a review is decided but
// never applied, or applied past its scope (the last owner, a grant changed since); a reviewer
// approves their own access; no record remains of what was reviewed.
describe('access reviews', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;
  const base = () => `/api/v1/tenants/${tenantId}`;

  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup({ tenantName: 'Reviewed Inc' }));
  });
  afterAll(async () => t?.close());

  it('lists every member and live API key with role, MFA, SSO, last activity and creator, as JSON and as CSV', async () => {
    const member = await t.addMember(owner, tenantId, 'member');
    const key = (await t.request({ method: 'POST', url: `${base()}/api-keys`, as: owner, body: { name: '=HYPERLINK("evil")', role: 'viewer' } })).json<{ id: string }>();
    const revoked = (await t.request({ method: 'POST', url: `${base()}/api-keys`, as: owner, body: { name: 'gone', role: 'viewer' } })).json<{ id: string }>();
    await t.request({ method: 'DELETE', url: `${base()}/api-keys/${revoked.id}`, as: owner });
    const listed = (await t.request({ method: 'GET', url: `${base()}/access-review`, as: owner })).json<{ items: Record<string, unknown>[] }>();
    expect(listed.items.find((i) => i.id === member.userId)).toMatchObject({ kind: 'user', role: 'member', status: 'active', mfaEnabled: false, sso: false, email: member.email });
    expect(listed.items.find((i) => i.id === key.id)).toMatchObject({ kind: 'apikey', role: 'viewer', createdBy: owner.email });
    expect(listed.items.some((i) => i.id === revoked.id)).toBe(false);
    const csv = await t.request({ method: 'GET', url: `${base()}/access-review?format=csv`, as: owner });
    expect(csv.headers['content-type']).toMatch(/^text\/csv/);
    const lines = csv.body.trim().split('\r\n');
    expect(lines[0]).toBe('kind,id,name,email,role,status,mfaEnabled,sso,lastActiveAt,createdBy,createdAt');
    expect(lines).toHaveLength(listed.items.length + 1);
    // A name that a spreadsheet would run as a formula is defused.
    expect(csv.body).toContain(`"'=HYPERLINK(""evil"")"`);
    expect((await t.request({ method: 'GET', url: `${base()}/access-review?format=xml`, as: owner })).statusCode).toBe(400);
  });

  it('a campaign snapshots the grants, records each keep or revoke, and completing it applies them and is kept as evidence', async () => {
    const admin = await t.addMember(owner, tenantId, 'admin');
    const stale = await t.addMember(owner, tenantId, 'viewer');
    const staleKey = (await t.request({ method: 'POST', url: `${base()}/api-keys`, as: owner, body: { name: 'old integration', role: 'member' } })).json<{ id: string; key: string }>();
    const started = await t.request({ method: 'POST', url: `${base()}/access-reviews`, as: admin, body: { name: 'Q4 review' } });
    expect(started.statusCode).toBe(201);
    const review = started.json<{ id: string; status: string; unansweredAction: string; entries: { id: string; subjectId: string; kind: string }[] }>();
    expect(review).toMatchObject({ status: 'open', unansweredAction: 'flag' });
    expect((await t.request({ method: 'POST', url: `${base()}/access-reviews`, as: admin, body: {} })).json().code).toBe('access_review.already_open');
    const entry = (subjectId: string) => review.entries.find((e) => e.subjectId === subjectId)!;
    const decide = (as: SessionHandle, subjectId: string, decision: 'keep' | 'revoke') =>
      t.request({ method: 'PATCH', url: `${base()}/access-reviews/${review.id}/entries/${entry(subjectId).id}`, as, body: { decision, note: 'reviewed' } });

    expect((await decide(admin, admin.userId, 'keep')).statusCode).toBe(403); // nobody reviews their own access
    expect((await decide(admin, owner.userId, 'revoke')).statusCode).toBe(403); // an admin cannot revoke an owner
    expect((await decide(admin, owner.userId, 'keep')).statusCode).toBe(200);
    expect((await decide(owner, admin.userId, 'keep')).statusCode).toBe(200);
    expect((await decide(admin, stale.userId, 'revoke')).json()).toMatchObject({ decision: 'revoke', decidedBy: admin.userId, outcome: null });
    expect((await decide(admin, staleKey.id, 'revoke')).statusCode).toBe(200);
    // Not applied before completion.
    expect((await t.request({ method: 'GET', url: `${base()}/accounts`, as: stale })).statusCode).toBe(200);

    const completed = await t.request({ method: 'POST', url: `${base()}/access-reviews/${review.id}/complete`, as: admin });
    expect(completed.statusCode).toBe(200);
    const done = completed.json<{ status: string; summary: Record<string, number>; entries: { subjectId: string; outcome: string }[] }>();
    expect(done.status).toBe('completed');
    expect(done.entries.find((e) => e.subjectId === stale.userId)?.outcome).toBe('revoked');
    expect(done.entries.find((e) => e.subjectId === staleKey.id)?.outcome).toBe('revoked');
    expect(done.entries.find((e) => e.subjectId === admin.userId)?.outcome).toBe('kept');
    // Unanswered entries (the members from the first test, its key) are flagged by default, not revoked.
    expect(done.summary.flagged).toBeGreaterThan(0);
    expect(done.summary.revoked).toBe(2);
    expect((await t.request({ method: 'GET', url: `${base()}/accounts`, as: stale })).statusCode).toBe(404);
    expect((await t.request({ method: 'GET', url: `${base()}/accounts`, headers: { authorization: `Bearer ${staleKey.key}` } })).statusCode).toBe(401);
    // Settled for good, and still there as evidence.
    expect((await t.request({ method: 'POST', url: `${base()}/access-reviews/${review.id}/complete`, as: admin })).json().code).toBe('access_review.not_open');
    expect((await t.request({ method: 'PATCH', url: `${base()}/access-reviews/${review.id}/entries/${entry(admin.userId).id}`, as: owner, body: { decision: 'revoke' } })).json().code).toBe('access_review.not_open');
    const history = (await t.request({ method: 'GET', url: `${base()}/access-reviews`, as: owner })).json<{ items: { id: string; status: string }[] }>();
    expect(history.items[0]).toMatchObject({ id: review.id, status: 'completed' });
    const actions = await t.admin.query<{ action: string }>(`select action from audit_events where tenant_id = $1 and (target_id = $2 or canonical_metadata::jsonb->>'reviewId' = $2) order by position`, [tenantId, review.id]);
    expect(actions.map((a) => a.action)).toEqual(expect.arrayContaining(['access_review.started', 'access_review.decided', 'member.removed', 'apikey.revoked', 'access_review.completed']));
  });

  it('past the deadline the campaign completes itself: unanswered entries are revoked when the policy says so, never the last owner', async () => {
    const { session: soleOwner, tenantId: solo } = await t.signup({ tenantName: 'Strict Ltd' });
    const forgotten = await t.addMember(soleOwner, solo, 'member');
    expect((await t.request({ method: 'PATCH', url: `/api/v1/tenants/${solo}/settings`, as: soleOwner, body: { accessReviewUnanswered: 'revoke' } })).statusCode).toBe(200);
    const review = (await t.request({ method: 'POST', url: `/api/v1/tenants/${solo}/access-reviews`, as: soleOwner, body: { deadline: new Date(Date.now() + 3_600_000).toISOString() } })).json<{ id: string; unansweredAction: string }>();
    expect(review.unansweredAction).toBe('revoke');
    for (const deadline of ['yesterday', new Date(Date.now() - 1000).toISOString()]) {
      expect((await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/access-reviews`, as: owner, body: { deadline } })).statusCode).toBe(400);
    }
    await t.admin.query(`update access_reviews set deadline = now() - interval '1 second' where id = $1`, [review.id]);
    expect(await completeOverdueReviews(t.db)).toBeGreaterThanOrEqual(1);
    const done = (await t.request({ method: 'GET', url: `/api/v1/tenants/${solo}/access-reviews/${review.id}`, as: soleOwner })).json<{ status: string; completedBy: string | null; entries: { subjectId: string; outcome: string }[] }>();
    expect(done).toMatchObject({ status: 'completed', completedBy: null });
    expect(done.entries.find((e) => e.subjectId === forgotten.userId)?.outcome).toBe('revoked');
    expect(done.entries.find((e) => e.subjectId === soleOwner.userId)?.outcome).toBe('skipped'); // the last owner stays
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${solo}/accounts`, as: soleOwner })).statusCode).toBe(200);
  });

  it('raises an access_review_overdue reminder for a tenant with no review within its interval, once', async () => {
    const { session: late, tenantId: lateTenant } = await t.signup({ tenantName: 'Late Co' });
    await t.admin.query(`update tenants set created_at = now() - interval '120 days' where id = $1`, [lateTenant]);
    expect(await remindOverdueReviews(t.db)).toBeGreaterThanOrEqual(1);
    // The reminder is an event the alert rules raise, and the notifier mails to the owners and admins.
    const mailer = createMailer(t.config);
    await evaluateAlerts(t.db, createAlertNotifier({ db: t.db, mailer, log: { info() {}, warn() {}, error() {} }, appUrl: t.config.appUrl }));
    await remindOverdueReviews(t.db);
    await evaluateAlerts(t.db);
    mailer.close();
    expect(readOutbox(t.config.dataDir).filter((m) => m.to === late.email && m.subject.includes('access review overdue'))).toHaveLength(1);
    const alerts = (await t.request({ method: 'GET', url: `/api/v1/tenants/${lateTenant}/security-alerts`, as: late })).json<{ items: { rule: string }[] }>();
    expect(alerts.items.filter((a) => a.rule === 'access_review_overdue')).toHaveLength(1);
    // A tenant that reviewed recently is not reminded.
    const recent = await t.admin.query(`select 1 from security_alerts where tenant_id = $1 and rule = 'access_review_overdue'`, [tenantId]);
    expect(recent).toEqual([]);
  });
});
