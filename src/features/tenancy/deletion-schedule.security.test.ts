import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, PASSWORD, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { readOutbox } from '../../../test/support/outbox.ts';
import { createKeyring } from '../../kernel/crypto/envelope.ts';
import { purgeDueTenants } from './deletion-schedule.ts';

// Threats: a tenant deleted by a stolen session, by someone who is not an owner, by a slip of
// the finger, or with no way back; a cancelled deletion that still runs.
describe('tenant deletion by an owner', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t?.close());

  const deletion = (tenantId: string) => `/api/v1/tenants/${tenantId}/deletion`;
  const keyring = () => createKeyring(t.config, { warn() {} });

  async function ownerWithTenant(name: string): Promise<{ owner: SessionHandle; tenantId: string }> {
    const { session, tenantId } = await t.signup({ tenantName: name });
    return { owner: session, tenantId };
  }

  it('needs an owner, a recent authentication and the name typed back; then it is scheduled 7 days out, owners are mailed, and it is audited', async () => {
    const { owner, tenantId } = await ownerWithTenant('Doomed Ltd');
    const admin = await t.addMember(owner, tenantId, 'admin');
    expect((await t.request({ method: 'POST', url: deletion(tenantId), as: admin, body: { confirmName: 'Doomed Ltd' } })).statusCode).toBe(403);
    // Signup counts as an authentication; age it past the step-up window.
    await t.admin.query(`update sessions set authenticated_at = now() - interval '1 hour' where user_id = $1`, [owner.userId]);
    const stale = await t.request({ method: 'POST', url: deletion(tenantId), as: owner, body: { confirmName: 'Doomed Ltd' } });
    expect(stale.json().code).toBe('auth.reauth_required');
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/reauth', as: owner, body: { password: PASSWORD } })).statusCode).toBe(204);
    for (const body of [{ confirmName: 'doomed ltd' }, { confirmName: 'Doomed Ltd ' }, {}, { confirmName: 'Doomed Ltd', now: true }]) {
      expect((await t.request({ method: 'POST', url: deletion(tenantId), as: owner, body })).statusCode, JSON.stringify(body)).toBe(400);
    }
    const scheduled = await t.request({ method: 'POST', url: deletion(tenantId), as: owner, body: { confirmName: 'Doomed Ltd' } });
    expect(scheduled.statusCode).toBe(202);
    const dueAt = new Date(scheduled.json<{ dueAt: string }>().dueAt).getTime();
    expect(dueAt).toBeGreaterThan(Date.now() + 6.99 * 24 * 3_600_000);
    expect(dueAt).toBeLessThan(Date.now() + 7.01 * 24 * 3_600_000);
    expect((await t.request({ method: 'GET', url: deletion(tenantId), as: admin })).json()).toMatchObject({ status: 'scheduled', requestedBy: owner.userId });
    expect((await t.request({ method: 'POST', url: deletion(tenantId), as: owner, body: { confirmName: 'Doomed Ltd' } })).json().code).toBe('tenant.deletion_scheduled');
    for (let i = 0; i < 100 && !readOutbox(t.config.dataDir).some((m) => m.to.includes(owner.email) && m.subject.includes('scheduled for deletion')); i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(readOutbox(t.config.dataDir).some((m) => m.to.includes(owner.email) && m.subject.includes('Doomed Ltd is scheduled for deletion'))).toBe(true);
    expect(await t.admin.query(`select 1 from audit_events where tenant_id = $1 and action = 'tenant.deletion_scheduled'`, [tenantId])).toHaveLength(1);
    expect(await t.admin.query(`select 1 from platform_audit_events where tenant_id = $1 and action = 'tenant.deletion_scheduled'`, [tenantId])).toHaveLength(1);
    // Within the grace period nothing is purged, and the tenant keeps working (owners can still export).
    expect((await purgeDueTenants(t.db, keyring())).deleted).not.toContain(tenantId);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner })).statusCode).toBe(200);
  });

  it('an owner can cancel during the grace period, and a cancelled deletion never runs', async () => {
    const { owner, tenantId } = await ownerWithTenant('Saved Ltd');
    expect((await t.request({ method: 'DELETE', url: deletion(tenantId), as: owner })).json().code).toBe('tenant.deletion_not_scheduled');
    expect((await t.request({ method: 'POST', url: deletion(tenantId), as: owner, body: { confirmName: 'Saved Ltd' } })).statusCode).toBe(202);
    expect((await t.request({ method: 'DELETE', url: deletion(tenantId), as: owner })).statusCode).toBe(204);
    expect((await t.request({ method: 'GET', url: deletion(tenantId), as: owner })).json()).toEqual({ status: 'none', requestedAt: null, requestedBy: null, dueAt: null });
    expect(await t.admin.query(`select 1 from platform_audit_events where tenant_id = $1 and action = 'tenant.deletion_cancelled'`, [tenantId])).toHaveLength(1);
    expect((await purgeDueTenants(t.db, keyring())).deleted).not.toContain(tenantId);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner })).statusCode).toBe(200);
  });

  it('after the grace period the purge crypto-shreds and deletes the tenant, records it in the platform log, and members are out', async () => {
    const { owner, tenantId } = await ownerWithTenant('Gone Ltd');
    const contact = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'Kept nowhere' } });
    expect(contact.statusCode).toBe(201);
    expect((await t.request({ method: 'POST', url: deletion(tenantId), as: owner, body: { confirmName: 'Gone Ltd' } })).statusCode).toBe(202);
    await t.admin.query(`update tenants set deletion_due_at = now() - interval '1 second' where id = $1`, [tenantId]);
    expect((await purgeDueTenants(t.db, keyring())).deleted).toEqual([tenantId]);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner })).statusCode).toBe(404);
    expect(await t.admin.query(`select 1 from accounts where tenant_id = $1`, [tenantId])).toEqual([]);
    expect(await t.admin.query(`select 1 from tenant_keys where tenant_id = $1`, [tenantId])).toEqual([]);
    const [event] = await t.admin.query<{ actor_type: string }>(`select actor_type from platform_audit_events where tenant_id = $1 and action = 'tenant.deleted'`, [tenantId]);
    expect(event!.actor_type).toBe('system');
    // Idempotent: a second pass finds nothing more to do.
    expect((await purgeDueTenants(t.db, keyring())).deleted).toEqual([]);
  });
});
