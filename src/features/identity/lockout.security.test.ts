import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, startTestApp, type TestApp } from '../../../test/harness.ts';
import { createGate } from './throttle.ts';

// Threat: online password guessing — one account hammered (brute force, including by
// parallel requests racing the counter), or many accounts tried from one address
// (credential stuffing) — and a login flood starving every other request of CPU.
describe('login protection', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ env: { LOGIN_IP_MAX_FAILURES: '1000', LOGIN_STUFFING_ACCOUNTS: '5' } });
  });
  afterAll(async () => t?.close());

  let address = 0;
  const nextIp = () => `203.0.113.${++address}`;
  const login = (email: string, password: string, remoteAddress: string) =>
    t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email, password }, remoteAddress });

  it('locks an account after 10 failures: the right password then gets 429 with Retry-After, audited', async () => {
    const { session, tenantId } = await t.signup();
    const ip = nextIp();
    for (let i = 0; i < 10; i++) expect((await login(session.email, 'wrong password guess', ip)).statusCode).toBe(401);
    const locked = await login(session.email, PASSWORD, ip);
    expect(locked.statusCode).toBe(429);
    expect(locked.json().code).toBe('rate_limited');
    const retryAfter = Number(locked.headers['retry-after']);
    expect(retryAfter).toBeGreaterThan(800);
    expect(retryAfter).toBeLessThanOrEqual(900);
    const actions = await t.admin.query<{ action: string }>(`select action from audit_events where tenant_id = $1 and action like 'auth.%' order by position`, [tenantId]);
    expect(actions.filter((a) => a.action === 'auth.login.failed')).toHaveLength(11);
    expect(actions.filter((a) => a.action === 'auth.lockout')).toHaveLength(1);
  });

  it('50 parallel wrong guesses get at most 10 password checks', async () => {
    const { session } = await t.signup();
    const ip = nextIp();
    const responses = await Promise.all(Array.from({ length: 50 }, () => login(session.email, 'parallel wrong guess', ip)));
    const statuses = responses.map((r) => r.statusCode);
    expect(statuses.filter((s) => s === 401).length).toBeLessThanOrEqual(10);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(40);
    expect(statuses.every((s) => s === 401 || s === 429)).toBe(true);
    expect((await login(session.email, PASSWORD, ip)).statusCode).toBe(429);
  });

  it('an unknown email locks the same way, so a lock reveals nothing about which accounts exist', async () => {
    const ip = nextIp();
    const results: number[] = [];
    for (let i = 0; i < 11; i++) results.push((await login('nobody-here@example.com', 'wrong password guess', ip)).statusCode);
    expect(results).toEqual([...Array(10).fill(401), 429]);
  });

  it('a repeated lock without a success in between lasts twice as long', async () => {
    const { session } = await t.signup();
    const ip = nextIp();
    const expire = () => t.admin.query(`update auth_throttles set locked_until = now() - interval '1 second' where locked_until > now() and key like 'login:%'`);
    for (let i = 0; i < 10; i++) await login(session.email, 'wrong password guess', ip);
    await expire();
    for (let i = 0; i < 10; i++) expect((await login(session.email, 'wrong password guess', ip)).statusCode).toBe(401);
    const second = await login(session.email, PASSWORD, ip);
    expect(second.statusCode).toBe(429);
    expect(Number(second.headers['retry-after'])).toBeGreaterThan(1700);
  });

  it('after the lock expires the right password works and the unlock is audited', async () => {
    const { session, tenantId } = await t.signup();
    const ip = nextIp();
    for (let i = 0; i < 10; i++) await login(session.email, 'wrong password guess', ip);
    await t.admin.query(`update auth_throttles set locked_until = now() - interval '1 second' where locked_until > now() and key like 'login:%'`);
    expect((await login(session.email, PASSWORD, ip)).statusCode).toBe(200);
    const [unlock] = await t.admin.query(`select 1 from audit_events where tenant_id = $1 and action = 'auth.unlocked'`, [tenantId]);
    expect(unlock).toBeDefined();
  });

  it('one address failing against many accounts is stuffing: blocked and recorded for operators', async () => {
    const ip = nextIp();
    for (let i = 0; i < 5; i++) expect((await login(`stuffed-${i}@example.com`, 'leaked password 123', ip)).statusCode).toBe(401);
    const blocked = await login('stuffed-next@example.com', 'leaked password 123', ip);
    expect(blocked.statusCode).toBe(429);
    const events = await t.admin.query<{ metadata: { ip: string } }>(`select metadata from platform_audit_events where action = 'auth.credential_stuffing'`);
    expect(events.map((e) => e.metadata.ip)).toContain(ip);
    // Another address is unaffected.
    const { session } = await t.signup();
    expect((await login(session.email, PASSWORD, nextIp())).statusCode).toBe(200);
  });

  it('per-address throttling caps failures from one IP', async () => {
    const strict = await startTestApp({ env: { LOGIN_IP_MAX_FAILURES: '10', LOGIN_STUFFING_ACCOUNTS: '1000' } });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 11; i++) {
        statuses.push((await strict.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: `ip-${i % 2}@example.com`, password: 'wrong password guess' }, remoteAddress: '198.51.100.7' })).statusCode);
      }
      expect(statuses).toEqual([...Array(10).fill(401), 429]);
    } finally {
      await strict.close();
    }
  });
});

describe('argon2 gate', () => {
  it('runs at most `concurrency` jobs at once and refuses beyond the queue with 429', async () => {
    const gate = createGate(2, 3);
    let running = 0;
    let peak = 0;
    const job = () =>
      gate(async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((resolve) => setTimeout(resolve, 20));
        running--;
      });
    const results = await Promise.allSettled(Array.from({ length: 7 }, job));
    expect(peak).toBe(2);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(5);
    const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(rejected.reason.code).toBe('rate_limited');
  });
});
