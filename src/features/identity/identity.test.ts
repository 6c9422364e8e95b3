import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cookieFrom, PASSWORD, startTestApp, type TestApp } from '../../../test/harness.ts';
import { hashPassword } from './passwords.ts';

describe('signup, login, session and logout', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t?.close());

  it('signup creates the user, a tenant they own, a session cookie and audit events', async () => {
    const response = await t.request({
      method: 'POST',
      url: '/api/v1/auth/signup',
      body: { email: 'Ada@Example.com', password: PASSWORD, name: 'Ada', tenantName: 'Analytical' },
    });
    expect(response.statusCode).toBe(201);
    const body = response.json();
    expect(body.user).toMatchObject({ email: 'ada@example.com', name: 'Ada' });
    expect(body.tenant.name).toBe('Analytical');
    const cookie = String(response.headers['set-cookie']);
    expect(cookie).toMatch(/cn_session=[A-Za-z0-9_-]{43};/);
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Lax/);
    expect(cookie).toMatch(/Path=\//);
    const session = await t.request({ method: 'GET', url: '/api/v1/auth/session', headers: { cookie: cookieFrom(response) } });
    expect(session.json()).toEqual({
      user: { ...body.user, emailVerified: false },
      memberships: [{ tenantId: body.tenant.id, tenantName: 'Analytical', role: 'owner' }],
      csrfToken: body.csrfToken,
    });
    const [event] = await t.admin.query<{ action: string; actor_id: string }>(
      'select action, actor_id from audit_events where tenant_id = $1',
      [body.tenant.id],
    );
    expect(event).toEqual({ action: 'auth.signup', actor_id: body.user.id });
  });

  it('a successful login transparently rehashes a password stored with other argon2 parameters', async () => {
    const { session } = await t.signup();
    const older = await hashPassword(PASSWORD, { memoryKiB: 19456, iterations: 3, parallelism: 1 });
    await t.admin.query('update users set password_hash = $1 where id = $2', [older, session.userId]);
    // A failed login changes nothing.
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: session.email, password: 'not the password at all' } })).statusCode).toBe(401);
    expect((await t.admin.query<{ password_hash: string }>('select password_hash from users where id = $1', [session.userId]))[0]!.password_hash).toBe(older);
    await t.login(session.email);
    const [after] = await t.admin.query<{ password_hash: string }>('select password_hash from users where id = $1', [session.userId]);
    expect(after!.password_hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    await t.login(session.email);
  });

  it('stores only a hash of the session token and an argon2id password hash', async () => {
    const { session } = await t.signup({ email: 'hash-check@example.com' });
    const token = session.cookie.split('=')[1]!;
    const rows = await t.admin.query<{ token_hash: Buffer | Uint8Array }>('select token_hash from sessions');
    expect(rows.every((row) => !Buffer.from(row.token_hash).toString('utf8').includes(token))).toBe(true);
    const [user] = await t.admin.query<{ password_hash: string }>('select password_hash from users where email = $1', ['hash-check@example.com']);
    expect(user!.password_hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
  });

  it('refuses a duplicate email and passwords outside 12..128 characters', async () => {
    await t.signup({ email: 'dup@example.com' });
    const dup = await t.request({ method: 'POST', url: '/api/v1/auth/signup', body: { email: 'DUP@example.com', password: PASSWORD, name: 'x', tenantName: 'y' } });
    expect(dup.statusCode).toBe(409);
    expect(dup.json().code).toBe('auth.email_taken');
    for (const password of ['short', 'x'.repeat(129)]) {
      const weak = await t.request({ method: 'POST', url: '/api/v1/auth/signup', body: { email: 'weak@example.com', password, name: 'x', tenantName: 'y' } });
      expect(weak.statusCode).toBe(400);
      expect(weak.json().code).toBe('auth.weak_password');
    }
    expect(await t.admin.query('select 1 from users where email = $1', ['weak@example.com'])).toEqual([]);
  });

  it('logs in with the right password; wrong password and unknown email answer the same 401', async () => {
    const { session } = await t.signup({ email: 'login@example.com' });
    const ok = await t.login('login@example.com');
    expect(ok.userId).toBe(session.userId);
    const wrong = await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: 'login@example.com', password: 'not the password!' } });
    const unknown = await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: 'nobody@example.com', password: 'not the password!' } });
    expect(wrong.statusCode).toBe(401);
    expect(unknown.statusCode).toBe(401);
    expect(wrong.json()).toEqual(unknown.json());
    expect(wrong.json().code).toBe('auth.invalid_credentials');
    expect(wrong.headers['set-cookie']).toBeUndefined();
  });

  it("records failed and successful logins in every tenant of the user and in the platform log", async () => {
    const { session, tenantId } = await t.signup({ email: 'audited@example.com' });
    await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: 'audited@example.com', password: 'wrong password!!' } });
    await t.login('audited@example.com');
    const tenantEvents = await t.admin.query<{ action: string; outcome: string }>(
      'select action, outcome from audit_events where tenant_id = $1 order by position',
      [tenantId],
    );
    expect(tenantEvents).toEqual([
      { action: 'auth.signup', outcome: 'success' },
      { action: 'auth.login.failed', outcome: 'failure' },
      { action: 'auth.login.succeeded', outcome: 'success' },
    ]);
    const platform = await t.admin.query<{ action: string }>('select action from platform_audit_events where actor_id = $1 order by position', [session.userId]);
    expect(platform.map((e) => e.action)).toEqual(['auth.signup', 'auth.login.failed', 'auth.login.succeeded']);
  });

  it('logout revokes the session server-side, so the old cookie stops working', async () => {
    const { session } = await t.signup();
    const out = await t.request({ method: 'POST', url: '/api/v1/auth/logout', as: session });
    expect(out.statusCode).toBe(204);
    const after = await t.request({ method: 'GET', url: '/api/v1/auth/session', as: session });
    expect(after.statusCode).toBe(401);
    expect(after.json().code).toBe('auth.unauthenticated');
  });

  it('SIGNUP=closed refuses self-service signup', async () => {
    const closed = await startTestApp({ env: { SIGNUP: 'closed' } });
    try {
      const response = await closed.request({ method: 'POST', url: '/api/v1/auth/signup', body: { email: 'c@example.com', password: PASSWORD, name: 'c', tenantName: 'c' } });
      expect(response.statusCode).toBe(403);
      expect(response.json().code).toBe('auth.signup_closed');
    } finally {
      await closed.close();
    }
  });
});

