/**
 * The permission matrix, generated from the LIVE route table and the policy module: every
 * route x every kind of caller, each expectation computed from the role -> permission table
 * (and each route's step-up declaration), every request really sent. Writes
 * docs/permission-matrix.md; the committed file must equal what this run generates
 * (UPDATE_PERMISSION_MATRIX=1 rewrites it), so a permission change shows up as a diff.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allRoutes } from '../src/app.ts';
import { can, isRole, ROLES, type Role } from '../src/features/access/index.ts';
import { generateToken, hashToken } from '../src/kernel/crypto/tokens.ts';
import type { RouteDefinition } from '../src/kernel/http/routes.ts';
import { startTestApp, type Response, type SessionHandle, type TestApp } from './harness.ts';
import { startDnsServer, type DnsServer } from './support/dns-server.ts';

const DOC = path.resolve(import.meta.dirname, '../docs/permission-matrix.md');

type Principal =
  | { readonly label: string; readonly kind: 'anonymous' }
  | { readonly label: string; readonly kind: 'session'; readonly role: Role | 'outsider' | 'removed' | 'suspended' }
  | { readonly label: string; readonly kind: 'apikey'; readonly role: Role };

const PRINCIPALS: readonly Principal[] = [
  { label: 'anonymous', kind: 'anonymous' },
  ...ROLES.map((role) => ({ label: role, kind: 'session' as const, role })),
  ...ROLES.map((role) => ({ label: `key:${role}`, kind: 'apikey' as const, role })),
  { label: 'other tenant', kind: 'session', role: 'outsider' },
  { label: 'removed member', kind: 'session', role: 'removed' },
  { label: 'suspended member', kind: 'session', role: 'suspended' },
];

/** What a caller should get: through (2xx or a 4xx about the request itself), or refused. */
type Outcome = 'allowed' | '401' | '403' | '403 step-up' | '403 suspended' | '404';

/** Query strings a route needs to get past validation (so the guard and handler rules are what answers). */
const SAMPLE_QUERIES: Readonly<Record<string, string>> = { 'GET /api/v1/tenants/:tenantId/audit-events/export': 'format=jsonl' };

const key = (route: RouteDefinition) => `${route.method} ${route.url}`;

/** The expectation, from the policy module and the route's own declaration (step-up). */
function expectedOutcome(route: RouteDefinition, principal: Principal): Outcome {
  const access = route.access;
  if (access.kind === 'public') return 'allowed';
  if (principal.kind === 'anonymous') return '401';
  // Routes outside a tenant take a session (any signed-in person); API keys work on tenant routes only.
  if (access.kind === 'authenticated') return principal.kind === 'apikey' ? '401' : 'allowed';
  if (principal.kind === 'session' && (principal.role === 'outsider' || principal.role === 'removed')) return '404';
  // Still a member, so told why (not a 404), but nothing gets through.
  if (principal.kind === 'session' && principal.role === 'suspended') return '403 suspended';
  const role = principal.role as Role;
  // A key acts with its own role and never beyond its creator's (the owner, here).
  if (!can(role, access.permission) || (principal.kind === 'apikey' && !can('owner', access.permission))) return '403';
  if (principal.kind === 'apikey' && route.stepUp) return '403 step-up'; // a key can never re-authenticate
  return 'allowed';
}

function matches(response: Response, outcome: Outcome): boolean {
  const code = response.statusCode >= 400 ? (JSON.parse(response.body) as { code?: string }).code : undefined;
  switch (outcome) {
    case 'allowed':
      return response.statusCode < 400 || (response.statusCode < 500 && ![401, 403, 404].includes(response.statusCode));
    case '401':
      return response.statusCode === 401;
    case '403':
      return response.statusCode === 403 && code === 'access.forbidden';
    case '403 step-up':
      return response.statusCode === 403 && code === 'auth.reauth_required';
    case '403 suspended':
      return response.statusCode === 403 && code === 'member.suspended';
    case '404':
      return response.statusCode === 404 && code === 'not_found';
  }
}

