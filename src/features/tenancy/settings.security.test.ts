import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { totpFor } from '../identity/mfa.ts';

// Threats: a tenant's members reach its data with a password alone although the tenant
// requires a second factor; an abandoned session stays usable for hours.
const DEFAULTS = {
  requireMfa: false,
  requireSso: false,
  sessionIdleMinutes: 30,
  auditRetentionDays: 365,
  guestSharing: false,
  aiEnabled: false,
  ipAllowlist: [],
  allowedEmailDomains: [],
  accessReviewUnanswered: 'flag',
  accessReviewIntervalDays: 90,
  scimDefaultRole: 'member',
};

describe('tenant security settings', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;
  const settings = () => `/api/v1/tenants/${tenantId}/settings`;
  const accounts = () => `/api/v1/tenants/${tenantId}/accounts`;

  async function enableMfa(session: SessionHandle) {
    const { secret } = (await t.request({ method: 'POST', url: '/api/v1/auth/totp/enroll', as: session })).json();
    const response = await t.request({ method: 'POST', url: '/api/v1/auth/totp/activate', as: session, body: { code: totpFor(secret, 'x').generate() } });
    expect(response.statusCode).toBe(200);
  }

  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup());
  });
  afterAll(async () => t?.close());

  it('reads defaults; only settings.manage may change them; each change is audited with before and after', async () => {
    expect((await t.request({ method: 'GET', url: settings(), as: owner })).json()).toEqual(DEFAULTS);
    const member = await t.addMember(owner, tenantId, 'member');
    expect((await t.request({ method: 'PATCH', url: settings(), as: member, body: { sessionIdleMinutes: 10 } })).statusCode).toBe(403);
    const patched = await t.request({ method: 'PATCH', url: settings(), as: owner, body: { sessionIdleMinutes: 15 } });
    expect(patched.json()).toEqual({ ...DEFAULTS, sessionIdleMinutes: 15 });
    // Audit retention: never under 90 days (the database holds the purge to that too).
    for (const body of [{}, { sessionIdleMinutes: 1 }, { requireMfa: 'yes' }, { ipAllowlist: 'x' }, { aiEnabled: 1 }, { allowedEmailDomains: ['not a domain'] }, { favouriteColour: 'red' }, { auditRetentionDays: 89 }, { auditRetentionDays: 3651 }, { auditRetentionDays: 120.5 }]) {
      expect((await t.request({ method: 'PATCH', url: settings(), as: owner, body })).statusCode).toBe(400);
    }
    const [event] = await t.admin.query<{ metadata: unknown }>(`select canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'settings.updated'`, [tenantId]);
    expect(event!.metadata).toEqual({ before: DEFAULTS, after: { ...DEFAULTS, sessionIdleMinutes: 15 } });
    const longer = await t.request({ method: 'PATCH', url: settings(), as: owner, body: { auditRetentionDays: 730 } });
    expect(longer.json()).toMatchObject({ auditRetentionDays: 730 });
    const [change] = await t.admin.query<{ metadata: { before: { auditRetentionDays: number }; after: { auditRetentionDays: number } } }>(
      `select canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'settings.updated' and canonical_metadata::jsonb->'after'->>'auditRetentionDays' = '730'`,
      [tenantId],
    );
    expect([change!.metadata.before.auditRetentionDays, change!.metadata.after.auditRetentionDays]).toEqual([365, 730]);
  });

  it('an admin without MFA cannot require it (409); with MFA on, members without it get 403 until they enroll; API keys are unaffected', async () => {
    const refused = await t.request({ method: 'PATCH', url: settings(), as: owner, body: { requireMfa: true } });
    expect(refused.statusCode).toBe(409);
    expect(refused.json().code).toBe('auth.mfa_required');
    const key = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/api-keys`, as: owner, body: { name: 'ci', role: 'viewer' } })).json().key;
    await enableMfa(owner);
    expect((await t.request({ method: 'PATCH', url: settings(), as: owner, body: { requireMfa: true } })).statusCode).toBe(200);
    const member = await t.addMember(owner, tenantId, 'member');
    const blocked = await t.request({ method: 'GET', url: accounts(), as: member });
    expect(blocked.statusCode).toBe(403);
    expect(blocked.json().code).toBe('auth.mfa_required');
    const [denial] = await t.admin.query<{ metadata: { reason: string } }>(
      `select canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'access.denied' and actor_id = $2`,
      [tenantId, member.userId],
    );
    expect(denial!.metadata.reason).toBe('mfa_required');
    await enableMfa(member); // enrollment itself stays reachable
    expect((await t.request({ method: 'GET', url: accounts(), as: member })).statusCode).toBe(200);
    expect((await t.request({ method: 'GET', url: accounts(), headers: { authorization: `Bearer ${key}` } })).statusCode).toBe(200);
    await t.request({ method: 'PATCH', url: settings(), as: owner, body: { requireMfa: false } });
  });

  it("an idle session stops working: the tenant's shorter limit on its routes, the platform's everywhere", async () => {
    const member = await t.addMember(owner, tenantId, 'member');
    const { tenantId: ownTenant } = (await t.request({ method: 'GET', url: '/api/v1/auth/session', as: member })).json().memberships.find((m: { tenantId: string }) => m.tenantId !== tenantId);
    const setIdle = (minutes: number) =>
      t.admin.query(`update sessions set last_seen_at = now() - make_interval(mins => $1) where user_id = $2`, [minutes, member.userId]);
    await setIdle(20); // beyond this tenant's 15 minutes, within the platform's 30
    const here = await t.request({ method: 'GET', url: accounts(), as: member });
    expect(here.statusCode).toBe(401);
    expect(here.json().code).toBe('auth.session_expired');
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${ownTenant}/accounts`, as: member })).statusCode).toBe(200);
    // That use stamped the session (it rides the read-only transaction's deferred COMMIT).
    await new Promise((resolve) => setTimeout(resolve, 100));
    const [stamped] = await t.admin.query<{ recent: boolean }>(`select last_seen_at > now() - interval '1 minute' as recent from sessions where user_id = $1`, [member.userId]);
    expect(stamped!.recent).toBe(true);
    await setIdle(31);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${ownTenant}/accounts`, as: member })).statusCode).toBe(401);
    expect((await t.request({ method: 'GET', url: '/api/v1/auth/session', as: member })).statusCode).toBe(401);
  });
});
