import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { evaluateAlerts } from './alerts.ts';
import { REPORTS_PER_HOUR } from './reports.ts';

// Threats: a member who notices something has no way to tell anyone who can act; a report
// goes unrecorded; the report route becomes a way to read or probe another tenant's log, or
// to flood the admins.
describe('reporting suspicious activity', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;
  const reports = () => `/api/v1/tenants/${tenantId}/security-reports`;

  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup());
  });
  afterAll(async () => t?.close());

  it('any member, a guest too, files a report: audited in both logs, it raises an alert for the tenant admins and for the operators', async () => {
    const guest = await t.addMember(owner, tenantId, 'guest');
    const [related] = await t.admin.query<{ id: string }>(`select id from audit_events where tenant_id = $1 order by position limit 1`, [tenantId]);
    const filed = await t.request({
      method: 'POST',
      url: reports(),
      as: guest,
      body: { what: 'A message in our shared room asked me for my password', when: '2026-11-29T10:00:00Z', eventIds: [related!.id.toUpperCase()] },
    });
    expect(filed.statusCode).toBe(201);
    const { id } = filed.json<{ id: string }>();
    const [tenantEvent] = await t.admin.query<{ actor_id: string; metadata: Record<string, unknown> }>(
      `select actor_id, canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'security.reported' and target_id = $2`,
      [tenantId, id],
    );
    expect(tenantEvent).toMatchObject({ actor_id: guest.userId, metadata: { what: 'A message in our shared room asked me for my password', eventIds: [related!.id] } });
    const [platformEvent] = await t.admin.query<{ tenant_id: string }>(`select tenant_id from platform_audit_events where action = 'security.reported' and target_id = $1`, [id]);
    expect(platformEvent!.tenant_id).toBe(tenantId);

    await evaluateAlerts(t.db);
    const alerts = (await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/security-alerts`, as: owner })).json<{ items: { rule: string; subject: string; severity: string }[] }>();
    expect(alerts.items).toContainEqual(expect.objectContaining({ rule: 'reported_activity', subject: `report:${id}`, severity: 'high' }));
    const [operators] = await t.admin.query<{ rule: string }>(`select rule from platform_security_alerts where subject = $1`, [`report:${tenantId}:${id}`]);
    expect(operators!.rule).toBe('reported_activity');
  });

  it('refuses bad reports with 4xx: empty or oversized text, unknown fields, too many ids, and ids outside this tenant (404)', async () => {
    const member = await t.addMember(owner, tenantId, 'member');
    for (const body of [{}, { what: '' }, { what: 'x'.repeat(4001) }, { what: 'x', extra: 1 }, { what: 'x', when: 'yesterday' }, { what: 'x', eventIds: ['nope'] }]) {
      expect((await t.request({ method: 'POST', url: reports(), as: member, body })).statusCode, JSON.stringify(body).slice(0, 40)).toBe(400);
    }
    const many = Array.from({ length: 21 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);
    expect((await t.request({ method: 'POST', url: reports(), as: member, body: { what: 'x', eventIds: many } })).statusCode).toBe(400);
    const { tenantId: other } = await t.signup();
    const [foreign] = await t.admin.query<{ id: string }>(`select id from audit_events where tenant_id = $1 limit 1`, [other]);
    const probe = await t.request({ method: 'POST', url: reports(), as: member, body: { what: 'x', eventIds: [foreign!.id] } });
    expect(probe.statusCode).toBe(404);
    expect(probe.body).not.toContain(other);
    // Nothing was recorded for the refused reports.
    expect(await t.admin.query(`select 1 from audit_events where tenant_id = $1 and action = 'security.reported' and actor_id = $2`, [tenantId, member.userId])).toEqual([]);
  });

  it(`limits one person to ${REPORTS_PER_HOUR} reports an hour in a tenant (429 with Retry-After)`, async () => {
    const viewer = await t.addMember(owner, tenantId, 'viewer');
    for (let i = 0; i < REPORTS_PER_HOUR; i++) {
      expect((await t.request({ method: 'POST', url: reports(), as: viewer, body: { what: `report ${i}` } })).statusCode).toBe(201);
    }
    const limited = await t.request({ method: 'POST', url: reports(), as: viewer, body: { what: 'one too many' } });
    expect(limited.statusCode).toBe(429);
    expect(limited.headers['retry-after']).toBe('3600');
    // Someone else is not limited by it.
    expect((await t.request({ method: 'POST', url: reports(), as: owner, body: { what: 'mine' } })).statusCode).toBe(201);
  });
});