// Threat: any route reachable by a caller the policy does not allow, or revealing data of
// a tenant to someone outside it; and a new route slipping in without an expectation.
describe('permission matrix: every live route x every caller, expectations from the policy', () => {
  let t: TestApp;
  let dns: DnsServer;
  let routes: RouteDefinition[];
  let owner: SessionHandle;
  let tenantA: string;
  let tenantB: string;
  let ownerB: SessionHandle;
  let seedAccountA: string;
  let seedAccountB: string;
  const sessions = new Map<string, SessionHandle>();
  const keys = new Map<string, string>();
  /** Names, emails and ids of tenant A that must never reach a refused caller. */
  const secretsA: string[] = [];
  const failures: string[] = [];
  const observed = new Map<string, Map<string, Outcome>>();
  let counter = 0;

  beforeAll(async () => {
    dns = await startDnsServer();
    t = await startTestApp({ env: { DNS_SERVERS: dns.address } });
    routes = allRoutes(t.config);
    const a = await t.signup({ tenantName: 'Matrix Alpha Secret' });
    const b = await t.signup({ tenantName: 'Matrix Bravo' });
    ({ session: owner, tenantId: tenantA } = a);
    ({ session: ownerB, tenantId: tenantB } = b);
    sessions.set('owner', owner);
    for (const role of ROLES.filter((r) => r !== 'owner')) sessions.set(role, await t.addMember(owner, tenantA, role));
    sessions.set('other tenant', ownerB);
    const removed = await t.addMember(owner, tenantA, 'member');
    await t.request({ method: 'DELETE', url: `/api/v1/tenants/${tenantA}/members/${removed.userId}`, as: owner });
    sessions.set('removed member', removed);
    const suspended = await t.addMember(owner, tenantA, 'admin');
    const suspension = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantA}/members/${suspended.userId}/suspend`, as: owner });
    if (suspension.statusCode !== 200) throw new Error(`suspend: ${suspension.body}`);
    // The session they held when suspended: revoked here, yet told why on its very next request.
    sessions.set('suspended member', suspended);
    for (const role of ROLES) {
      const created = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantA}/api-keys`, as: owner, body: { name: `Matrix key ${role}`, role } });
      if (created.statusCode !== 201) throw new Error(`key ${role}: ${created.body}`);
      keys.set(`key:${role}`, created.json<{ key: string }>().key);
    }
    seedAccountA = (await t.admin.query<{ id: string }>(`insert into accounts (tenant_id, name) values ($1, 'Alpha Secret Account') returning id`, [tenantA]))[0]!.id;
    seedAccountB = (await t.admin.query<{ id: string }>(`insert into accounts (tenant_id, name) values ($1, 'Bravo Account') returning id`, [tenantB]))[0]!.id;
    secretsA.push(tenantA, 'Matrix Alpha Secret', 'Alpha Secret Account', seedAccountA, owner.email, owner.userId);
  }, 120_000);
  afterAll(async () => {
    await t?.close();
    await dns?.stop();
  });

  /** access.denied events about tenant A: in its own log, and in the platform log. */
  async function denials(): Promise<{ tenant: number; platform: number }> {
    const [row] = await t.admin.query<{ tenant: number; platform: number }>(
      `select (select count(*)::int from audit_events where tenant_id = $1 and action = 'access.denied') as tenant,
              (select count(*)::int from platform_audit_events where tenant_id = $1 and action = 'access.denied') as platform`,
      [tenantA],
    );
    return row!;
  }

  /** A fresh object of each kind a path can name, in tenantId (so a permitted DELETE never runs out). */
  async function freshIds(tenantId: string, accountId: string): Promise<Record<string, string>> {
    const n = ++counter;
    const one = async (text: string, params: unknown[]) => (await t.admin.query<{ id: string }>(text, params))[0]!.id;
    const userId = await one(`insert into users (email, name, password_hash) values ($1, 'Matrix target', '!no-password') returning id`, [`target-${n}-${randomUUID()}@example.com`]);
    await t.admin.query(`insert into memberships (tenant_id, user_id, role) values ($1, $2, 'member')`, [tenantId, userId]);
    // A completed campaign (one open campaign per tenant is allowed, and nothing here may apply revocations).
    const reviewId = await one(
      `insert into access_reviews (tenant_id, name, status, unanswered_action, deadline, created_by) values ($1, $2, 'completed', 'flag', now(), $3) returning id`,
      [tenantId, `Matrix review ${n}`, owner.userId],
    );
    const entryId = await one(
      `insert into access_review_entries (tenant_id, review_id, position, subject_kind, subject_id, name, role) values ($1, $2, 0, 'user', $3, 'Matrix target', 'member') returning id`,
      [tenantId, reviewId, userId],
    );
    return {
      'access-reviews/:reviewId': reviewId,
      'scim-tokens/:tokenId': await one(`insert into scim_tokens (tenant_id, name, token_hash, created_by) values ($1, 'Matrix', $2, $3) returning id`, [tenantId, hashToken(generateToken()), owner.userId]),
      'entries/:entryId': entryId,
      'scim-groups/:groupId': await one(`insert into scim_groups (tenant_id, display_name) values ($1, $2) returning id`, [tenantId, `Matrix group ${n}`]),
      'accounts/:id': await one(`insert into accounts (tenant_id, name) values ($1, $2) returning id`, [tenantId, `Matrix account ${n}`]),
      'contacts/:id': await one(`insert into contacts (tenant_id, account_id, name) values ($1, $2, $3) returning id`, [tenantId, accountId, `Matrix contact ${n}`]),
      'members/:userId': userId,
      'api-keys/:id': await one(`insert into api_keys (tenant_id, name, role, key_hash, created_by) values ($1, 'Matrix target key', 'member', $2, $3) returning id`, [tenantId, hashToken(generateToken()), owner.userId]),
      'domains/:id': await one(`insert into tenant_domains (tenant_id, domain, challenge) values ($1, $2, 'c') returning id`, [tenantId, `matrix-${n}.example`]),
      'security-alerts/:id': await one(`insert into security_alerts (tenant_id, rule, severity, subject) values ($1, 'matrix', 'low', $2) returning id`, [tenantId, `matrix:${n}`]),
      'sessions/:id': randomUUID(),
      'integrations/:integrationId': await one(
        `insert into integrations (tenant_id, name, provider, credential, credential_hint, created_by) values ($1, $2, 'matrix', '\\x00', '0000', $3) returning id`,
        [tenantId, `Matrix integration ${n}`, owner.userId],
      ),
      'webhooks/:webhookId': await one(
        `insert into webhooks (tenant_id, url, url_ct, event_types, secret, created_by) values ($1, 'https://93.184.216.34/…trix', '\\x00', '{account.created}', '\\x00', $2) returning id`,
        [tenantId, owner.userId],
      ),
      'audit-events/:id': await one(`insert into audit_events (tenant_id, actor_type, action, outcome) values ($1, 'system', 'matrix.seeded', 'success') returning id`, [tenantId]),
      'invitations/:invitationId': await one(
        `insert into invitations (tenant_id, email, role, token_hash, invited_by, expires_at) values ($1, $2, 'viewer', $3, $4, now() + interval '7 days') returning id`,
        [tenantId, `pending-${n}@example.com`, hashToken(generateToken()), owner.userId],
      ),
    };
  }

  /** The state a route needs before a permitted caller runs it (DELETE /sso needs a configuration). */
  async function prepare(route: RouteDefinition, tenantId: string): Promise<void> {
    if (key(route) === 'DELETE /api/v1/tenants/:tenantId/sso') {
      await t.admin.query(
        `insert into tenant_sso (tenant_id, issuer, client_id, client_secret, allowed_domains) values ($1, 'https://idp.example.com', 'c', 's', '{}') on conflict (tenant_id) do nothing`,
        [tenantId],
      );
    }
  }

  function body(route: RouteDefinition, accountId: string): unknown {
    if (route.schema.body === undefined) return undefined;
    const n = ++counter;
    const samples: Record<string, unknown> = {
      'POST /api/v1/tenants/:tenantId/api-keys': { name: `Made by matrix ${n}`, role: 'guest' },
      'POST /api/v1/tenants/:tenantId/invitations': { email: `invitee-${n}@example.com`, role: 'viewer' },
      'POST /api/v1/tenants/:tenantId/security-reports': { what: `Matrix report ${n}` },
      'POST /api/v1/tenants/:tenantId/integrations': { name: `Matrix integration ${n}`, provider: 'matrix', credential: 'matrix-credential-0001' },
      'PUT /api/v1/tenants/:tenantId/integrations/:integrationId/credential': { credential: 'matrix-credential-0002' },
      // A public address literal: passes the egress check without DNS, and nothing is sent in this test.
      'POST /api/v1/tenants/:tenantId/webhooks': { url: 'https://93.184.216.34/matrix', eventTypes: ['account.created'] },
      'PATCH /api/v1/tenants/:tenantId/webhooks/:webhookId': { enabled: false },
      'POST /api/v1/tenants/:tenantId/access-reviews': {},
      'POST /api/v1/tenants/:tenantId/scim-tokens': { name: `Matrix IdP ${n}` },
      'PATCH /api/v1/tenants/:tenantId/scim-groups/:groupId': { role: 'viewer' },
      'PATCH /api/v1/tenants/:tenantId/access-reviews/:reviewId/entries/:entryId': { decision: 'keep' },
      // Never the real name: a permitted caller gets 400, and tenant A is not scheduled for deletion.
      'POST /api/v1/tenants/:tenantId/deletion': { confirmName: `Not the tenant name ${n}` },
      'PATCH /api/v1/tenants/:tenantId/members/:userId': { role: 'viewer' },
      'PATCH /api/v1/tenants/:tenantId/settings': { sessionIdleMinutes: 30 },
      'POST /api/v1/tenants/:tenantId/accounts': { name: `Matrix new account ${n}` },
      'PATCH /api/v1/tenants/:tenantId/accounts/:id': { name: `Renamed ${n}` },
      'POST /api/v1/tenants/:tenantId/contacts': { accountId, name: `Matrix new contact ${n}` },
      'PATCH /api/v1/tenants/:tenantId/contacts/:id': { name: `Renamed ${n}` },
      'PUT /api/v1/tenants/:tenantId/sso': { issuer: 'https://idp.example.com', clientId: `client-${n}`, clientSecret: 'secret', allowedDomains: ['example.com'] },
      'POST /api/v1/tenants/:tenantId/domains': { domain: `claim-${n}.example` },
      'PATCH /api/v1/tenants/:tenantId/security-alerts/:id': { status: 'acknowledged' },
      'POST /api/v1/tenants': { name: `Matrix tenant ${n}` },
      'POST /api/v1/invitations/accept': { token: 'x' },
      'POST /api/v1/auth/reauth': { password: 'not the password at all' },
      'POST /api/v1/auth/password': { currentPassword: 'not the password at all', newPassword: 'another long passphrase' },
      'POST /api/v1/auth/totp/activate': { code: '000000' },
      'POST /api/v1/auth/totp/disable': { password: 'not the password at all' },
      'POST /api/v1/auth/totp/recovery-codes': { password: 'not the password at all' },
    };
    if (!(key(route) in samples)) throw new Error(`No sample body for ${key(route)}: add one to the matrix`);
    return samples[key(route)];
  }

  async function send(
    route: RouteDefinition,
    principal: Principal,
    target: { tenantId: string; ids: Record<string, string>; accountId: string; body?: Record<string, unknown>; query?: string },
  ): Promise<Response> {
    let url = route.url.replace(/([^/]+)\/:(\w+)/g, (_w, collection: string, param: string) => {
      if (param === 'tenantId') return `${collection}/${target.tenantId}`;
      const id = target.ids[`${collection}/:${param}`];
      if (id === undefined) throw new Error(`No fresh id for ${collection}/:${param}: add it to freshIds`);
      return `${collection}/${id}`;
    });
    const sample = body(route, target.accountId);
    const payload = target.body ? { ...(sample as Record<string, unknown>), ...target.body } : sample;
    const query = target.query ?? SAMPLE_QUERIES[key(route)];
    if (query) url += `?${query}`;
    if (principal.kind === 'apikey') {
      return t.request({ method: route.method, url, body: payload, headers: { authorization: `Bearer ${keys.get(principal.label)!}` } });
    }
    const as = principal.kind === 'session' ? sessions.get(['other tenant', 'removed member', 'suspended member'].includes(principal.label) ? principal.label : principal.role)! : null;
    // Each caller acts on a copy of their handle: a renewed token must not leak into the next case.
    return t.request({ method: route.method, url, body: payload, as: as ? { ...as } : null });
  }

  it('enumerates the live route table: every non-public route has an expectation for every caller', () => {
    const tenantRoutes = routes.filter((r) => r.access.kind === 'tenant');
    expect(tenantRoutes.length).toBeGreaterThanOrEqual(25);
    for (const route of routes) for (const principal of PRINCIPALS) expect(() => expectedOutcome(route, principal)).not.toThrow();
    for (const role of ROLES) expect(isRole(role)).toBe(true);
  });

  it("tenant routes on the caller's own tenant: allowed exactly where the policy allows, else 401/403/404, with no data of the tenant", async () => {
    for (const route of routes.filter((r) => r.access.kind === 'tenant')) {
      const row = new Map<string, Outcome>();
      observed.set(key(route), row);
      for (const principal of PRINCIPALS) {
        const expected = expectedOutcome(route, principal);
        row.set(principal.label, expected);
        await prepare(route, tenantA);
        const ids = await freshIds(tenantA, seedAccountA);
        const before = await denials();
        const response = await send(route, principal, { tenantId: tenantA, ids, accountId: seedAccountA });
        if (!matches(response, expected)) failures.push(`${principal.label} -> ${key(route)}: expected ${expected}, got ${response.statusCode} ${response.body.slice(0, 200)}`);
        // Denials are evidence: a member's (or key's) 403 lands in the tenant's log, a stranger's 404 in the platform log.
        const after = await denials();
        if (expected === '403' || expected === '403 suspended') {
          if (after.tenant !== before.tenant + 1) failures.push(`${principal.label} -> ${key(route)}: the 403 left no access.denied in the tenant log`);
        } else if (expected === '404') {
          if (after.platform !== before.platform + 1 || after.tenant !== before.tenant) failures.push(`${principal.label} -> ${key(route)}: the 404 was not recorded in the platform log only`);
        }
        if (expected !== 'allowed') {
          const text = response.body.toLowerCase();
          for (const secret of secretsA) if (text.includes(secret.toLowerCase())) failures.push(`${principal.label} -> ${key(route)}: refused answer contains ${secret}`);
        }
      }
    }
    expect(failures).toEqual([]);
  }, 300_000);

  it("another tenant's path, and another tenant's object ids through the caller's own path: 404 for every member and key", async () => {
    const problems: string[] = [];
    const idsB = await freshIds(tenantB, seedAccountB);
    for (const route of routes.filter((r) => r.access.kind === 'tenant')) {
      for (const principal of PRINCIPALS.filter((p) => p.kind !== 'anonymous' && !(p.kind === 'session' && (p.role === 'outsider' || p.role === 'removed')))) {
        const otherPath = await send(route, principal, { tenantId: tenantB, ids: idsB, accountId: seedAccountB });
        if (!matches(otherPath, '404')) problems.push(`${principal.label} -> ${key(route)} on B: ${otherPath.statusCode} ${otherPath.body.slice(0, 120)}`);
        // B's ids through A's path: where the caller may use the route at all, the id is unknown here.
        const usesIds = /\/:(?!tenantId)/.test(route.url) || key(route) === 'POST /api/v1/tenants/:tenantId/contacts';
        if (!usesIds || expectedOutcome(route, principal) !== 'allowed') continue;
        const crossId = await send(route, principal, { tenantId: tenantA, ids: idsB, accountId: seedAccountB });
        if (!matches(crossId, '404')) problems.push(`${principal.label} -> ${key(route)} on A with B's ids: ${crossId.statusCode} ${crossId.body.slice(0, 120)}`);
      }
    }
    expect(problems).toEqual([]);
    // B's objects are untouched: the ids were never used on B's data.
    expect(await t.admin.query(`select 1 from accounts where id = $1`, [idsB['accounts/:id']])).toHaveLength(1);
    expect(await t.admin.query(`select 1 from memberships where user_id = $1`, [idsB['members/:userId']])).toHaveLength(1);
  }, 300_000);

  /** Every id-typed field of a request, found from the route's schemas (path, query, body, arrays). */
  function idFields(route: RouteDefinition): { where: 'params' | 'querystring' | 'body'; name: string; array: boolean }[] {
    const found: { where: 'params' | 'querystring' | 'body'; name: string; array: boolean }[] = [];
    for (const where of ['params', 'querystring', 'body'] as const) {
      const schema = route.schema[where] as { properties?: Record<string, { format?: string; items?: { format?: string } }> } | undefined;
      for (const [name, property] of Object.entries(schema?.properties ?? {})) {
        if (name === 'tenantId') continue;
        if (property.format === 'uuid' || property.items?.format === 'uuid') found.push({ where, name, array: property.items?.format === 'uuid' });
      }
    }
    return found;
  }
  /** Which kind of object a body or query id names (path ids are named by their collection). */
  const ID_KINDS: Readonly<Record<string, string>> = { accountId: 'accounts/:id', actorId: 'members/:userId', eventIds: 'audit-events/:id' };

  it("every id-typed field anywhere in a request, given the other tenant's real id, gets the same 404 as an id that exists nowhere", async () => {
    const problems: string[] = [];
    const idsB = await freshIds(tenantB, seedAccountB);
    let swept = 0;
    for (const route of routes.filter((r) => r.access.kind === 'tenant')) {
      for (const field of idFields(route)) {
        const pathKind = new RegExp(`([^/]+)/:${field.name}(/|$)`).exec(route.url)?.[1];
        const kind = field.where === 'params' ? `${pathKind}/:${field.name}` : ID_KINDS[field.name];
        if (kind === undefined || idsB[kind] === undefined) {
          problems.push(`${key(route)}: no mirror id for ${field.where}.${field.name}: add it to ID_KINDS / freshIds`);
          continue;
        }
        const attempt = async (value: string) => {
          await prepare(route, tenantA);
          const ids = await freshIds(tenantA, seedAccountA);
          return send(route, { label: 'owner', kind: 'session', role: 'owner' }, {
            tenantId: tenantA,
            ids: field.where === 'params' ? { ...ids, [kind]: value } : ids,
            accountId: seedAccountA,
            ...(field.where === 'body' ? { body: { [field.name]: field.array ? [value] : value } } : {}),
            ...(field.where === 'querystring' ? { query: `${field.name}=${value}` } : {}),
          });
        };
        const mirror = await attempt(idsB[kind]!);
        const nowhere = await attempt(randomUUID());
        swept++;
        // A path or body id names an object: B's is not found here. A query id filters: B's finds nothing here.
        if (field.where !== 'querystring' && !matches(mirror, '404')) problems.push(`${key(route)} ${field.where}.${field.name} = B's id: ${mirror.statusCode} ${mirror.body.slice(0, 120)}`);
        const shape = (r: Response) => (r.statusCode >= 400 ? `${r.statusCode} ${r.json<{ code: string }>().code}` : `${r.statusCode} ${JSON.stringify(r.json<{ items?: unknown[] }>().items ?? null)}`);
        if (shape(mirror) !== shape(nowhere)) problems.push(`${key(route)} ${field.where}.${field.name}: B's id answers ${shape(mirror)}, a nonexistent id ${shape(nowhere)}`);
      }
    }
    expect(problems).toEqual([]);
    expect(swept).toBeGreaterThanOrEqual(10);
  }, 300_000);

  /** Where each list's items live, to compare with what the caller may read. */
  const LIST_SOURCES: Readonly<Record<string, { table: string; id: string; itemId: string }>> = {
    'GET /api/v1/tenants/:tenantId/accounts': { table: 'accounts', id: 'id', itemId: 'id' },
    'GET /api/v1/tenants/:tenantId/contacts': { table: 'contacts', id: 'id', itemId: 'id' },
    'GET /api/v1/tenants/:tenantId/members': { table: 'memberships', id: 'user_id', itemId: 'userId' },
    'GET /api/v1/tenants/:tenantId/api-keys': { table: 'api_keys', id: 'id', itemId: 'id' },
    'GET /api/v1/tenants/:tenantId/audit-events': { table: 'audit_events', id: 'id', itemId: 'id' },
    'GET /api/v1/tenants/:tenantId/domains': { table: 'tenant_domains', id: 'id', itemId: 'id' },
    'GET /api/v1/tenants/:tenantId/security-alerts': { table: 'security_alerts', id: 'id', itemId: 'id' },
    'GET /api/v1/tenants/:tenantId/audit-events/checkpoints': { table: 'audit_checkpoints', id: 'seq', itemId: 'seq' },
    'GET /api/v1/tenants/:tenantId/invitations': { table: 'invitations', id: 'id', itemId: 'id' },
    'GET /api/v1/tenants/:tenantId/integrations': { table: 'integrations', id: 'id', itemId: 'id' },
    'GET /api/v1/tenants/:tenantId/webhooks': { table: 'webhooks', id: 'id', itemId: 'id' },
    'GET /api/v1/tenants/:tenantId/access-reviews': { table: 'access_reviews', id: 'id', itemId: 'id' },
    'GET /api/v1/tenants/:tenantId/scim-tokens': { table: 'scim_tokens', id: 'id', itemId: 'id' },
    'GET /api/v1/tenants/:tenantId/scim-groups': { table: 'scim_groups', id: 'id', itemId: 'id' },
    // Everyone who can reach the tenant: members and live API keys.
    'GET /api/v1/tenants/:tenantId/access-review': {
      table: `(select user_id as id, tenant_id from memberships union all select id, tenant_id from api_keys where revoked_at is null and (expires_at is null or expires_at > now())) s`,
      id: 'id',
      itemId: 'id',
    },
  };

  it('every list returns to each caller exactly the items the caller may read one by one: all of its tenant, none of another', async () => {
    const problems: string[] = [];
    const isList = (r: RouteDefinition) => (r.schema.response[200] as { properties?: Record<string, unknown> } | undefined)?.properties?.items !== undefined;
    const lists = routes.filter((r) => r.access.kind === 'tenant' && r.method === 'GET' && !/\/:(?!tenantId)/.test(r.url) && isList(r));
    expect(lists.map(key).sort()).toEqual(Object.keys(LIST_SOURCES).sort());
    for (const route of lists) {
      const source = LIST_SOURCES[key(route)]!;
      const detail = routes.find((r) => r.method === 'GET' && r.url === `${route.url}/:id`);
      for (const principal of PRINCIPALS.filter((p) => expectedOutcome(route, p) === 'allowed')) {
        const seen: string[] = [];
        let cursor: string | null = null;
        do {
          const query = `limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
          // Paging parameters only where the route pages.
          const pages = (route.schema.querystring as { properties?: Record<string, unknown> } | undefined)?.properties?.limit !== undefined;
          const response = await send(route, principal, { tenantId: tenantA, ids: {}, accountId: seedAccountA, query: pages ? query : '' });
          if (response.statusCode !== 200) {
            problems.push(`${principal.label} -> ${key(route)}: ${response.statusCode}`);
            break;
          }
          const page = response.json<{ items: Record<string, string>[]; nextCursor?: string | null }>();
          seen.push(...page.items.map((item) => String(item[source.itemId])));
          cursor = page.nextCursor ?? null;
        } while (cursor !== null);
        const inTenant = (await t.admin.query<{ id: string }>(`select ${source.id}::text as id from ${source.table} where tenant_id = $1`, [tenantA])).map((r) => r.id);
        const missing = inTenant.filter((id) => !seen.includes(id));
        const extra = seen.filter((id) => !inTenant.includes(id));
        // The audit log grows while it is read (each list is itself recorded elsewhere); nothing may be foreign.
        if (extra.length > 0) problems.push(`${principal.label} -> ${key(route)}: ${extra.length} items not of this tenant`);
        if (source.table !== 'audit_events' && missing.length > 0) problems.push(`${principal.label} -> ${key(route)}: ${missing.length} readable items missing`);
        if (detail) {
          for (const id of seen.slice(0, 5)) {
            const one = await send(detail, principal, { tenantId: tenantA, ids: { [`${route.url.split('/').at(-1)}/:id`]: id }, accountId: seedAccountA });
            if (one.statusCode !== 200) problems.push(`${principal.label} -> ${key(detail)} for a listed item: ${one.statusCode}`);
          }
        }
      }
    }
    expect(problems).toEqual([]);
  }, 300_000);

  it('routes outside a tenant: anonymous 401 on every non-public route; API keys 401 on user routes; public routes need nothing', async () => {
    const problems: string[] = [];
    for (const route of routes.filter((r) => r.access.kind !== 'tenant')) {
      const row = new Map<string, Outcome>();
      observed.set(key(route), row);
      for (const principal of PRINCIPALS) row.set(principal.label, expectedOutcome(route, principal));
      if (route.access.kind === 'public') continue;
      for (const principal of PRINCIPALS.filter((p) => p.kind !== 'session')) {
        const response = await send(route, principal, { tenantId: tenantA, ids: { 'sessions/:id': randomUUID() }, accountId: seedAccountA });
        const expected = expectedOutcome(route, principal);
        if (!matches(response, expected)) problems.push(`${principal.label} -> ${key(route)}: expected ${expected}, got ${response.statusCode}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('docs/permission-matrix.md is generated from this run and committed as is', () => {
    const principals = PRINCIPALS.map((p) => p.label);
    const cell = (o: Outcome) => (o === 'allowed' ? 'yes' : o);
    const rows = [...observed.entries()]
      .sort(([a], [b]) => a.split(' ')[1]!.localeCompare(b.split(' ')[1]!) || a.localeCompare(b))
      .map(([route, row]) => `| \`${route}\` | ${principals.map((p) => cell(row.get(p)!)).join(' | ')} |`);
    const document = `# Permission matrix

Generated by \`test/permission-matrix.security.test.ts\` from the live route table and the
policy module (\`src/features/access/policy.ts\`); every cell is also a request the suite sends
and checks. Do not edit: run \`UPDATE_PERMISSION_MATRIX=1 npx vitest run test/permission-matrix.security.test.ts\`
and review the diff (a diff here is a permission change).

Callers: the roles of tenant A as members (sessions) and as API keys (created by an owner),
an owner of another tenant, a member removed from A, and an admin of A whose membership is
suspended. Cells: **yes** = the request gets
through (2xx, or a 4xx about the request itself); **401** not authenticated; **403**
\`access.forbidden\`; **403 step-up** \`auth.reauth_required\` (API keys can never re-authenticate);
**403 suspended** \`member.suspended\`;
**404** not a
member (the same answer as a tenant that does not exist). On tenant routes every member and
key also gets 404 on another tenant's path, and 404 for another tenant's object ids through
its own path (also checked).

| route | ${principals.join(' | ')} |
|---|${principals.map(() => '---').join('|')}|
${rows.join('\n')}
`;
    if (process.env.UPDATE_PERMISSION_MATRIX === '1') writeFileSync(DOC, document);
    expect(readFileSync(DOC, 'utf8'), 'docs/permission-matrix.md is stale: rerun with UPDATE_PERMISSION_MATRIX=1 and review the diff').toBe(document);
  });
});

describe('the permission matrix has teeth', () => {
  it('a build with one route guarded by a weaker permission is caught by the same expectations', async () => {
    const target = 'GET /api/v1/tenants/:tenantId/members';
    // The "mistake": the members list guarded by records.read instead of members.read.
    const weakened = await startTestApp({
      alterRoutes: (routes) => routes.map((route) => (key(route) === target && route.access.kind === 'tenant' ? ({ ...route, access: { kind: 'tenant', permission: 'records.read' } } as RouteDefinition) : route)),
    });
    try {
      const original = allRoutes(weakened.config).find((route) => key(route) === target)!;
      const { session: owner, tenantId } = await weakened.signup();
      const viewer = await weakened.addMember(owner, tenantId, 'viewer');
      const response = await weakened.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/members`, as: viewer });
      const expected = expectedOutcome(original, { label: 'viewer', kind: 'session', role: 'viewer' });
      expect(expected).toBe('403');
      expect(response.statusCode).toBe(200); // the weakened build lets the viewer in ...
      expect(matches(response, expected)).toBe(false); // ... and the matrix reports it
    } finally {
      await weakened.close();
    }
  });
});
