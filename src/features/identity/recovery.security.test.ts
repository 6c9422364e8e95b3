import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, startTestApp, type TestApp } from '../../../test/harness.ts';
import { readOutbox, waitForToken } from '../../../test/support/outbox.ts';

const NEW_PASSWORD = 'a completely different passphrase';

/** Retries check until it passes (the reset's work runs after the answer), for up to 5 s. */
async function eventually(check: () => Promise<void>): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await check();
    } catch (error) {
      if (attempt >= 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

// Threats: account takeover through the reset flow (guessable, reusable or long-lived
// tokens, tokens readable from the database), account enumeration through the reset
// answer, mailbox bombing, and an unverified address being taken as proof of ownership.
describe('password reset and email verification by mailed token', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t?.close());

  let ip = 0;
  const requestReset = (email: string, remoteAddress = `198.51.100.${++ip % 250}`) =>
    t.request({ method: 'POST', url: '/api/v1/auth/password-reset', body: { email }, remoteAddress });
  const confirmReset = (token: string, newPassword = NEW_PASSWORD) =>
    t.request({ method: 'POST', url: '/api/v1/auth/password-reset/confirm', body: { token, newPassword } });

  it('a reset link sets a new password once, ends every session and is stored only as a hash', async () => {
    const { session, tenantId } = await t.signup();
    const response = await requestReset(session.email.toUpperCase());
    expect(response.statusCode).toBe(202);
    expect(response.json()).toEqual({ status: 'accepted' });
    const token = await waitForToken(t.config.dataDir, session.email, 'Reset your');
    const stored = await t.admin.query<{ token_hash: Buffer; expires_at: Date; created_at: Date }>(
      `select token_hash, expires_at, created_at from user_tokens where purpose = 'password_reset' and email = $1`,
      [session.email],
    );
    expect(stored).toHaveLength(1);
    expect(stored[0]!.token_hash.toString('base64url')).not.toBe(token);
    expect(stored[0]!.expires_at.getTime() - stored[0]!.created_at.getTime()).toBeLessThanOrEqual(30 * 60_000 + 1000);

    // A weak password is refused without spending the link.
    const weak = await confirmReset(token, 'password1234');
    expect(weak.statusCode).toBe(400);
    expect(weak.json().code).toBe('auth.weak_password');

    expect((await confirmReset(token)).statusCode).toBe(204);
    expect((await t.request({ method: 'GET', url: '/api/v1/auth/session', as: session })).statusCode).toBe(401);
    await expect(t.login(session.email, PASSWORD)).rejects.toThrow(/401/);
    await t.login(session.email, NEW_PASSWORD);

    const replay = await confirmReset(token, 'yet another fine passphrase');
    expect(replay.statusCode).toBe(400);
    expect(replay.json().code).toBe('auth.token_invalid');
    const actions = await t.admin.query<{ action: string }>(`select action from audit_events where tenant_id = $1 and action like 'auth.password%' order by position`, [tenantId]);
    expect(actions.map((a) => a.action)).toEqual(['auth.password_reset.requested', 'auth.password.reset']);
  });

  it('enumeration: an unknown address gets the same answer and no mail', async () => {
    // The answer is given before anything depends on the address: same body, same work.
    const before = readOutbox(t.config.dataDir).length;
    const unknown = await requestReset('nobody-here@example.com');
    expect(unknown.statusCode).toBe(202);
    expect(unknown.json()).toEqual({ status: 'accepted' });
    await eventually(async () => {
      const [event] = await t.admin.query<{ outcome: string }>(`select outcome from platform_audit_events where action = 'auth.password_reset.requested' and metadata->>'email' = 'nobody-here@example.com'`);
      expect(event?.outcome).toBe('failure');
    });
    expect(readOutbox(t.config.dataDir).filter((m) => m.to.includes('nobody-here'))).toHaveLength(0);
    expect(readOutbox(t.config.dataDir).length).toBe(before);
  });

  it('an expired or unknown token is refused, and a new request invalidates the older link', async () => {
    const { session } = await t.signup();
    await requestReset(session.email);
    const first = await waitForToken(t.config.dataDir, session.email, 'Reset your', 0);
    await requestReset(session.email);
    const second = await waitForToken(t.config.dataDir, session.email, 'Reset your', 1);
    expect((await confirmReset(first)).json().code).toBe('auth.token_invalid');
    await t.admin.query(`update user_tokens set expires_at = now() - interval '1 second' where email = $1 and purpose = 'password_reset'`, [session.email]);
    expect((await confirmReset(second)).json().code).toBe('auth.token_invalid');
    for (const token of ['x', 'A'.repeat(43), `${second.slice(0, 42)}!`]) {
      const response = await confirmReset(token);
      expect(response.statusCode).toBe(400);
      expect(response.json().code).toBe('auth.token_invalid');
    }
    await t.login(session.email, PASSWORD);
  });

  it('race: parallel uses of one link succeed exactly once', async () => {
    const { session } = await t.signup();
    await requestReset(session.email);
    const token = await waitForToken(t.config.dataDir, session.email, 'Reset your');
    const results = await Promise.all(Array.from({ length: 5 }, (_, i) => confirmReset(token, `${NEW_PASSWORD} number ${i}`)));
    expect(results.filter((r) => r.statusCode === 204)).toHaveLength(1);
    expect(results.filter((r) => r.statusCode === 400).every((r) => r.json().code === 'auth.token_invalid')).toBe(true);
  });

  it('mailbox bombing: at most 3 reset mails an hour per address, the answer never changes', async () => {
    const { session } = await t.signup();
    for (let i = 0; i < 6; i++) expect((await requestReset(session.email)).statusCode).toBe(202);
    await eventually(async () => {
      const rows = await t.admin.query(`select 1 from platform_audit_events where action = 'auth.password_reset.requested' and actor_id = $1`, [session.userId]);
      expect(rows).toHaveLength(6);
      expect(readOutbox(t.config.dataDir).filter((m) => m.to.includes(session.email) && m.subject.includes('Reset'))).toHaveLength(3);
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(readOutbox(t.config.dataDir).filter((m) => m.to.includes(session.email) && m.subject.includes('Reset'))).toHaveLength(3);
  });

  it('one address asking for many resets is throttled with 429 and Retry-After', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 32; i++) statuses.push((await requestReset(`probe-${i}@example.com`, '192.0.2.77')).statusCode);
    expect(statuses.slice(0, 30).every((s) => s === 202)).toBe(true);
    expect(statuses.at(-1)).toBe(429);
  });

  it('a reset lifts a login lock: whoever was guessing does not know the new password', async () => {
    const { session } = await t.signup();
    for (let i = 0; i < 11; i++) await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: session.email, password: 'wrong guess again' }, remoteAddress: '192.0.2.9' });
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: session.email, password: PASSWORD } })).statusCode).toBe(429);
    await requestReset(session.email);
    expect((await confirmReset(await waitForToken(t.config.dataDir, session.email, 'Reset your'))).statusCode).toBe(204);
    await t.login(session.email, NEW_PASSWORD);
  });

  it('signup mails a verification link; confirming it marks the address verified once', async () => {
    const { session, tenantId } = await t.signup();
    const token = await waitForToken(t.config.dataDir, session.email, 'Confirm your email');
    const before = await t.request({ method: 'GET', url: '/api/v1/auth/session', as: session });
    expect(before.json().user.emailVerified).toBe(false);
    const confirm = await t.request({ method: 'POST', url: '/api/v1/auth/email-verification/confirm', body: { token } });
    expect(confirm.statusCode).toBe(200);
    expect(confirm.json()).toEqual({ email: session.email, emailVerified: true });
    expect((await t.request({ method: 'GET', url: '/api/v1/auth/session', as: session })).json().user.emailVerified).toBe(true);
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/email-verification/confirm', body: { token } })).json().code).toBe('auth.token_invalid');
    const resend = await t.request({ method: 'POST', url: '/api/v1/auth/email-verification', as: session });
    expect(resend.json()).toEqual({ status: 'already_verified' });
    const [event] = await t.admin.query(`select 1 from audit_events where tenant_id = $1 and action = 'auth.email.verified'`, [tenantId]);
    expect(event).toBeDefined();
  });

  it('a verification link proves only the address it was sent to', async () => {
    const { session } = await t.signup();
    const resend = await t.request({ method: 'POST', url: '/api/v1/auth/email-verification', as: session });
    expect(resend.statusCode).toBe(202);
    const token = await waitForToken(t.config.dataDir, session.email, 'Confirm your email', 1);
    await t.admin.query('update users set email = $1 where id = $2', [`changed-${session.email}`, session.userId]);
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/email-verification/confirm', body: { token } })).json().code).toBe('auth.token_invalid');
    const [user] = await t.admin.query<{ email_verified_at: Date | null }>('select email_verified_at from users where id = $1', [session.userId]);
    expect(user!.email_verified_at).toBeNull();
  });

  it('resending verification needs a session and its CSRF token', async () => {
    const { session } = await t.signup();
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/email-verification' })).statusCode).toBe(401);
    const noCsrf = await t.request({ method: 'POST', url: '/api/v1/auth/email-verification', headers: { cookie: session.cookie } });
    expect(noCsrf.json().code).toBe('csrf.invalid');
  });

  it('mails hold the link; the log names only the outbox file, never the token', async () => {
    const { session } = await t.signup();
    const token = await waitForToken(t.config.dataDir, session.email, 'Confirm your email');
    const logs = t.logs.join('');
    expect(logs).toContain('mail written to the local outbox');
    expect(logs).not.toContain(token);
  });
});
