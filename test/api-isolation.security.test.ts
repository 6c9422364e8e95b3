/**
 * Tenant isolation through the HTTP API, generated from the live route table: every
 * tenant route is called by another tenant's owner, anonymously and by a low-privilege
 * member, and tenant A's rows are compared before and after.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allRoutes } from '../src/app.ts';
import type { RouteDefinition } from '../src/kernel/http/routes.ts';
import { startTestApp, type Response, type SessionHandle, type TestApp } from './harness.ts';

/** A tenant id plus one real object id per item route, keyed `collection/:param`. */
interface Ids {
  readonly tenantId: string;
  readonly objects: Readonly<Record<string, string>>;
}

const routeKey = (route: RouteDefinition) => `${route.method} ${route.url}`;

/** A valid body for every tenant route that takes one, so a refusal is never a validation error. */
const SAMPLE_BODIES: Readonly<Record<string, (ids: Ids) => unknown>> = {
  'POST /api/v1/tenants/:tenantId/invitations': () => ({ email: 'intruder@example.com', role: 'owner' }),
  'POST /api/v1/tenants/:tenantId/api-keys': () => ({ name: 'Intruder key', role: 'owner' }),
  'PATCH /api/v1/tenants/:tenantId/settings': () => ({ sessionIdleMinutes: 5 }),
  'PATCH /api/v1/tenants/:tenantId/members/:userId': () => ({ role: 'owner' }),
  'POST /api/v1/tenants/:tenantId/accounts': () => ({ name: 'Intruder Inc' }),
  'PATCH /api/v1/tenants/:tenantId/accounts/:id': () => ({ name: 'Pwned', description: 'defaced' }),
  'POST /api/v1/tenants/:tenantId/contacts': (ids) => ({ accountId: ids.objects['accounts/:id'], name: 'Intruder' }),
  'PATCH /api/v1/tenants/:tenantId/contacts/:id': () => ({ name: 'Pwned', email: 'pwned@example.com' }),
  'PUT /api/v1/tenants/:tenantId/sso': () => ({ issuer: 'https://idp.intruder.example', clientId: 'intruder', clientSecret: 'intruder-secret', allowedDomains: ['intruder.example'] }),
  'POST /api/v1/tenants/:tenantId/domains': () => ({ domain: 'intruder.example' }),
  'PATCH /api/v1/tenants/:tenantId/security-alerts/:id': () => ({ status: 'resolved' }),
  'POST /api/v1/tenants/:tenantId/security-reports': () => ({ what: 'Intruder report' }),
  'POST /api/v1/tenants/:tenantId/deletion': () => ({ confirmName: 'Alpha' }),
  'POST /api/v1/tenants/:tenantId/integrations': () => ({ name: 'Intruder', provider: 'intruder', credential: 'intruder-credential' }),
  'PUT /api/v1/tenants/:tenantId/integrations/:integrationId/credential': () => ({ credential: 'intruder-credential' }),
  'POST /api/v1/tenants/:tenantId/webhooks': () => ({ url: 'https://93.184.216.34/intruder', eventTypes: ['*'] }),
  'PATCH /api/v1/tenants/:tenantId/webhooks/:webhookId': () => ({ url: 'https://93.184.216.34/intruder' }),
  'POST /api/v1/tenants/:tenantId/access-reviews': () => ({}),
  'POST /api/v1/tenants/:tenantId/scim-tokens': () => ({ name: 'Intruder' }),
  'PATCH /api/v1/tenants/:tenantId/scim-groups/:groupId': () => ({ role: 'admin' }),
  'PATCH /api/v1/tenants/:tenantId/access-reviews/:reviewId/entries/:entryId': () => ({ decision: 'revoke' }),
};

/** Required query strings, so the answer is the guard's and not validation's. */
const SAMPLE_QUERIES: Readonly<Record<string, string>> = { 'GET /api/v1/tenants/:tenantId/audit-events/export': 'format=jsonl' };

/** Fills :tenantId and every object param; a param without a known sample id fails the test. */
function pathFor(url: string, ids: Ids): string {
  return url.replace(/([^/]+)\/:(\w+)/g, (_whole, collection: string, param: string) => {
    const id = param === 'tenantId' ? ids.tenantId : ids.objects[`${collection}/:${param}`];
    if (id === undefined) throw new Error(`No sample id for ${collection}/:${param} in ${url}: add one to the fixture`);
    return `${collection}/${id}`;
  });
}

function bodyFor(route: RouteDefinition, ids: Ids): unknown {
  if (route.schema.body === undefined) return undefined;
  const sample = SAMPLE_BODIES[routeKey(route)];
  if (sample === undefined) throw new Error(`No sample body for ${routeKey(route)}: add one to SAMPLE_BODIES`);
  return sample(ids);
}

