import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, startTestApp, type TestApp } from '../../../test/harness.ts';
import { totpFor } from './mfa.ts';

// Threats: a session left open (or stolen) is used to mint lasting credentials or change
// the factors that protect the account; an old password keeps other devices signed in.
describe('step-up and password change', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t?.close());

  const age = (userId: string, minutes: number) =>
    t.admin.query(`update sessions set authenticated_at = now() - make_interval(mins => $1) where user_id = $2`, [minutes, userId]);

  it('minting an API key or enrolling MFA needs an authentication within 15 minutes; re-authenticating restores it', async () => {
    const { session, tenantId } = await t.signup();
    await age(session.userId, 16);
    const key = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/api-keys`, as: session, body: { name: 'k', role: 'member' } });
    expect(key.statusCode).toBe(403);
    expect(key.json().code).toBe('auth.reauth_required');
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/totp/enroll', as: session })).statusCode).toBe(403);
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/reauth', as: session, body: { password: 'wrong password!!' } })).statusCode).toBe(401);
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/reauth', as: session, body: { password: PASSWORD } })).statusCode).toBe(204);
    expect((await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/api-keys`, as: session, body: { name: 'k', role: 'member' } })).statusCode).toBe(201);
  });

  it('an API key can never mint another key', async () => {
    const { session, tenantId } = await t.signup();
    const { key } = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/api-keys`, as: session, body: { name: 'admin bot', role: 'admin' } })).json();
    const minted = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/api-keys`, headers: { authorization: `Bearer ${key}` }, body: { name: 'child', role: 'member' } });
    expect(minted.statusCode).toBe(403);
    expect(minted.json().code).toBe('auth.reauth_required');
  });

  it('with MFA on, re-authentication also needs a fresh code', async () => {
    const { session } = await t.signup();
    const { secret } = (await t.request({ method: 'POST', url: '/api/v1/auth/totp/enroll', as: session })).json();
    await t.request({ method: 'POST', url: '/api/v1/auth/totp/activate', as: session, body: { code: totpFor(secret, 'x').generate() } });
    await age(session.userId, 16);
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/reauth', as: session, body: { password: PASSWORD } })).statusCode).toBe(401);
    const code = totpFor(secret, 'x').generate({ timestamp: Date.now() + 30_000 });
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/reauth', as: session, body: { password: PASSWORD, code } })).statusCode).toBe(204);
  });

  it('changing the password needs the current one, applies the policy, and ends every other session', async () => {
    const { session } = await t.signup();
    const other = await t.login(session.email);
    const wrong = await t.request({ method: 'POST', url: '/api/v1/auth/password', as: session, body: { currentPassword: 'not it at all!', newPassword: 'a brand new long passphrase' } });
    expect(wrong.statusCode).toBe(401);
    const weak = await t.request({ method: 'POST', url: '/api/v1/auth/password', as: session, body: { currentPassword: PASSWORD, newPassword: 'password1234' } });
    expect(weak.statusCode).toBe(400);
    expect(weak.json().code).toBe('auth.weak_password');
    const changed = await t.request({ method: 'POST', url: '/api/v1/auth/password', as: session, body: { currentPassword: PASSWORD, newPassword: 'a brand new long passphrase' } });
    expect(changed.statusCode).toBe(204);
    expect((await t.request({ method: 'GET', url: '/api/v1/auth/session', as: other })).statusCode).toBe(401);
    expect((await t.request({ method: 'GET', url: '/api/v1/auth/session', as: session })).statusCode).toBe(200);
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: session.email, password: PASSWORD } })).statusCode).toBe(401);
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: session.email, password: 'a brand new long passphrase' } })).statusCode).toBe(200);
  });
});
