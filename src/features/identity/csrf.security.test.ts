import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { allRoutes } from '../../app.ts';
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

  const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
  /** The live route table with every :param filled in (preflight runs before validation, so any id will do). */
  const unsafeRoutes = (kind: 'public' | 'session') =>
    allRoutes(t.config)
      .filter((route) => UNSAFE.has(route.method) && (route.access.kind === 'public') === (kind === 'public'))
      .map((route) => ({ method: route.method, url: route.url.replace(':tenantId', tenantId).replace(/:\w+/g, randomUUID()) }));

  it('every cookie-authenticated unsafe route of the live route table refuses a missing or foreign CSRF token', async () => {
    const other = await t.signup();
    const routes = unsafeRoutes('session');
    expect(routes.length).toBeGreaterThan(20);
    for (const { method, url } of routes) {
      for (const token of [undefined, other.session.csrfToken, '']) {
        const headers: Record<string, string> = { cookie: owner.cookie };
        if (token !== undefined) headers['x-csrf-token'] = token;
        const response = await t.request({ method, url, body: {}, headers });
        expect(response.statusCode, `${method} ${url}`).toBe(403);
        expect(response.json().code).toBe('csrf.invalid');
      }
    }
    // Nothing changed: the owner is still the owner, no account was created, still logged in.
    const session = await t.request({ method: 'GET', url: '/api/v1/auth/session', as: owner });
    expect(session.statusCode).toBe(200);
    expect(await t.admin.query('select 1 from accounts where tenant_id = $1', [tenantId])).toEqual([]);
  });

  it('every unsafe route without a session (signup, login, second factor, reset, verification) refuses a cross-site request', async () => {
    const routes = unsafeRoutes('public');
    expect(routes.map((r) => r.url)).toEqual(expect.arrayContaining(['/api/v1/auth/signup', '/api/v1/auth/login', '/api/v1/auth/mfa', '/api/v1/auth/password-reset']));
    for (const { method, url } of routes) {
      for (const headers of [{ origin: 'https://evil.example' }, { 'sec-fetch-site': 'cross-site' }] as Record<string, string>[]) {
        const response = await t.request({ method, url, headers, body: {} });
        expect(response.statusCode, `${method} ${url}`).toBe(403);
        // SCIM answers in SCIM's error format (its clients are servers with a bearer token, but a browser is refused all the same).
        if (url.startsWith('/scim/')) expect(response.json()).toMatchObject({ schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '403' });
        else expect(response.json().code).toBe('csrf.invalid');
      }
    }
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
