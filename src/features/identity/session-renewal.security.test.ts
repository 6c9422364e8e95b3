import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { totpFor } from './mfa.ts';

// Threat: session fixation. A token an attacker planted or saw before the victim gained
// privilege (proved their password again, turned MFA on, joined or created a tenant)
// must not carry that privilege: each such change gives the session a new token.
describe('a privilege change renews the session token', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t?.close());

  const whoAmI = (as: SessionHandle) => t.request({ method: 'GET', url: '/api/v1/auth/session', as });

  /** Runs change as `session`; afterwards the old token is dead, the renewed one works and it is the same session. */
  async function expectRenewal(session: SessionHandle, change: () => Promise<{ statusCode: number }>, expectedStatus: number) {
    const old: SessionHandle = { ...session };
    const [before] = await t.admin.query<{ count: number }>('select count(*)::int as count from sessions where user_id = $1', [session.userId]);
    const response = await change();
    expect(response.statusCode).toBe(expectedStatus);
    expect(session.cookie).not.toBe(old.cookie);
    expect(session.csrfToken).not.toBe(old.csrfToken);
    expect((await whoAmI(old)).statusCode).toBe(401);
    const now = await whoAmI(session);
    expect(now.statusCode).toBe(200);
    expect(now.json().csrfToken).toBe(session.csrfToken);
    const [after] = await t.admin.query<{ count: number }>('select count(*)::int as count from sessions where user_id = $1', [session.userId]);
    expect(after!.count).toBe(before!.count);
  }

  it('re-authentication (step-up)', async () => {
    const { session } = await t.signup();
    await expectRenewal(session, () => t.request({ method: 'POST', url: '/api/v1/auth/reauth', as: session, body: { password: PASSWORD } }), 204);
  });

  it('a failed re-authentication keeps the token', async () => {
    const { session } = await t.signup();
    const cookie = session.cookie;
    const response = await t.request({ method: 'POST', url: '/api/v1/auth/reauth', as: session, body: { password: 'not my password at all' } });
    expect(response.statusCode).toBe(401);
    expect(response.headers['set-cookie']).toBeUndefined();
    expect(session.cookie).toBe(cookie);
    expect((await whoAmI(session)).statusCode).toBe(200);
  });

  it('password change', async () => {
    const { session } = await t.signup();
    await expectRenewal(
      session,
      () => t.request({ method: 'POST', url: '/api/v1/auth/password', as: session, body: { currentPassword: PASSWORD, newPassword: 'a brand new long passphrase' } }),
      204,
    );
  });

  it('turning MFA on and off', async () => {
    const { session } = await t.signup();
    const { secret } = (await t.request({ method: 'POST', url: '/api/v1/auth/totp/enroll', as: session })).json<{ secret: string }>();
    await expectRenewal(session, () => t.request({ method: 'POST', url: '/api/v1/auth/totp/activate', as: session, body: { code: totpFor(secret, 'x').generate() } }), 200);
    await expectRenewal(session, () => t.request({ method: 'POST', url: '/api/v1/auth/totp/disable', as: session, body: { password: PASSWORD } }), 204);
  });

  it('joining a tenant by invitation and creating a tenant', async () => {
    const { session: owner, tenantId } = await t.signup();
    const { session } = await t.signup();
    const invite = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/invitations`, as: owner, body: { email: session.email, role: 'admin' } });
    await expectRenewal(session, () => t.request({ method: 'POST', url: '/api/v1/invitations/accept', as: session, body: { token: invite.json().token } }), 200);
    await expectRenewal(session, () => t.request({ method: 'POST', url: '/api/v1/tenants', as: session, body: { name: 'Second' } }), 201);
  });

  it('a promotion by an admin signs the member out of that tenant: the new authority needs a new login (a new token)', async () => {
    const { session: owner, tenantId } = await t.signup();
    const member = await t.addMember(owner, tenantId, 'member');
    const promote = await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/members/${member.userId}`, as: owner, body: { role: 'admin' } });
    expect(promote.statusCode).toBe(200);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/members`, as: member })).statusCode).toBe(401);
    const fresh = await t.login(member.email);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/members`, as: fresh })).statusCode).toBe(200);
    // A demotion takes effect at once and needs no new login.
    await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/members/${member.userId}`, as: owner, body: { role: 'viewer' } });
    const demoted = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/members`, as: fresh });
    expect(demoted.statusCode).toBe(403);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: fresh })).statusCode).toBe(200);
  });
});