describe('managing your own sessions', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t?.close());

  it('lists your live sessions with device and address, and signs one out at once', async () => {
    const { session: first } = await t.signup();
    const second = await t.login(first.email);
    const list = await t.request({ method: 'GET', url: '/api/v1/auth/sessions', as: first, headers: { 'user-agent': 'test-agent/1.0' } });
    expect(list.statusCode).toBe(200);
    const items = list.json().items as { id: string; current: boolean; ip: string | null }[];
    expect(items).toHaveLength(2);
    expect(items.filter((s) => s.current)).toHaveLength(1);
    expect(items.every((s) => s.ip === '127.0.0.1')).toBe(true);
    const other = items.find((s) => !s.current)!;
    expect((await t.request({ method: 'DELETE', url: `/api/v1/auth/sessions/${other.id}`, as: first })).statusCode).toBe(204);
    expect((await t.request({ method: 'GET', url: '/api/v1/auth/session', as: second })).statusCode).toBe(401);
    expect((await t.request({ method: 'GET', url: '/api/v1/auth/session', as: first })).statusCode).toBe(200);
  });

  it("cannot sign out someone else's session (404, and it keeps working)", async () => {
    const { session: mine } = await t.signup();
    const { session: theirs } = await t.signup();
    const [row] = await t.admin.query<{ id: string }>('select id from sessions where user_id = $1', [theirs.userId]);
    const response = await t.request({ method: 'DELETE', url: `/api/v1/auth/sessions/${row!.id}`, as: mine });
    expect(response.statusCode).toBe(404);
    expect((await t.request({ method: 'GET', url: '/api/v1/auth/session', as: theirs })).statusCode).toBe(200);
  });
});
