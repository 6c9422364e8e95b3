import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { DEFAULT_ALERT_THRESHOLDS } from '../../kernel/config/config.ts';
import { totpFor } from '../identity/mfa.ts';
import { readOutbox } from '../../../test/support/outbox.ts';
import { createMailer } from '../../kernel/mail/mailer.ts';
import { AlertStatusError, evaluateAlerts, listAllAlerts, setPlatformAlertStatus, startAlertLoop, type NewPlatformAlert } from './alerts.ts';

const { denialBurst: DENIAL_BURST, exportBurst: EXPORT_BURST, sprayAccounts: SPRAY_ACCOUNTS } = DEFAULT_ALERT_THRESHOLDS;
import { createAlertNotifier } from './notify.ts';

// Threats the rules watch for: password guessing, probing with denied requests, a quiet
// grant of admin power, a weakened second factor, an admin account used from a new place.
describe('anomaly rules and security alerts', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ env: { LOGIN_IP_MAX_FAILURES: '1000' } });
  });
  afterAll(async () => t?.close());

  const alertsOf = async (tenantId: string) =>
    t.admin.query<{ rule: string; severity: string; subject: string; status: string; evidence: string[] }>('select rule, severity, subject, status, evidence from security_alerts where tenant_id = $1 order by at', [tenantId]);
  const browser = { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0' };

  it('normal use raises no alert', async () => {
    const { session: owner, tenantId } = await t.signup();
    const accounts = `/api/v1/tenants/${tenantId}/accounts`;
    for (let i = 0; i < 5; i++) {
      const account = await t.request({ method: 'POST', url: accounts, as: owner, body: { name: `Customer ${i}` } });
      await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/contacts`, as: owner, body: { accountId: account.json().id, name: `Contact ${i}` } });
      await t.request({ method: 'GET', url: accounts, as: owner });
    }
    const member = await t.addMember(owner, tenantId, 'member');
    await t.request({ method: 'GET', url: accounts, as: member });
    await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/api-keys`, as: owner, body: { name: 'Sync job', role: 'member' } });
    await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/settings`, as: owner, body: { sessionIdleMinutes: 20 } });
    for (let i = 0; i < 3; i++) await t.login(owner.email); // the same address and browser as before
    await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: owner.email, password: 'one typo in the password' } });
    await t.login(owner.email);
    await evaluateAlerts(t.db);
    expect(await alertsOf(tenantId)).toEqual([]);
  });

  it('password guessing on a member: the lockout raises a high alert', async () => {
    const { session: owner, tenantId } = await t.signup();
    const member = await t.addMember(owner, tenantId, 'member');
    for (let i = 0; i < 11; i++) await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: member.email, password: `guess number ${i} wrong` } });
    await evaluateAlerts(t.db);
    expect(await alertsOf(tenantId)).toEqual([expect.objectContaining({ rule: 'brute_force', severity: 'high', subject: `user:${member.userId}`, status: 'open' })]);
  });

  it(`failed logins for ${SPRAY_ACCOUNTS} different members from one address raise a password-spraying alert; fewer do not`, async () => {
    const { session: owner, tenantId } = await t.signup();
    const members = [];
    for (let i = 0; i < SPRAY_ACCOUNTS; i++) members.push(await t.addMember(owner, tenantId, 'member'));
    const fail = (email: string) => t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email, password: 'Spring2026! is not it' } });
    for (const member of members.slice(0, SPRAY_ACCOUNTS - 1)) await fail(member.email);
    await evaluateAlerts(t.db);
    expect(await alertsOf(tenantId)).toEqual([]);
    await fail(members.at(-1)!.email);
    await evaluateAlerts(t.db);
    expect(await alertsOf(tenantId)).toEqual([expect.objectContaining({ rule: 'password_spraying', severity: 'high', subject: 'ip:127.0.0.1' })]);
  });

  it(`${DENIAL_BURST} denied requests by one member in minutes raise one alert, with the denials as evidence`, async () => {
    const { session: owner, tenantId } = await t.signup();
    const viewer = await t.addMember(owner, tenantId, 'viewer');
    for (let i = 0; i < DENIAL_BURST * 2; i++) await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/members`, as: viewer });
    await evaluateAlerts(t.db);
    const alerts = await alertsOf(tenantId);
    expect(alerts).toHaveLength(1);
    expect(alerts[0]).toMatchObject({ rule: 'access_denied_burst', severity: 'high', subject: `user:${viewer.userId}` });
    expect(alerts[0]!.evidence.length).toBe(DENIAL_BURST + 1);
  });

  it(`${EXPORT_BURST} exports of the audit log within an hour by one person raise an alert; one does not`, async () => {
    const { session: owner, tenantId } = await t.signup();
    const exportLog = () => t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/audit-events/export?format=jsonl`, as: owner });
    expect((await exportLog()).statusCode).toBe(200);
    await evaluateAlerts(t.db);
    expect(await alertsOf(tenantId)).toEqual([]);
    for (let i = 1; i < EXPORT_BURST; i++) await exportLog();
    await evaluateAlerts(t.db);
    expect(await alertsOf(tenantId)).toEqual([expect.objectContaining({ rule: 'export_burst', subject: `user:${owner.userId}` })]);
  });

  it('granting admin, an admin API key and turning MFA off each raise an alert', async () => {
    const { session: owner, tenantId } = await t.signup();
    const admin = await t.addMember(owner, tenantId, 'admin');
    const member = await t.addMember(owner, tenantId, 'member');
    await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/members/${member.userId}`, as: owner, body: { role: 'admin' } });
    await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/api-keys`, as: owner, body: { name: 'Powerful', role: 'admin' } });
    const { secret } = (await t.request({ method: 'POST', url: '/api/v1/auth/totp/enroll', as: owner })).json<{ secret: string }>();
    await t.request({ method: 'POST', url: '/api/v1/auth/totp/activate', as: owner, body: { code: totpFor(secret, 'x').generate() } });
    await t.request({ method: 'POST', url: '/api/v1/auth/totp/disable', as: owner, body: { password: PASSWORD } });
    await evaluateAlerts(t.db);
    const rules = (await alertsOf(tenantId)).map((a) => `${a.rule} ${a.subject.split(':')[0]}`);
    expect(rules).toEqual(expect.arrayContaining(['privileged_grant user', 'privileged_api_key apikey', 'mfa_disabled user']));
    const grants = (await alertsOf(tenantId)).filter((a) => a.rule === 'privileged_grant').map((a) => a.subject);
    expect(grants.sort()).toEqual([`user:${admin.userId}`, `user:${member.userId}`].sort());
  });

  it("an owner's login from a new address and browser raises a low alert; the same place again does not", async () => {
    const { session: owner, tenantId } = await t.signup();
    await t.login(owner.email);
    const away = async () => {
      const response = await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: owner.email, password: PASSWORD }, remoteAddress: '203.0.113.50', headers: browser });
      expect(response.statusCode).toBe(200);
    };
    await away();
    await evaluateAlerts(t.db);
    await away();
    await evaluateAlerts(t.db);
    const alerts = await alertsOf(tenantId);
    expect(alerts.map((a) => a.rule)).toEqual(['privileged_login_new_device']);
    expect(alerts[0]!.evidence).toHaveLength(1);
  });

  it('admins list alerts and acknowledge or resolve them, audited; members cannot', async () => {
    const { session: owner, tenantId } = await t.signup();
    const member: SessionHandle = await t.addMember(owner, tenantId, 'member');
    await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/api-keys`, as: owner, body: { name: 'Admin key', role: 'admin' } });
    await evaluateAlerts(t.db);
    const url = `/api/v1/tenants/${tenantId}/security-alerts`;
    const list = await t.request({ method: 'GET', url, as: owner });
    expect(list.statusCode).toBe(200);
    const [alert] = list.json<{ items: { id: string; rule: string; status: string; evidence: string[] }[] }>().items;
    expect(alert).toMatchObject({ rule: 'privileged_api_key', status: 'open' });
    expect((await t.request({ method: 'GET', url, as: member })).statusCode).toBe(403);
    expect((await t.request({ method: 'PATCH', url: `${url}/${alert!.id}`, as: member, body: { status: 'resolved' } })).statusCode).toBe(403);
    expect((await t.request({ method: 'PATCH', url: `${url}/${alert!.id}`, as: owner, body: { status: 'acknowledged' } })).json().status).toBe('acknowledged');
    expect((await t.request({ method: 'PATCH', url: `${url}/${alert!.id}`, as: owner, body: { status: 'resolved' } })).json().status).toBe('resolved');
    const again = await t.request({ method: 'PATCH', url: `${url}/${alert!.id}`, as: owner, body: { status: 'open' } });
    expect(again.statusCode).toBe(400);
    expect((await t.request({ method: 'PATCH', url: `${url}/${alert!.id}`, as: owner, body: { status: 'acknowledged' } })).statusCode).toBe(400);
    const events = await t.admin.query<{ action: string }>(`select action from audit_events where tenant_id = $1 and action like 'alert.%' order by position`, [tenantId]);
    expect(events.map((e) => e.action)).toEqual(['alert.acknowledged', 'alert.resolved']);
  });

  it('a new alert is delivered once: an operator log line and a mail to each admin and owner', async () => {
    const { session: owner, tenantId } = await t.signup();
    const admin = await t.addMember(owner, tenantId, 'admin');
    const viewer = await t.addMember(owner, tenantId, 'viewer');
    await evaluateAlerts(t.db); // the admin's joining is an alert of its own; deliver only what follows
    const lines: object[] = [];
    const log = { info: (o: object) => lines.push(o), warn: (o: object) => lines.push(o), error: (o: object) => lines.push(o) };
    const mailer = createMailer(t.config);
    const notify = createAlertNotifier({ db: t.db, mailer, log, appUrl: t.config.appUrl });
    for (let i = 0; i < DENIAL_BURST; i++) await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/members`, as: viewer });
    await evaluateAlerts(t.db, notify);
    for (let i = 0; i < 5; i++) await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/members`, as: viewer });
    await evaluateAlerts(t.db, notify); // joins the open alert: nothing new to deliver
    mailer.close();
    const raised = lines.filter((l) => 'securityAlert' in l) as { securityAlert: { rule: string; tenantId: string } }[];
    expect(raised.map((l) => l.securityAlert)).toEqual([expect.objectContaining({ rule: 'access_denied_burst', tenantId })]);
    const mails = readOutbox(t.config.dataDir).filter((m) => m.subject.includes('access denied burst'));
    expect(mails.map((m) => m.to).sort()).toEqual([owner.email, admin.email].sort());
  });
});