function expectProblem(response: Response, status: number, code: string, label: string): void {
  expect.soft(response.statusCode, `${label} -> ${response.body}`).toBe(status);
  expect.soft(String(response.headers['content-type']), label).toMatch(/^application\/problem\+json/);
  if (response.statusCode === status) expect.soft(response.json(), label).toMatchObject({ status, code });
}

describe('tenant isolation through the API', () => {
  // Threat: a member of tenant B (or nobody, or a mere viewer) reads or changes tenant A's data through the API.
  let t: TestApp;
  let tenantRoutes: RouteDefinition[];
  let ownerA: SessionHandle;
  let ownerB: SessionHandle;
  let viewerA: SessionHandle;
  let idsA: Ids;
  let idsB: Ids;
  /** Every id, name and email of A that must never appear in a response to an outsider. */
  let secretsA: string[];
  let snapshotBefore: Awaited<ReturnType<typeof snapshotA>>;

  async function snapshotA() {
    const rows = (table: string) => t.admin.query(`select * from ${table} where tenant_id = $1 order by 1, 2`, [idsA.tenantId]);
    return { accounts: await rows('accounts'), contacts: await rows('contacts'), memberships: await rows('memberships'), invitations: await rows('invitations') };
  }

  const send = (route: RouteDefinition, ids: Ids, as: SessionHandle | null, bodyIds: Ids = ids) => {
    const query = SAMPLE_QUERIES[routeKey(route)];
    return t.request({ method: route.method, url: `${pathFor(route.url, ids)}${query ? `?${query}` : ''}`, as, body: bodyFor(route, bodyIds) });
  };

  beforeAll(async () => {
    t = await startTestApp();
    tenantRoutes = allRoutes(t.config).filter((route) => route.access.kind === 'tenant');
    const a = await t.signup({ tenantName: 'Alpha Secret Tenant', name: 'Alpha Owner' });
    const b = await t.signup({ tenantName: 'Bravo Tenant', name: 'Bravo Owner' });
    ownerA = a.session;
    ownerB = b.session;
    const post = async (as: SessionHandle, tenantId: string, path: string, body: unknown) => {
      const response = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/${path}`, as, body });
      if (response.statusCode !== 201) throw new Error(`seeding ${path} failed: ${response.statusCode} ${response.body}`);
      return response.json<{ id: string }>().id;
    };
    const accountA1 = await post(ownerA, a.tenantId, 'accounts', { name: 'Alpha Account One', domain: 'alpha-one.example' });
    const accountA2 = await post(ownerA, a.tenantId, 'accounts', { name: 'Alpha Account Two' });
    const contactA1 = await post(ownerA, a.tenantId, 'contacts', { accountId: accountA1, name: 'Alpha Contact One', email: 'contact1@alpha.example' });
    const contactA2 = await post(ownerA, a.tenantId, 'contacts', { accountId: accountA2, name: 'Alpha Contact Two', phone: '+15551234567' });
    const invitationA = await post(ownerA, a.tenantId, 'invitations', { email: 'pending@alpha.example', role: 'member' });
    const keyA = await post(ownerA, a.tenantId, 'api-keys', { name: 'Alpha Key', role: 'member' });
    const keyB = await post(ownerB, b.tenantId, 'api-keys', { name: 'Bravo Key', role: 'member' });
    const domainA = await post(ownerA, a.tenantId, 'domains', { domain: 'alpha-owned.example' });
    const domainB = await post(ownerB, b.tenantId, 'domains', { domain: 'bravo-owned.example' });
    const alertOf = async (tenantId: string) =>
      (await t.admin.query<{ id: string }>(`insert into security_alerts (tenant_id, rule, severity, subject) values ($1, 'seed', 'low', 'seed') returning id`, [tenantId]))[0]!.id;
    const alertA = await alertOf(a.tenantId);
    const alertB = await alertOf(b.tenantId);
    const adminA = await t.addMember(ownerA, a.tenantId, 'admin');
    const memberA = await t.addMember(ownerA, a.tenantId, 'member');
    viewerA = await t.addMember(ownerA, a.tenantId, 'viewer');
    const accountB = await post(ownerB, b.tenantId, 'accounts', { name: 'Bravo Account' });
    const contactB = await post(ownerB, b.tenantId, 'contacts', { accountId: accountB, name: 'Bravo Contact' });
    const invitationB = await post(ownerB, b.tenantId, 'invitations', { email: 'pending@bravo.example', role: 'member' });
    const integration = { name: 'Sync', provider: 'acme', credential: 'alpha-secret-credential' };
    const integrationA = await post(ownerA, a.tenantId, 'integrations', integration);
    const integrationB = await post(ownerB, b.tenantId, 'integrations', integration);
    const webhook = { url: 'https://93.184.216.34/hook', eventTypes: ['account.created'] };
    const webhookA = await post(ownerA, a.tenantId, 'webhooks', webhook);
    const webhookB = await post(ownerB, b.tenantId, 'webhooks', webhook);
    const reviewOf = async (as: SessionHandle, tenantId: string) => {
      const response = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/access-reviews`, as, body: {} });
      if (response.statusCode !== 201) throw new Error(`access review: ${response.statusCode} ${response.body}`);
      const review = response.json<{ id: string; entries: { id: string }[] }>();
      return { review: review.id, entry: review.entries[0]!.id };
    };
    const reviewA = await reviewOf(ownerA, a.tenantId);
    const scimTokenA = await post(ownerA, a.tenantId, 'scim-tokens', { name: 'Alpha IdP' });
    const scimTokenB = await post(ownerB, b.tenantId, 'scim-tokens', { name: 'Bravo IdP' });
    const group = async (tenantId: string, name: string) => (await t.admin.query<{ id: string }>(`insert into scim_groups (tenant_id, display_name) values ($1, $2) returning id`, [tenantId, name]))[0]!.id;
    const scimGroupA = await group(a.tenantId, 'Alpha admins');
    const scimGroupB = await group(b.tenantId, 'Bravo admins');
    const reviewB = await reviewOf(ownerB, b.tenantId);

    idsA = { tenantId: a.tenantId, objects: { 'accounts/:id': accountA1, 'contacts/:id': contactA1, 'members/:userId': memberA.userId, 'api-keys/:id': keyA, 'domains/:id': domainA, 'security-alerts/:id': alertA, 'invitations/:invitationId': invitationA, 'integrations/:integrationId': integrationA, 'webhooks/:webhookId': webhookA, 'access-reviews/:reviewId': reviewA.review, 'entries/:entryId': reviewA.entry, 'scim-tokens/:tokenId': scimTokenA, 'scim-groups/:groupId': scimGroupA } };
    idsB = { tenantId: b.tenantId, objects: { 'accounts/:id': accountB, 'contacts/:id': contactB, 'members/:userId': ownerB.userId, 'api-keys/:id': keyB, 'domains/:id': domainB, 'security-alerts/:id': alertB, 'invitations/:invitationId': invitationB, 'integrations/:integrationId': integrationB, 'webhooks/:webhookId': webhookB, 'access-reviews/:reviewId': reviewB.review, 'entries/:entryId': reviewB.entry, 'scim-tokens/:tokenId': scimTokenB, 'scim-groups/:groupId': scimGroupB } };
    secretsA = [
      a.tenantId, 'Alpha Secret Tenant', 'Alpha Owner', ownerA.userId, ownerA.email, accountA1, accountA2, 'Alpha Account',
      'alpha-one.example', contactA1, contactA2, 'Alpha Contact', 'contact1@alpha.example', '+15551234567', invitationA,
      'pending@alpha.example', keyA, 'Alpha Key', domainA, 'alpha-owned.example', alertA, adminA.userId, adminA.email, memberA.userId, memberA.email, viewerA.userId, viewerA.email,
    ].map((secret) => secret.toLowerCase());
    snapshotBefore = await snapshotA();
  });
  afterAll(async () => t?.close());

  it('enumerates a non-empty live tenant route table covering accounts, contacts, members, invitations and audit events', () => {
    expect(tenantRoutes.length).toBeGreaterThan(0);
    const urls = tenantRoutes.map((route) => route.url);
    for (const resource of ['accounts', 'accounts/:id', 'contacts', 'contacts/:id', 'members', 'members/:userId', 'invitations', 'audit-events']) {
      expect(urls, resource).toContain(`/api/v1/tenants/:tenantId/${resource}`);
    }
    const withoutSample = tenantRoutes.filter((route) => route.schema.body !== undefined && SAMPLE_BODIES[routeKey(route)] === undefined);
    expect(withoutSample.map(routeKey), 'tenant routes with a body need a sample in SAMPLE_BODIES').toEqual([]);
  });

  it("answers another tenant's owner 404 not_found on every route of tenant A, identical to a nonexistent tenant and free of A's data", async () => {
    for (const route of tenantRoutes) {
      const label = `B owner -> ${routeKey(route)} on A`;
      const response = await send(route, idsA, ownerB);
      expectProblem(response, 404, 'not_found', label);
      const body = response.body.toLowerCase();
      for (const secret of secretsA) expect.soft(body.includes(secret), `${label} leaks ${secret}`).toBe(false);
      const nowhere = await send(route, { ...idsA, tenantId: randomUUID() }, ownerB);
      expect.soft(response.body, `${label}: must look like a tenant that does not exist`).toBe(nowhere.body);
    }
  });

  it("answers 404 when B's owner uses A's object ids on B's own tenant path", async () => {
    const targets = tenantRoutes.filter((route) => /\/:(?!tenantId\b)\w+/.test(route.url) || JSON.stringify(bodyFor(route, idsA) ?? '').includes(idsA.objects['accounts/:id']!));
    expect(targets.length).toBeGreaterThan(0);
    for (const route of targets) {
      const response = await send(route, { tenantId: idsB.tenantId, objects: idsA.objects }, ownerB);
      expectProblem(response, 404, 'not_found', `B owner -> ${routeKey(route)} on B with A's ids`);
    }
    // Re-pointing B's own contact at A's account must not cross the boundary either.
    const repoint = await t.request({
      method: 'PATCH',
      url: `/api/v1/tenants/${idsB.tenantId}/contacts/${idsB.objects['contacts/:id']}`,
      as: ownerB,
      body: { accountId: idsA.objects['accounts/:id'] },
    });
    expectProblem(repoint, 404, 'not_found', "PATCH B's contact with A's accountId");
  });

  it('answers an anonymous caller 401 auth.unauthenticated on every tenant route', async () => {
    for (const route of tenantRoutes) {
      expectProblem(await send(route, idsA, null), 401, 'auth.unauthenticated', `anonymous -> ${routeKey(route)}`);
    }
  });

  it("answers A's viewer 403 access.forbidden on every route beyond records.read and security.report, and 2xx on those", async () => {
    const accounts = await t.request({ method: 'GET', url: `/api/v1/tenants/${idsA.tenantId}/accounts`, as: viewerA });
    expect(accounts.statusCode).toBe(200);
    expect(accounts.json<{ items: { id: string }[] }>().items.map((item) => item.id)).toContain(idsA.objects['accounts/:id']);
    for (const route of tenantRoutes) {
      const label = `viewer -> ${routeKey(route)}`;
      const response = await send(route, idsA, viewerA);
      if (route.access.kind === 'tenant' && route.access.permission === 'records.read') {
        expect.soft(response.statusCode, `${label} -> ${response.body}`).toBe(200);
      } else if (route.access.kind === 'tenant' && route.access.permission === 'security.report') {
        expect.soft(response.statusCode, `${label} -> ${response.body}`).toBe(201); // anyone in the tenant may report
      } else {
        expectProblem(response, 403, 'access.forbidden', label);
      }
    }
  });

  it("leaves A's accounts, contacts, memberships and invitations unchanged after every refused request", async () => {
    expect(snapshotBefore.accounts).toHaveLength(2);
    expect(snapshotBefore.contacts).toHaveLength(2);
    expect(snapshotBefore.memberships).toHaveLength(4);
    expect(snapshotBefore.invitations.length).toBeGreaterThan(0);
    expect(await snapshotA()).toEqual(snapshotBefore);
  });

  it('refuses a removed member with 404 on their very next request, and drops the tenant from their tenant list', async () => {
    const leaver = await t.addMember(ownerA, idsA.tenantId, 'member');
    const accountsA = `/api/v1/tenants/${idsA.tenantId}/accounts`;
    const tenantIds = async () => {
      const response = await t.request({ method: 'GET', url: '/api/v1/tenants', as: leaver });
      expect(response.statusCode).toBe(200);
      return response.json<{ items: { id: string }[] }>().items.map((item) => item.id);
    };
    expect((await t.request({ method: 'GET', url: accountsA, as: leaver })).statusCode).toBe(200);
    expect(await tenantIds()).toContain(idsA.tenantId);

    const removed = await t.request({ method: 'DELETE', url: `/api/v1/tenants/${idsA.tenantId}/members/${leaver.userId}`, as: ownerA });
    expect(removed.statusCode).toBe(204);

    expectProblem(await t.request({ method: 'GET', url: accountsA, as: leaver }), 404, 'not_found', 'removed member reads A');
    expectProblem(await t.request({ method: 'POST', url: accountsA, as: leaver, body: { name: 'Too late' } }), 404, 'not_found', 'removed member writes A');
    const remaining = await tenantIds();
    expect(remaining).not.toContain(idsA.tenantId);
    expect(remaining.length).toBeGreaterThan(0); // their own tenant is still there: only A's access ended
  });
});
