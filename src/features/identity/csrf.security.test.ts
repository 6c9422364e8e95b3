import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';

// Threat: another site makes the victim's browser send a state-changing request with their cookie.
describe('CSRF protection', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;
  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup());
  });
  afterAll(async () => t?.close());

  it('every cookie-authenticated unsafe route refuses a missing or foreign CSRF token', async () => {
    const other = await t.signup();
    const routes = [
      ['POST', `/api/v1/tenants/${tenantId}/accounts`, { name: 'x' }],
      ['POST', '/api/v1/tenants', { name: 'x' }],
      ['POST', '/api/v1/auth/logout', undefined],
      ['POST', `/api/v1/tenants/${tenantId}/invitations`, { email: 'x@example.com', role: 'member' }],
      ['POST', '/api/v1/invitations/accept', { token: 'x' }],
      ['PATCH', `/api/v1/tenants/${tenantId}/members/${owner.userId}`, { role: 'admin' }],
      ['DELETE', `/api/v1/tenants/${tenantId}/members/${owner.userId}`, undefined],
    ] as const;
    for (const [method, url, body] of routes) {
      for (const token of [undefined, other.session.csrfToken, '']) {
        const headers: Record<string, string> = { cookie: owner.cookie };
        if (token !== undefined) headers['x-csrf-token'] = token;
        const response = await t.request({ method, url, body, headers });
        expect(response.statusCode, `${method} ${url}`).toBe(403);
        expect(response.json().code).toBe('csrf.invalid');
      }
    }
    // Nothing changed: the owner is still the owner, no account was created, still logged in.
    const session = await t.request({ method: 'GET', url: '/api/v1/auth/session', as: owner });
    expect(session.statusCode).toBe(200);
    expect(await t.admin.query('select 1 from accounts where tenant_id = $1', [tenantId])).toEqual([]);
  });

  it('signup and login refuse a cross-site Origin', async () => {
    const evil = { origin: 'https://evil.example' };
    const signup = await t.request({ method: 'POST', url: '/api/v1/auth/signup', headers: evil, body: { email: 'o@example.com', password: PASSWORD, name: 'o', tenantName: 'o' } });
    expect(signup.statusCode).toBe(403);
    expect(signup.json().code).toBe('csrf.invalid');
    const login = await t.request({ method: 'POST', url: '/api/v1/auth/login', headers: { 'sec-fetch-site': 'cross-site' }, body: { email: owner.email, password: PASSWORD } });
    expect(login.statusCode).toBe(403);
    const sameOrigin = await t.request({ method: 'POST', url: '/api/v1/auth/login', headers: { origin: 'http://localhost:80' }, body: { email: owner.email, password: PASSWORD } });
    expect(sameOrigin.statusCode).toBe(200);
  });
});