describe('platform alerts (operators)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ env: { LOGIN_STUFFING_ACCOUNTS: '3' } });
  });
  afterAll(async () => t?.close());

  it('credential stuffing across accounts and probing of other tenants raise platform alerts, told to the operators and listed with every tenant alert', async () => {
    for (let i = 0; i < 3; i++) await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: `stuffed-${i}@elsewhere.example`, password: 'leaked password 123' } });
    const { session: prober } = await t.signup();
    const { tenantId: victim } = await t.signup();
    for (let i = 0; i < DENIAL_BURST; i++) await t.request({ method: 'GET', url: `/api/v1/tenants/${victim}/accounts`, as: prober });
    const told: NewPlatformAlert[] = [];
    await evaluateAlerts(t.db, undefined, (alert) => told.push(alert));
    expect(told.map((a) => `${a.rule} ${a.subject}`).sort()).toEqual(['credential_stuffing ip:127.0.0.1', `cross_tenant_probing user:${prober.userId}`]);
    // The victim tenant learns nothing of the prober (a non-member's denials stay in the platform log).
    expect(await t.admin.query('select 1 from security_alerts where tenant_id = $1', [victim])).toEqual([]);
    const listed = await listAllAlerts(t.db, { status: 'open' });
    expect(listed.filter((a) => a.scope === 'platform').map((a) => a.rule).sort()).toEqual(['credential_stuffing', 'cross_tenant_probing']);
    // A second pass raises nothing new.
    await evaluateAlerts(t.db, undefined, (alert) => told.push(alert));
    expect(told).toHaveLength(2);
  });

  it('operators acknowledge and resolve platform alerts, each change in the platform log with before and after; a resolved alert stays resolved', async () => {
    const [alert] = (await listAllAlerts(t.db, { status: 'open' })).filter((a) => a.scope === 'platform');
    expect(alert).toBeDefined();
    const operator = { type: 'system' as const, id: null };
    expect(await setPlatformAlertStatus(t.db, alert!.id, 'acknowledged', operator, { via: 'cli' })).toEqual({ id: alert!.id, rule: alert!.rule, before: 'open', status: 'acknowledged' });
    await setPlatformAlertStatus(t.db, alert!.id, 'resolved', operator);
    await expect(setPlatformAlertStatus(t.db, alert!.id, 'acknowledged', operator)).rejects.toThrow(AlertStatusError);
    await expect(setPlatformAlertStatus(t.db, '00000000-0000-4000-8000-000000000000', 'resolved', operator)).rejects.toThrow(/no platform alert/);
    expect((await listAllAlerts(t.db)).find((a) => a.id === alert!.id)?.status).toBe('resolved');
    const events = await t.admin.query<{ action: string; target_id: string; metadata: Record<string, unknown> }>(
      `select action, target_id, metadata from platform_audit_events where action like 'alert.%' and target_id = $1 order by position`,
      [alert!.id],
    );
    expect(events).toEqual([
      { action: 'alert.acknowledged', target_id: alert!.id, metadata: { via: 'cli', rule: alert!.rule, before: 'open', after: 'acknowledged' } },
      { action: 'alert.resolved', target_id: alert!.id, metadata: { rule: alert!.rule, before: 'acknowledged', after: 'resolved' } },
    ]);
  });
});

