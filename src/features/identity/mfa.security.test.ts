import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cookieFrom, PASSWORD, startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { createKeyring } from '../../kernel/crypto/envelope.ts';
import { encryptLegacyTotpSecrets, totpFor } from './mfa.ts';

// Threats: a stolen password alone opens the account; a seen TOTP code or recovery code
// is replayed; the second step is guessed online.
describe('TOTP second factor', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t?.close());

  const codeAt = (secret: string, offsetSteps: number) => totpFor(secret, 'x').generate({ timestamp: Date.now() + offsetSteps * 30_000 });
  const startLogin = async (email: string) => {
    const response = await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email, password: PASSWORD } });
    expect(response.statusCode).toBe(200);
    expect(response.json().status).toBe('mfa_required');
    expect(response.headers['set-cookie']).toBeUndefined();
    return response.json().challenge as string;
  };
  const finish = (challenge: string, code: string) => t.request({ method: 'POST', url: '/api/v1/auth/mfa', body: { challenge, code } });

  async function enrolled(): Promise<{ session: SessionHandle; tenantId: string; secret: string; recoveryCodes: string[] }> {
    const { session, tenantId } = await t.signup();
    const enroll = await t.request({ method: 'POST', url: '/api/v1/auth/totp/enroll', as: session });
    expect(enroll.statusCode).toBe(200);
    const { secret, otpauthUri } = enroll.json();
    expect(otpauthUri).toMatch(/^otpauth:\/\/totp\/.+secret=[A-Z2-7]+.*algorithm=SHA1&digits=6&period=30/);
    const wrong = await t.request({ method: 'POST', url: '/api/v1/auth/totp/activate', as: session, body: { code: codeAt(secret, 0) === '000000' ? '111111' : '000000' } });
    expect(wrong.statusCode).toBe(401);
    const activate = await t.request({ method: 'POST', url: '/api/v1/auth/totp/activate', as: session, body: { code: codeAt(secret, 0) } });
    expect(activate.statusCode).toBe(200);
    return { session, tenantId, secret, recoveryCodes: activate.json().recoveryCodes };
  }

  it('enrollment is confirmed by a code, yields 10 recovery codes once, and is audited', async () => {
    const { session, tenantId, recoveryCodes } = await enrolled();
    expect(recoveryCodes).toHaveLength(10);
    for (const code of recoveryCodes) expect(code).toMatch(/^[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}$/);
    expect(new Set(recoveryCodes).size).toBe(10);
    const again = await t.request({ method: 'POST', url: '/api/v1/auth/totp/enroll', as: session });
    expect(again.statusCode).toBe(409);
    const members = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/members`, as: session });
    expect(members.json().items[0].mfaEnabled).toBe(true);
    const [event] = await t.admin.query(`select 1 from audit_events where tenant_id = $1 and action = 'auth.mfa.enrolled'`, [tenantId]);
    expect(event).toBeDefined();
    const stored = await t.admin.query<{ code_hash: Buffer }>(`select code_hash from mfa_recovery_codes where user_id = $1`, [session.userId]);
    expect(stored).toHaveLength(10);
  });

  it('stores the TOTP seed only encrypted, bound to its user and column', async () => {
    const { session } = await t.signup();
    const enroll = await t.request({ method: 'POST', url: '/api/v1/auth/totp/enroll', as: session });
    const { secret } = enroll.json();
    type Seeds = { totp_secret: string | null; totp_pending_secret: string | null; totp_secret_ct: Uint8Array | null; totp_pending_secret_ct: Uint8Array | null };
    const seeds = async () => (await t.admin.query<Seeds>('select totp_secret, totp_pending_secret, totp_secret_ct, totp_pending_secret_ct from users where id = $1', [session.userId]))[0]!;
    const pending = await seeds();
    expect(pending.totp_pending_secret).toBeNull();
    expect(Buffer.from(pending.totp_pending_secret_ct!).includes(Buffer.from(secret))).toBe(false);
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/totp/activate', as: session, body: { code: codeAt(secret, 0) } })).statusCode).toBe(200);
    const active = await seeds();
    expect(active).toMatchObject({ totp_secret: null, totp_pending_secret: null, totp_pending_secret_ct: null });
    expect(Buffer.from(active.totp_secret_ct!).includes(Buffer.from(secret))).toBe(false);
    // Another user's ciphertext copied over this one's does not open (bound to the user).
    const other = await enrolled();
    await t.admin.query('update users set totp_secret_ct = (select totp_secret_ct from users where id = $1) where id = $2', [other.session.userId, session.userId]);
    const refused = await finish(await startLogin(session.email), codeAt(other.secret, 0));
    // A tampered database is an integrity failure (500), never a login.
    expect(refused.statusCode).toBe(500);
    expect(refused.headers['set-cookie']).toBeUndefined();
  });

  it('a seed stored in the clear before encryption keeps working and is encrypted by the backfill', async () => {
    const { session, secret } = await enrolled();
    // As it was before migration 21: the seed in the clear.
    // (And the replay guard reset, so that this test can use two more codes of the current window.)
    await t.admin.query('update users set totp_secret_ct = null, totp_secret = $1, totp_last_step = null where id = $2', [secret, session.userId]);
    expect((await finish(await startLogin(session.email), codeAt(secret, -1))).statusCode).toBe(200);
    expect(await encryptLegacyTotpSecrets(t.db, createKeyring(t.config, { warn() {} }))).toBeGreaterThanOrEqual(1);
    const [row] = await t.admin.query<{ totp_secret: string | null; totp_secret_ct: Uint8Array | null }>('select totp_secret, totp_secret_ct from users where id = $1', [session.userId]);
    expect(row!.totp_secret).toBeNull();
    expect(row!.totp_secret_ct).not.toBeNull();
    expect((await finish(await startLogin(session.email), codeAt(secret, 1))).statusCode).toBe(200);
  });

  it('a password alone gives no session; the right code does, and works for the API', async () => {
    const { session, secret } = await enrolled();
    const challenge = await startLogin(session.email);
    expect((await finish(challenge, '123456')).statusCode).toBe(401);
    const ok = await finish(challenge, codeAt(secret, 1));
    expect(ok.statusCode).toBe(200);
    const cookie = cookieFrom(ok);
    expect((await t.request({ method: 'GET', url: '/api/v1/auth/session', headers: { cookie } })).statusCode).toBe(200);
    // The challenge is single-use.
    expect((await finish(challenge, codeAt(secret, 1))).statusCode).toBe(401);
  });

  it('a TOTP code is accepted at most once, and never an older one', async () => {
    const { session, secret } = await enrolled();
    const code = codeAt(secret, 1);
    expect((await finish(await startLogin(session.email), code)).statusCode).toBe(200);
    const replay = await finish(await startLogin(session.email), code);
    expect(replay.statusCode).toBe(401);
    expect(replay.json().code).toBe('auth.mfa_invalid');
    expect((await finish(await startLogin(session.email), codeAt(secret, -1))).statusCode).toBe(401);
  });

  it('a recovery code works once', async () => {
    const { session, recoveryCodes } = await enrolled();
    const code = recoveryCodes[3]!;
    expect((await finish(await startLogin(session.email), code.toLowerCase())).statusCode).toBe(200);
    expect((await finish(await startLogin(session.email), code)).statusCode).toBe(401);
  });

  it('guessing the second factor is throttled like passwords: after 10 failures even the right code gets 429', async () => {
    const { session, secret, tenantId } = await enrolled();
    const challenge = await startLogin(session.email);
    for (let i = 0; i < 10; i++) expect((await finish(challenge, String(100000 + i))).statusCode).toBe(401);
    const locked = await finish(challenge, codeAt(secret, 1));
    expect(locked.statusCode).toBe(429);
    expect(Number(locked.headers['retry-after'])).toBeGreaterThan(0);
    const actions = await t.admin.query<{ action: string }>(`select action from audit_events where tenant_id = $1 and action in ('auth.mfa.failed', 'auth.lockout')`, [tenantId]);
    expect(actions.filter((a) => a.action === 'auth.mfa.failed')).toHaveLength(10);
    expect(actions.filter((a) => a.action === 'auth.lockout')).toHaveLength(1);
  });

  it('an expired or made-up challenge is refused', async () => {
    const { session, secret } = await enrolled();
    const challenge = await startLogin(session.email);
    await t.admin.query(`update mfa_challenges set expires_at = now() - interval '1 second' where user_id = $1`, [session.userId]);
    expect((await finish(challenge, codeAt(secret, 1))).statusCode).toBe(401);
    expect((await finish('x'.repeat(43), codeAt(secret, 1))).statusCode).toBe(401);
  });

  it('turning MFA off or replacing recovery codes needs the current password; old codes die with the new set', async () => {
    const { session, recoveryCodes, tenantId } = await enrolled();
    const wrong = await t.request({ method: 'POST', url: '/api/v1/auth/totp/recovery-codes', as: session, body: { password: 'not my password!' } });
    expect(wrong.statusCode).toBe(401);
    const fresh = await t.request({ method: 'POST', url: '/api/v1/auth/totp/recovery-codes', as: session, body: { password: PASSWORD } });
    expect(fresh.statusCode).toBe(200);
    expect(fresh.json().recoveryCodes).toHaveLength(10);
    expect((await finish(await startLogin(session.email), recoveryCodes[0]!)).statusCode).toBe(401);
    expect((await finish(await startLogin(session.email), fresh.json().recoveryCodes[0])).statusCode).toBe(200);
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/totp/disable', as: session, body: { password: 'not my password!' } })).statusCode).toBe(401);
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/totp/disable', as: session, body: { password: PASSWORD } })).statusCode).toBe(204);
    const login = await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: session.email, password: PASSWORD } });
    expect(login.json().status).toBe('ok');
    const actions = await t.admin.query<{ action: string }>(`select action from audit_events where tenant_id = $1 and action in ('auth.reauth.failed', 'auth.mfa.disabled', 'auth.mfa.recovery_codes_replaced')`, [tenantId]);
    expect(actions.map((a) => a.action).sort()).toEqual(['auth.mfa.disabled', 'auth.mfa.recovery_codes_replaced', 'auth.reauth.failed', 'auth.reauth.failed']);
  });
});
