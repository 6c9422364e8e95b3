import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { startDnsServer, type DnsServer } from '../../../test/support/dns-server.ts';
import { createKeyring } from '../../kernel/crypto/envelope.ts';
import { createEgressGuard } from '../../kernel/net/egress.ts';
import { enqueueDeliveries, MAX_ATTEMPTS, remindStaleCredentials, sendDueDeliveries } from './delivery.ts';
import { readOutbox } from '../../../test/support/outbox.ts';
import { createMailer } from '../../kernel/mail/mailer.ts';
import { createAlertNotifier, evaluateAlerts } from '../monitoring/index.ts';

interface Received {
  readonly path: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
}

async function receiver(host: string): Promise<{ server: Server; port: number; received: Received[] }> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    req.on('end', () => {
      received.push({ path: req.url ?? '', headers: req.headers, body });
      if (req.url?.startsWith('/fail')) res.writeHead(500).end('no');
      else if (req.url?.startsWith('/redirect')) res.writeHead(302, { location: `http://${host}:${(server.address() as AddressInfo).port}/ok` }).end();
      else res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return { server, port: (server.address() as AddressInfo).port, received };
}

/** Verifies a delivery's signature the way a receiver should (constant-time compare). */
function signatureValid(secret: string, header: string, body: string): boolean {
  const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  if (!match) return false;
  const expected = createHmac('sha256', secret).update(`${match[1]}.${body}`).digest();
  return timingSafeEqual(expected, Buffer.from(match[2]!, 'hex')) && Math.abs(Date.now() / 1000 - Number(match[1])) < 300;
}

// Threats: a tenant admin points a webhook into our own network (SSRF: loopback, private
// ranges, cloud metadata, through decimal or mapped spellings, DNS names, rebinding or
// redirects); a third-party credential leaks back out of the API or sits in the database in
// clear; a receiver cannot tell our deliveries from forgeries; one tenant's events reach
// another tenant's receiver.
describe('integrations and webhooks', () => {
  let t: TestApp;
  let dns: DnsServer;
  let owner: SessionHandle;
  let tenantId: string;
  let hooks: Awaited<ReturnType<typeof receiver>>;
  let inner: Awaited<ReturnType<typeof receiver>>;
  const base = () => `/api/v1/tenants/${tenantId}`;
  const keyring = () => createKeyring(t.config, { warn() {} });
  const egress = () => createEgressGuard({ allowNetworks: [['127.0.0.1', 32, 'ipv4']], dnsServers: [dns.address] });
  const deliver = async () => {
    await enqueueDeliveries(t.db);
    const guard = egress();
    try {
      return await sendDueDeliveries(t.db, keyring(), guard, 100);
    } finally {
      await guard.close();
    }
  };

  beforeAll(async () => {
    hooks = await receiver('127.0.0.1');
    inner = await receiver('127.0.0.2');
    dns = await startDnsServer();
    dns.setAddresses('hooks.customer.example', ['127.0.0.1']);
    dns.setAddresses('internal.customer.example', ['10.0.0.5']);
    dns.setAddresses('metadata.customer.example', ['169.254.169.254']);
    dns.setAddresses('mixed.customer.example', ['93.184.216.34', '127.0.0.2']);
    t = await startTestApp({ env: { DNS_SERVERS: dns.address, EGRESS_ALLOW_CIDRS: '127.0.0.1/32' } });
    ({ session: owner, tenantId } = await t.signup());
  });
  afterAll(async () => {
    await t?.close();
    await dns?.stop();
    for (const r of [hooks, inner]) await new Promise<void>((resolve) => r?.server.close(() => resolve()));
  });

  it("keeps an integration's credential encrypted and unreturned (a last-4 hint only), rotatable, audited, with a reminder when it gets old", async () => {
    const credential = 'sk_live_abcdefghijklmnopWXYZ';
    const created = await t.request({ method: 'POST', url: `${base()}/integrations`, as: owner, body: { name: 'CRM sync', provider: 'acme-crm', credential } });
    expect(created.statusCode).toBe(201);
    expect(created.json()).toMatchObject({ name: 'CRM sync', provider: 'acme-crm', credentialHint: 'WXYZ', rotationDue: false });
    expect(created.body).not.toContain('abcdefghijklmnop');
    const { id } = created.json<{ id: string }>();
    const [stored] = await t.admin.query<{ credential: Buffer }>(`select credential from integrations where tenant_id = $1 and id = $2`, [tenantId, id]);
    expect(Buffer.from(stored!.credential).includes(Buffer.from('abcdefghijklmnop'))).toBe(false);
    const listed = await t.request({ method: 'GET', url: `${base()}/integrations`, as: owner });
    expect(listed.body).not.toContain('abcdefghijklmnop');

    const rotated = await t.request({ method: 'PUT', url: `${base()}/integrations/${id}/credential`, as: owner, body: { credential: 'sk_live_new_secret_1234' } });
    expect(rotated.json()).toMatchObject({ credentialHint: '1234', rotationDue: false });
    await t.admin.query(`update integrations set credential_rotated_at = now() - interval '200 days' where id = $1`, [id]);
    expect((await t.request({ method: 'GET', url: `${base()}/integrations`, as: owner })).json().items[0]).toMatchObject({ rotationDue: true });
    expect(await remindStaleCredentials(t.db, 90)).toBeGreaterThanOrEqual(1);
    // The reminder is an event the alert rules raise, and the notifier mails to the admins.
    const mailer = createMailer(t.config);
    await evaluateAlerts(t.db, createAlertNotifier({ db: t.db, mailer, log: { info() {}, warn() {}, error() {} }, appUrl: t.config.appUrl }));
    mailer.close();
    expect(await remindStaleCredentials(t.db, 90)).toBe(0); // one open reminder per integration
    const alerts = (await t.request({ method: 'GET', url: `${base()}/security-alerts`, as: owner })).json<{ items: { rule: string; subject: string }[] }>();
    expect(alerts.items).toContainEqual(expect.objectContaining({ rule: 'integration_credential_stale', subject: `integration:${id}` }));
    expect(readOutbox(t.config.dataDir).filter((m) => m.to === owner.email && m.subject.includes('integration credential stale'))).toHaveLength(1);

    for (const body of [{ name: 'x', provider: 'acme', credential: 'short' }, { name: 'x', provider: 'Bad Provider', credential: 'long enough secret' }, { name: 'x', provider: 'acme', credential: 'long enough secret', extra: 1 }]) {
      expect((await t.request({ method: 'POST', url: `${base()}/integrations`, as: owner, body })).statusCode).toBe(400);
    }
    const actions = await t.admin.query<{ action: string }>(`select action from audit_events where tenant_id = $1 and target_id = $2 order by position`, [tenantId, id]);
    expect(actions.map((a) => a.action)).toEqual(['integration.created', 'integration.credential_rotated', 'integration.credential_stale']);
    expect((await t.request({ method: 'DELETE', url: `${base()}/integrations/${id}`, as: owner })).statusCode).toBe(204);
    expect((await t.request({ method: 'DELETE', url: `${base()}/integrations/${id}`, as: owner })).statusCode).toBe(404);
  });

  it('refuses webhook URLs into our network, however they are spelled, with 422 and without a single request', async () => {
    const port = inner.port;
    const refused = [
      `ftp://hooks.customer.example/x`,
      `http://user:pass@hooks.customer.example:${hooks.port}/ok`,
      `http://127.0.0.2:${port}/`,
      `http://2130706434:${port}/`, // decimal 127.0.0.2
      `http://0x7f000002:${port}/`, // hex
      `http://0177.0.0.2:${port}/`, // octal
      `http://127.2:${port}/`, // short form
      `http://[::1]:${port}/`,
      `http://[::ffff:127.0.0.2]:${port}/`,
      `http://[::ffff:7f00:2]:${port}/`,
      `http://[64:ff9b::7f00:2]:${port}/`,
      `http://169.254.169.254/latest/meta-data/`,
      `http://[fd00:ec2::254]/latest/meta-data/`,
      `http://10.0.0.5/`,
      `http://internal.customer.example/`,
      `http://metadata.customer.example/`,
      `http://mixed.customer.example:${port}/`, // one public and one private answer: refused
      `http://does-not-exist.customer.example/`,
    ];
    for (const url of refused) {
      const response = await t.request({ method: 'POST', url: `${base()}/webhooks`, as: owner, body: { url, eventTypes: ['account.created'] } });
      expect(response.statusCode, url).toBe(422);
      expect(response.json().code, url).toBe('integration.url_not_allowed');
    }
    expect(inner.received).toEqual([]);
    expect(await t.admin.query(`select 1 from webhooks where tenant_id = $1`, [tenantId])).toEqual([]);
  });

  it('delivers only the chosen events of this tenant, signed with HMAC-SHA-256 over timestamp and body, and logs each delivery', async () => {
    const created = await t.request({ method: 'POST', url: `${base()}/webhooks`, as: owner, body: { url: `http://hooks.customer.example:${hooks.port}/ok`, eventTypes: ['account.created', 'member.*'] } });
    expect(created.statusCode).toBe(201);
    const { id, secret, url } = created.json<{ id: string; secret: string; url: string }>();
    expect(secret).toMatch(/^whsec_/);
    // The URL is shown as its origin and last characters only, also in the audit log; stored whole only encrypted.
    expect(url).toBe(`http://hooks.customer.example:${hooks.port}/…/ok`);
    const [createdEvent] = await t.admin.query<{ metadata: { url: string } }>(`select canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'webhook.created' and target_id = $2`, [tenantId, id]);
    expect(createdEvent!.metadata.url).toBe(url);
    const [row] = await t.admin.query<{ url_ct: Buffer }>(`select url_ct from webhooks where id = $1`, [id]);
    expect(Buffer.from(row!.url_ct).includes(Buffer.from('hooks.customer.example'))).toBe(false);
    expect((await t.request({ method: 'GET', url: `${base()}/webhooks`, as: owner })).body).not.toContain(secret);
    const [stored] = await t.admin.query<{ secret: Buffer }>(`select secret from webhooks where id = $1`, [id]);
    expect(Buffer.from(stored!.secret).includes(Buffer.from(secret))).toBe(false);

    const { session: otherOwner, tenantId: other } = await t.signup();
    await t.request({ method: 'POST', url: `/api/v1/tenants/${other}/accounts`, as: otherOwner, body: { name: 'Not yours' } });
    const account = (await t.request({ method: 'POST', url: `${base()}/accounts`, as: owner, body: { name: 'Hooked' } })).json<{ id: string }>();
    await t.request({ method: 'PATCH', url: `${base()}/accounts/${account.id}`, as: owner, body: { name: 'Not chosen' } });
    hooks.received.length = 0;
    await deliver();
    expect(hooks.received).toHaveLength(1);
    const [hit] = hooks.received;
    expect(hit!.headers['customernode-event']).toBe('account.created');
    expect(signatureValid(secret, String(hit!.headers['customernode-signature']), hit!.body)).toBe(true);
    expect(signatureValid(secret, String(hit!.headers['customernode-signature']), hit!.body.replace(account.id, tenantId))).toBe(false);
    const payload = JSON.parse(hit!.body) as { tenantId: string; event: { action: string; target: { id: string } } };
    expect(payload).toMatchObject({ tenantId, event: { action: 'account.created', target: { id: account.id } } });
    expect(hit!.body).not.toContain('Not yours');

    const log = (await t.request({ method: 'GET', url: `${base()}/webhooks/${id}/deliveries`, as: owner })).json<{ items: { status: string; attempts: number; lastStatus: number }[] }>();
    expect(log.items[0]).toMatchObject({ status: 'succeeded', attempts: 1, lastStatus: 200 });
    // Delivered once: another pass sends nothing again.
    await deliver();
    expect(hooks.received).toHaveLength(1);

    // A rotated secret signs from the next delivery on.
    const rotated = (await t.request({ method: 'POST', url: `${base()}/webhooks/${id}/rotate-secret`, as: owner })).json<{ secret: string }>();
    await t.request({ method: 'POST', url: `${base()}/accounts`, as: owner, body: { name: 'After rotation' } });
    await deliver();
    const last = hooks.received.at(-1)!;
    expect(signatureValid(rotated.secret, String(last.headers['customernode-signature']), last.body)).toBe(true);
    expect(signatureValid(secret, String(last.headers['customernode-signature']), last.body)).toBe(false);
    await t.request({ method: 'DELETE', url: `${base()}/webhooks/${id}`, as: owner });
  });

  it('retries a failing receiver with backoff until it gives up, never follows a redirect, and re-checks the address on every connection (DNS rebinding)', async () => {
    dns.setAddresses('rebind.customer.example', ['93.184.216.34']);
    const urls = { fail: `http://hooks.customer.example:${hooks.port}/fail`, redirect: `http://hooks.customer.example:${hooks.port}/redirect`, rebind: `http://rebind.customer.example:${inner.port}/` };
    const ids: Record<string, string> = {};
    for (const [name, url] of Object.entries(urls)) {
      const response = await t.request({ method: 'POST', url: `${base()}/webhooks`, as: owner, body: { url, eventTypes: ['account.created'] } });
      expect(response.statusCode, name).toBe(201);
      ids[name] = response.json<{ id: string }>().id;
    }
    // After the check passed, the name now answers with a loopback address where a server listens.
    dns.setAddresses('rebind.customer.example', ['127.0.0.2']);
    await t.request({ method: 'POST', url: `${base()}/accounts`, as: owner, body: { name: 'Retry me' } });
    hooks.received.length = 0;
    await deliver();
    const logOf = async (name: string) =>
      (await t.request({ method: 'GET', url: `${base()}/webhooks/${ids[name]}/deliveries`, as: owner })).json<{ items: { status: string; attempts: number; lastError: string | null; lastStatus: number | null; nextAttemptAt: string | null }[] }>().items[0]!;
    const first = await logOf('fail');
    expect(first).toMatchObject({ status: 'pending', attempts: 1, lastStatus: 500, lastError: 'HTTP 500' });
    expect(new Date(first.nextAttemptAt!).getTime()).toBeGreaterThan(Date.now() + 20_000);
    expect(await logOf('redirect')).toMatchObject({ lastStatus: 302, lastError: 'redirect not followed' });
    expect(hooks.received.filter((r) => r.path === '/ok')).toEqual([]);
    expect((await logOf('rebind')).lastError).toMatch(/^refused: rebind\.customer\.example resolves to a non-public address/);
    expect(inner.received).toEqual([]);
    for (let attempt = 2; attempt <= MAX_ATTEMPTS; attempt++) {
      await t.admin.query(`update webhook_deliveries set next_attempt_at = now() where status = 'pending' and tenant_id = $1`, [tenantId]);
      await deliver();
    }
    expect(await logOf('fail')).toMatchObject({ status: 'failed', attempts: MAX_ATTEMPTS, nextAttemptAt: null });
    expect(hooks.received.filter((r) => r.path === '/fail')).toHaveLength(MAX_ATTEMPTS);
    expect(inner.received).toEqual([]);
  });

  it('never connects to cloud metadata, even when the operator allows the surrounding private range', async () => {
    const guard = createEgressGuard({ allowNetworks: [['169.254.0.0', 16, 'ipv4'], ['10.0.0.0', 8, 'ipv4']], dnsServers: [dns.address] });
    try {
      await expect(guard.checkDestination('http://169.254.169.254/latest/meta-data/')).rejects.toThrow(/cloud metadata/);
      await expect(guard.checkDestination('http://metadata.customer.example/')).rejects.toThrow(/cloud metadata/);
      await expect(guard.checkDestination('http://internal.customer.example/')).resolves.toBeUndefined();
    } finally {
      await guard.close();
    }
  });
});