describe('thresholds from settings, large reads, the operator stream and the alert loop', () => {
  let t: TestApp;
  let dir: string;
  let streamFile: string;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'cn-alert-stream-'));
    streamFile = path.join(dir, 'audit.jsonl');
    t = await startTestApp({ env: { ALERT_DENIAL_BURST: '3', ALERT_LARGE_READ_RECORDS: '25', ALERT_EXPORT_BURST: '2', AUDIT_STREAM: streamFile } });
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const alertsOf = async (tenantId: string) => t.admin.query<{ id: string; rule: string; subject: string; details: Record<string, unknown> }>('select id, rule, subject, details from security_alerts where tenant_id = $1 order by at', [tenantId]);
  const bulkReads = async (tenantId: string) =>
    t.admin.query<{ actor_id: string; metadata: { records: number; windowMinutes: number; routes: string[] } }>(`select actor_id, canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'access.bulk_read' order by position`, [tenantId]);
  const evaluate = () => evaluateAlerts(t.db, undefined, undefined, t.config.alerts);

  it('ALERT_DENIAL_BURST sets the denial threshold: the alert comes at that count, where the default would wait', async () => {
    expect(t.config.alerts.denialBurst).toBe(3);
    const { session: owner, tenantId } = await t.signup();
    const viewer = await t.addMember(owner, tenantId, 'viewer');
    const deny = () => t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/members`, as: viewer });
    for (let i = 0; i < 2; i++) await deny();
    await evaluate();
    expect(await alertsOf(tenantId)).toEqual([]);
    await deny();
    await evaluate();
    expect(await alertsOf(tenantId)).toEqual([expect.objectContaining({ rule: 'access_denied_burst', subject: `user:${viewer.userId}`, details: { denials: 3, windowMinutes: DEFAULT_ALERT_THRESHOLDS.denialWindowMinutes } })]);
  });

  it('reading more records than ALERT_LARGE_READ_RECORDS within the window is audited once as access.bulk_read and raises large_read; reading less does not', async () => {
    const { session: owner, tenantId } = await t.signup();
    const member = await t.addMember(owner, tenantId, 'member');
    for (let i = 0; i < 10; i++) await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: `Customer ${i}` } });
    const list = async () => {
      const response = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts?limit=10`, as: member });
      expect(response.json<{ items: unknown[] }>().items).toHaveLength(10);
    };
    await list();
    await list();
    await evaluate();
    expect(await bulkReads(tenantId)).toEqual([]);
    expect(await alertsOf(tenantId)).toEqual([]);
    await list(); // 30 records: past 25
    await list(); // the same window: not reported again
    expect(await bulkReads(tenantId)).toEqual([{ actor_id: member.userId, metadata: { records: 30, windowMinutes: 15, routes: ['GET /api/v1/tenants/:tenantId/accounts'] } }]);
    await evaluate();
    expect(await alertsOf(tenantId)).toEqual([expect.objectContaining({ rule: 'large_read', subject: `user:${member.userId}`, details: { records: 30, windowMinutes: 15, routes: ['GET /api/v1/tenants/:tenantId/accounts'] } })]);
  });

  it('an export counts every record it streams, and exports of records and of the audit log both count toward export_burst', async () => {
    const { session: owner, tenantId } = await t.signup();
    for (let i = 0; i < 30; i++) await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: `Exported ${i}` } });
    const records = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/export`, as: owner });
    expect(records.statusCode).toBe(200);
    expect(records.body.trim().split('\n')).toHaveLength(31); // a header line, then the accounts
    expect(await bulkReads(tenantId)).toEqual([{ actor_id: owner.userId, metadata: { records: 30, windowMinutes: 15, routes: ['GET /api/v1/tenants/:tenantId/export'] } }]);
    await evaluate();
    expect((await alertsOf(tenantId)).map((a) => a.rule)).toEqual(['large_read']);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/audit-events/export?format=jsonl`, as: owner })).statusCode).toBe(200);
    await evaluate();
    expect((await alertsOf(tenantId)).map((a) => a.rule)).toEqual(['large_read', 'export_burst']);
  });

  it('a new alert is written to the operator stream (AUDIT_STREAM) as one JSON line', async () => {
    const { session: owner, tenantId } = await t.signup();
    await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/api-keys`, as: owner, body: { name: 'Admin key', role: 'admin' } });
    await evaluate();
    const [alert] = await alertsOf(tenantId);
    expect(alert).toMatchObject({ rule: 'privileged_api_key' });
    const lineOf = () =>
      readFileSync(streamFile, 'utf8')
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .filter((line) => line.stream === 'alert' && line.id === alert!.id);
    await expect.poll(lineOf, { timeout: 5000 }).toHaveLength(1);
    expect(lineOf()[0]).toMatchObject({ scope: 'tenant', tenantId, rule: 'privileged_api_key', severity: 'medium', status: 'open', subject: alert!.subject });
  });

  it('the alert loop runs the rules on its own: a tenant alert appears and a platform alert is logged, within seconds', async () => {
    const warnings: object[] = [];
    const log = { error: (o: object) => warnings.push(o), warn: (o: object) => warnings.push(o) };
    const stop = startAlertLoop(t.db, log, undefined, t.config.alerts, 100);
    try {
      const { session: owner, tenantId } = await t.signup();
      await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/api-keys`, as: owner, body: { name: 'Admin key', role: 'admin' } });
      const { session: prober } = await t.signup();
      for (let i = 0; i < 3; i++) await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: prober });
      await expect.poll(async () => (await alertsOf(tenantId)).map((a) => a.rule), { timeout: 10_000 }).toEqual(['privileged_api_key']);
      await expect
        .poll(() => warnings.filter((w) => 'platformSecurityAlert' in w).map((w) => (w as { platformSecurityAlert: { rule: string; subject: string } }).platformSecurityAlert), { timeout: 10_000 })
        .toEqual([expect.objectContaining({ rule: 'cross_tenant_probing', subject: `user:${prober.userId}` })]);
      expect(warnings.filter((w) => 'err' in w)).toEqual([]);
    } finally {
      stop();
    }
  });
});
