import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';

describe('HTTP plumbing', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;
  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup());
  });
  afterAll(async () => t?.close());

  it('sends security headers, a strict CSP, a request id and no x-powered-by', async () => {
    const response = await t.request({ method: 'GET', url: '/healthz' });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-security-policy']).toBe(
      "default-src 'self';script-src 'self';style-src 'self';img-src 'self' data:;connect-src 'self';font-src 'self';object-src 'none';base-uri 'none';form-action 'self';frame-ancestors 'none'",
    );
    expect(response.headers['x-content-type-options']).toBe('nosniff');
    expect(response.headers['x-frame-options']).toBe('SAMEORIGIN');
    expect(response.headers['referrer-policy']).toBe('no-referrer');
    expect(response.headers['x-powered-by']).toBeUndefined();
    expect(response.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(response.headers['cache-control']).toBe('no-store');
  });

  it('answers unknown routes and oversized bodies with problem+json', async () => {
    const missing = await t.request({ method: 'GET', url: '/api/v1/nothing-here' });
    expect(missing.statusCode).toBe(404);
    expect(missing.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(missing.json()).toEqual({ type: expect.any(String), title: 'Not found', status: 404, code: 'not_found' });
    // Refusals carry the security headers too.
    expect(missing.headers['content-security-policy']).toMatch(/^default-src 'self';/);
    const refused = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts` });
    expect(refused.statusCode).toBe(401);
    expect(refused.headers['content-security-policy']).toMatch(/^default-src 'self';/);
    expect(refused.headers['x-content-type-options']).toBe('nosniff');
    const huge = await t.request({
      method: 'POST',
      url: `/api/v1/tenants/${tenantId}/accounts`,
      as: owner,
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ name: 'x', description: 'y'.repeat(1024 * 1024) }),
    });
    expect(huge.statusCode).toBe(413);
    expect(huge.json().code).toBe('request.too_large');
  });

  it('never returns a stack trace or internal message on a server error', async () => {
    const broken = await startTestApp({
      extraRoutes: [
        {
          method: 'GET',
          url: '/boom',
          access: { kind: 'public', reason: 'test' },
          schema: { summary: 'boom', response: {} },
          handler: async () => {
            throw new Error('secret internal detail at /srv/app/db.ts:42');
          },
        },
      ],
    });
    try {
      const response = await broken.request({ method: 'GET', url: '/boom' });
      expect(response.statusCode).toBe(500);
      expect(response.json()).toEqual({ type: expect.any(String), title: 'Internal server error', status: 500, code: 'internal' });
      expect(response.body).not.toMatch(/secret|db\.ts|at /);
    } finally {
      await broken.close();
    }
  });

  it('publishes an OpenAPI 3.1 document generated from every route schema', async () => {
    const response = await t.request({ method: 'GET', url: '/api/v1/openapi.json' });
    expect(response.statusCode).toBe(200);
    const doc = response.json();
    expect(doc.openapi).toBe('3.1.0');
    const create = doc.paths['/api/v1/tenants/{tenantId}/accounts'].post;
    expect(create.requestBody.content['application/json'].schema.additionalProperties).toBe(false);
    expect(Object.keys(create.responses)).toContain('201');
    for (const path of ['/api/v1/auth/signup', '/api/v1/auth/login', '/api/v1/tenants/{tenantId}/contacts/{id}', '/api/v1/tenants/{tenantId}/audit-events']) {
      expect(doc.paths[path], path).toBeDefined();
    }
  });

  it('serves an RFC 9116 security.txt with every required field and a reachable policy', async () => {
    const response = await t.request({ method: 'GET', url: '/.well-known/security.txt' });
    expect(response.headers['content-type']).toMatch(/^text\/plain/);
    const fields = Object.fromEntries(response.body.trim().split('\n').map((line) => line.split(/: (.*)/s).slice(0, 2)));
    expect(Object.keys(fields)).toEqual(['Contact', 'Expires', 'Policy', 'Canonical', 'Preferred-Languages']);
    const expires = Date.parse(fields.Expires);
    expect(expires).toBeGreaterThan(Date.now());
    expect(expires).toBeLessThan(Date.now() + 365 * 24 * 3600_000);
    const policy = await t.request({ method: 'GET', url: new URL(fields.Policy).pathname });
    expect(policy.statusCode).toBe(200);
    expect(policy.body).toMatch(/Security/);
  });

  it('keeps passwords, cookies, CSRF tokens and session tokens out of the logs', async () => {
    t.logs.length = 0;
    const login = await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: owner.email, password: PASSWORD } });
    expect(login.statusCode).toBe(200);
    await t.request({ method: 'GET', url: '/api/v1/auth/session', as: owner });
    await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, headers: { authorization: 'Bearer cn_secret_key_material' }, body: { name: 'logged' } });
    const text = t.logs.join('');
    expect(text.length).toBeGreaterThan(0);
    const sessionToken = owner.cookie.split('=')[1]!;
    for (const secret of [PASSWORD, sessionToken, owner.csrfToken, 'cn_secret_key_material']) expect(text).not.toContain(secret);
    // Whatever code logs a request's headers or a body with secrets, the redaction catches it.
    t.logs.length = 0;
    t.app.log.info({ req: { headers: { cookie: owner.cookie, authorization: 'Bearer k1', 'x-csrf-token': owner.csrfToken } }, body: { password: PASSWORD, token: 't0k', key: 'k3y' } }, 'probe');
    const probe = t.logs.join('');
    expect(probe).toContain('[redacted]');
    for (const secret of [owner.cookie, 'Bearer k1', owner.csrfToken, PASSWORD, 't0k', 'k3y']) expect(probe).not.toContain(secret);
  });
});
