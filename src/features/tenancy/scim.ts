/**
 * SCIM 2.0 (RFC 7643/7644) provisioning of a tenant's members by its identity provider.
 *
 * - Tokens belong to the tenant (they outlive their creator), are shown once, stored as a
 *   digest, and name their tenant: the tenant comes from the token, never from the request.
 * - SCIM Users are the tenant's members however they joined (id = the user's id), plus
 *   resources provisioned for an address the tenant has not verified, which stay pending (an
 *   invitation is mailed) until the person accepts.
 * - `active: false` suspends the membership here only; DELETE removes it; both revoke the
 *   person's sessions in this tenant and the API keys they created, in the same transaction.
 *   Owners are out of SCIM's reach (an admin can issue a token, and admins cannot touch owners).
 * - SCIM Groups, and the roles an admin maps them to, are in scim-groups.ts.
 * - Real clients' dialects are accepted: Entra's capitalised `op` values and booleans as
 *   strings; attributes the resource does not keep (password, locale, groups, extensions)
 *   are ignored, never stored.
 */
import { sql } from 'kysely';
import Type from 'typebox';
import { recordTenantEvent, type Actor, type RequestMeta } from '../../kernel/audit/record.ts';
import { generateToken, hashToken } from '../../kernel/crypto/tokens.ts';
import { isUniqueViolation, isUuid, type Database, type Tx } from '../../kernel/db/database.ts';
import { AppError, scimErrorBody } from '../../kernel/http/errors.ts';
import { ipAllowed } from '../../kernel/http/ip-allowlist.ts';
import { publicRoute, tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { TenantParams, Timestamp, Uuid } from '../../kernel/http/schemas.ts';
import type { Mailer } from '../../kernel/mail/mailer.ts';
import { OWNER_ROLE, type Role } from '../access/index.ts';
import { NO_PASSWORD } from '../identity/index.ts';
import { cutAccess, reactivateMembership, removeMembership, suspendMembership } from './members.ts';
import { invitationExpiry, mailInvitation, newInvitationToken } from './invitations.ts';
import { countUsers, filterValue, findUsers, IdParams, ListParams, listResponse, LIST_SCHEMA, MAX_RESULTS, pageOf, patchOperations, SCIM_TYPE, scimBoolean, ScimError, scimString, USER_SCHEMA, type ScimCaller, type ScimRoute, type StoredUser, type UserFilter } from './scim-common.ts';
import { groupMappingRoutes, groupRoutes, groupsOfUsers, GROUP_SCHEMA, leaveGroups } from './scim-groups.ts';

const TOKEN_PATTERN = /^cn_scim_([0-9a-f-]{36})_([A-Za-z0-9_-]{43})$/;

function toResource(user: StoredUser, baseUrl: string, groups: readonly { value: string; display: string; $ref: string }[] = []) {
  return {
    schemas: [USER_SCHEMA],
    id: user.id,
    ...(user.external_id ? { externalId: user.external_id } : {}),
    userName: user.user_name,
    name: { ...(user.given_name ? { givenName: user.given_name } : {}), ...(user.family_name ? { familyName: user.family_name } : {}) },
    ...(user.display_name ? { displayName: user.display_name } : {}),
    emails: [{ value: user.user_name, type: 'work', primary: true }],
    active: user.active,
    groups,
    meta: { resourceType: 'User', created: user.created_at.toISOString(), lastModified: user.updated_at.toISOString(), location: `${baseUrl}/scim/v2/Users/${user.id}` },
  };
}

async function findUser(tx: Tx, tenantId: string, id: string): Promise<StoredUser> {
  if (!isUuid(id)) throw new ScimError(404, 'No such user');
  const [found] = await findUsers(tx, tenantId, { ids: [id.toLowerCase()] });
  if (!found) throw new ScimError(404, 'No such user');
  return found;
}


const EMAIL = /^[^\s@]{1,64}@[^\s@]{1,189}\.[^\s@]{2,63}$/;

/** The attributes of a User resource that this service keeps, from a POST or PUT body. */
function userAttributes(body: unknown) {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ScimError(400, 'The request body must be a SCIM User', 'invalidSyntax');
  const b = body as Record<string, unknown>;
  const emails = Array.isArray(b.emails) ? (b.emails as { value?: unknown; primary?: unknown }[]) : [];
  const primary = emails.find((e) => e && (e.primary === true || e.primary === 'true' || e.primary === 'True')) ?? emails[0];
  const userName = scimString(b.userName, 'userName', 254);
  const email = (userName && EMAIL.test(userName) ? userName : scimString(primary?.value, 'emails.value', 254))?.toLowerCase() ?? null;
  if (!userName) throw new ScimError(400, 'userName is required', 'invalidValue');
  if (!email || !EMAIL.test(email)) throw new ScimError(400, 'userName (or a primary email) must be an email address', 'invalidValue');
  const name = typeof b.name === 'object' && b.name !== null ? (b.name as Record<string, unknown>) : {};
  return {
    user_name: email,
    external_id: scimString(b.externalId, 'externalId'),
    given_name: scimString(name.givenName, 'name.givenName'),
    family_name: scimString(name.familyName, 'name.familyName'),
    display_name: scimString(b.displayName, 'displayName'),
    active: b.active === undefined ? true : scimBoolean(b.active, 'active'),
  };
}

type Attributes = ReturnType<typeof userAttributes>;

/**
 * Owners are managed in CustomerNode only: a SCIM token can be issued by an admin, and an admin
 * may not suspend or remove an owner, so neither may the token (nor an IdP that was taken over).
 */
async function assertNotOwner(tx: Tx, tenantId: string, userId: string): Promise<void> {
  const membership = await tx.selectFrom('memberships').select('role').where('tenant_id', '=', tenantId).where('user_id', '=', userId).forUpdate().executeTakeFirst();
  if (membership?.role === OWNER_ROLE) throw new ScimError(403, 'Owners are managed in CustomerNode, not through SCIM', 'mutability');
}

/** Stores the SCIM attributes of a linked member or pending resource (the row exists from then on). */
async function saveAttributes(tx: Tx, tenantId: string, user: StoredUser, attributes: Omit<Attributes, 'user_name' | 'active'> & { active: boolean }): Promise<void> {
  const values = { external_id: attributes.external_id, given_name: attributes.given_name, family_name: attributes.family_name, display_name: attributes.display_name, active: attributes.active, updated_at: sql<Date>`now()` };
  await tx
    .insertInto('scim_users')
    .values({ tenant_id: tenantId, id: user.id, user_name: user.user_name, user_id: user.user_id, ...values })
    .onConflict((oc) => oc.columns(['tenant_id', 'id']).doUpdateSet(values))
    .execute();
}

export interface ScimOptions {
  readonly mailer: Mailer;
  readonly appUrl: string;
}

export function scimRoutes(options: ScimOptions): RouteDefinition[] {
  const { appUrl } = options;

  /** Authenticates the SCIM token, runs work in the tenant's transaction, and answers in SCIM's format. */
  function scim(route: ScimRoute): RouteDefinition {
    return publicRoute({
      method: route.method,
      url: route.url,
      reason: "SCIM: authenticated by the tenant's SCIM bearer token in the handler (the tenant comes from the token)",
      // Answers are SCIM JSON written by the handler (application/scim+json), not serialised from a schema.
      schema: { summary: route.summary, tags: ['scim'], response: {}, ...(route.schema ?? {}) } as never,
      async handler({ db, request, reply, meta }) {
        try {
          const result = await withScimCaller(db, request.headers.authorization, meta, async (tx, caller) =>
            route.work({
              tx,
              caller,
              params: request.params as Record<string, string>,
              query: request.query as Record<string, string>,
              body: request.body,
              actor: { type: 'scim', id: caller.tokenId },
              meta,
            }),
          );
          reply.code(result.status).type(SCIM_TYPE);
          return result.body === undefined ? reply.send() : reply.send(JSON.stringify(result.body));
        } catch (error) {
          const scimError =
            error instanceof ScimError
              ? error
              : error instanceof AppError && error.status < 500
                ? new ScimError(error.status, error.publicDetail ?? error.message)
                : isUniqueViolation(error)
                  ? new ScimError(409, 'A resource with this name exists', 'uniqueness') // two concurrent creates of one name
                  : null;
          if (!scimError) throw error;
          if (scimError.status === 401) void reply.header('www-authenticate', 'Bearer realm="scim"');
          return reply.code(scimError.status).type(SCIM_TYPE).send(JSON.stringify(scimErrorBody(scimError.status, scimError.message, scimError.scimType)));
        }
      },
    });
  }

  /**
   * The token's tenant transaction. The tenant's IP allow-list binds the SCIM token as it binds
   * members and API keys (a leaked token must not manage members from anywhere): a refused call
   * is audited (committed), then answered 403.
   */
  async function withScimCaller<T>(db: Database, authorization: string | undefined, meta: RequestMeta, work: (tx: Tx, caller: ScimCaller) => Promise<T>): Promise<T> {
    const token = /^Bearer (\S+)$/i.exec(authorization ?? '')?.[1];
    const parsed = token ? TOKEN_PATTERN.exec(token) : null;
    if (!token || !parsed) throw new ScimError(401, 'A SCIM bearer token is required');
    const tenantId = parsed[1]!.toLowerCase();
    const outcome = await db.withTenant(tenantId, async (tx): Promise<{ blocked: true } | { blocked: false; value: T }> => {
      const row = await tx
        .updateTable('scim_tokens')
        .set({ last_used_at: sql`now()` })
        .where('tenant_id', '=', tenantId)
        .where('token_hash', '=', hashToken(token))
        .returning(['id', 'created_by'])
        .executeTakeFirst();
      const tenant = await tx.selectFrom('tenants').select('deleted_at').where('id', '=', tenantId).executeTakeFirst();
      if (!row || !tenant || tenant.deleted_at !== null) throw new ScimError(401, 'The SCIM token is not valid');
      const settings = await tx.selectFrom('tenant_settings').select(sql<string[]>`ip_allowlist::text[]`.as('ip_allowlist')).where('tenant_id', '=', tenantId).executeTakeFirst();
      if (!ipAllowed(settings?.ip_allowlist ?? [], meta.ip)) {
        await recordTenantEvent(tx, tenantId, { type: 'scim', id: row.id }, meta, { action: 'access.denied', outcome: 'denied', metadata: { route: 'scim', reason: 'ip_blocked', ip: meta.ip } });
        return { blocked: true };
      }
      return { blocked: false, value: await work(tx, { tenantId, tokenId: row.id, createdBy: row.created_by }) };
    });
    if (outcome.blocked) throw new ScimError(403, 'This tenant does not accept SCIM requests from your network address');
    return outcome.value;
  }

  const audit = (tx: Tx, caller: ScimCaller, actor: Actor, meta: RequestMeta, action: string, userId: string, metadata: Record<string, unknown>) =>
    recordTenantEvent(tx, caller.tenantId, actor, meta, { action, target: { type: 'user', id: userId }, metadata: { ...metadata, via: 'scim' } });

  /** A PATCH operation's value for a path (or the attributes of a path-less value object). */
  function patchChanges(body: unknown): Record<string, unknown> {
    const changes: Record<string, unknown> = {};
    for (const operation of patchOperations(body)) {
      const value = operation.op === 'remove' ? null : operation.value;
      if (operation.path === undefined) {
        if (typeof value !== 'object' || value === null) throw new ScimError(400, 'An operation without a path needs an object value', 'invalidValue');
        for (const [key, inner] of Object.entries(value as Record<string, unknown>)) {
          if (key === 'name' && typeof inner === 'object' && inner !== null) for (const [part, v] of Object.entries(inner)) changes[`name.${part}`] = v;
          else changes[key] = inner;
        }
      } else {
        changes[operation.path.replace(/^urn:ietf:params:scim:schemas:core:2\.0:User:/, '')] = value;
      }
    }
    return changes;
  }

  const PATCHABLE: Record<string, Exclude<keyof Attributes, 'user_name'>> = {
    active: 'active',
    externalId: 'external_id',
    displayName: 'display_name',
    'name.givenName': 'given_name',
    'name.familyName': 'family_name',
  };

  async function createUser(tx: Tx, caller: ScimCaller, actor: Actor, meta: RequestMeta, attributes: Attributes, log: Parameters<Mailer['sendInBackground']>[1]) {
    const tenantId = caller.tenantId;
    if ((await countUsers(tx, tenantId, { userName: attributes.user_name })) > 0) throw new ScimError(409, 'A user with this userName exists', 'uniqueness');
    const settings = await tx.selectFrom('tenant_settings').select('scim_default_role').where('tenant_id', '=', tenantId).executeTakeFirst();
    const role = (settings?.scim_default_role ?? 'member') as Role;
    const domain = attributes.user_name.slice(attributes.user_name.lastIndexOf('@') + 1);
    const verified = await tx.selectFrom('tenant_domains').select('id').where('tenant_id', '=', tenantId).where('domain', '=', domain).where('verified_at', 'is not', null).executeTakeFirst();
    const displayName = attributes.display_name ?? ([attributes.given_name, attributes.family_name].filter(Boolean).join(' ') || attributes.user_name);
    if (verified) {
      // The tenant proved it controls this domain: the account is linked (or made, password-less: SSO or a reset signs in).
      const existing = await tx.selectFrom('users').select('id').where('email', '=', attributes.user_name).executeTakeFirst();
      const userId = existing?.id ?? (await tx.insertInto('users').values({ email: attributes.user_name, name: displayName, password_hash: NO_PASSWORD, email_verified_at: new Date() }).returning('id').executeTakeFirstOrThrow()).id;
      await tx.insertInto('memberships').values({ tenant_id: tenantId, user_id: userId, role, ...(attributes.active ? {} : { suspended_at: new Date(), suspended_by: caller.createdBy }) }).execute();
      await tx.insertInto('scim_users').values({ tenant_id: tenantId, id: userId, ...attributes, user_id: userId }).execute();
      await audit(tx, caller, actor, meta, 'member.joined', userId, { role, provisioned: true });
      return findUser(tx, tenantId, userId);
    }
    // Not a domain the tenant verified: the person must accept, so SCIM cannot claim someone else's account.
    const token = newInvitationToken(tenantId);
    const invitation = await tx
      .insertInto('invitations')
      .values({ tenant_id: tenantId, email: attributes.user_name, role, token_hash: hashToken(token), invited_by: caller.createdBy, expires_at: invitationExpiry() })
      .returning(['id', 'expires_at'])
      .executeTakeFirstOrThrow();
    const row = await tx.insertInto('scim_users').values({ tenant_id: tenantId, ...attributes, invitation_id: invitation.id }).returning('id').executeTakeFirstOrThrow();
    await recordTenantEvent(tx, tenantId, actor, meta, { action: 'member.invited', target: { type: 'invitation', id: invitation.id }, metadata: { email: attributes.user_name, role, via: 'scim' } });
    await mailInvitation(options, tx, { tenantId, inviter: "Your organisation's identity provider", email: attributes.user_name, token, expiresAt: invitation.expires_at }, log);
    return findUser(tx, tenantId, row.id);
  }

  /**
   * Stores a PUT's or PATCH's attributes. A change of `active` suspends or reactivates the
   * membership (suspension cuts access at once), audited; the answer is the stored resource.
   */
  async function replaceUser(tx: Tx, caller: ScimCaller, actor: Actor, meta: RequestMeta, user: StoredUser, next: Omit<Attributes, 'user_name'>) {
    if (user.user_id !== null && user.active !== next.active) {
      if (!next.active) {
        await assertNotOwner(tx, caller.tenantId, user.user_id);
        await suspendMembership(tx, caller.tenantId, user.user_id, caller.createdBy);
        await cutAccess(tx, caller.tenantId, user.user_id);
      } else {
        await reactivateMembership(tx, caller.tenantId, user.user_id);
      }
      await audit(tx, caller, actor, meta, next.active ? 'member.reactivated' : 'member.suspended', user.user_id, {});
    }
    await saveAttributes(tx, caller.tenantId, user, next);
    return resource(tx, caller.tenantId, await findUser(tx, caller.tenantId, user.id));
  }

  async function removeUser(tx: Tx, caller: ScimCaller, actor: Actor, meta: RequestMeta, user: StoredUser) {
    const tenantId = caller.tenantId;
    if (user.user_id !== null) {
      await assertNotOwner(tx, tenantId, user.user_id);
      const { revokedKeys } = await removeMembership(tx, tenantId, user.user_id);
      await audit(tx, caller, actor, meta, 'member.removed', user.user_id, { revokedKeys });
      return;
    }
    const row = await tx.deleteFrom('scim_users').where('tenant_id', '=', tenantId).where('id', '=', user.id).returning('invitation_id').executeTakeFirst();
    await leaveGroups(tx, tenantId, user.id);
    if (row?.invitation_id) {
      await tx.updateTable('invitations').set({ revoked_at: sql`now()` }).where('tenant_id', '=', tenantId).where('id', '=', row.invitation_id).where('accepted_at', 'is', null).execute();
    }
  }

  const baseUrl = appUrl.replace(/\/$/, '');
  /** One User resource with the groups it belongs to. */
  const resource = async (tx: Tx, tenantId: string, user: StoredUser) => toResource(user, baseUrl, (await groupsOfUsers(tx, tenantId, [user.id], baseUrl)).get(user.id));

  return [
    scim({
      method: 'GET',
      url: '/scim/v2/ServiceProviderConfig',
      summary: 'SCIM: what this service provider supports',
      work: async () => ({
        status: 200,
        body: {
          schemas: ['urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig'],
          documentationUri: `${baseUrl}/api/v1/openapi.json`,
          patch: { supported: true },
          bulk: { supported: false, maxOperations: 0, maxPayloadSize: 0 },
          filter: { supported: true, maxResults: MAX_RESULTS },
          changePassword: { supported: false },
          sort: { supported: false },
          etag: { supported: false },
          authenticationSchemes: [{ type: 'oauthbearertoken', name: 'OAuth Bearer Token', description: 'A SCIM token issued by a tenant admin (POST /api/v1/tenants/{id}/scim-tokens)', primary: true }],
          meta: { resourceType: 'ServiceProviderConfig', location: `${baseUrl}/scim/v2/ServiceProviderConfig` },
        },
      }),
    }),
    scim({
      method: 'GET',
      url: '/scim/v2/ResourceTypes',
      summary: 'SCIM: resource types',
      work: async () => ({
        status: 200,
        body: {
          schemas: [LIST_SCHEMA],
          totalResults: 2,
          startIndex: 1,
          itemsPerPage: 2,
          Resources: [
            { schemas: ['urn:ietf:params:scim:schemas:core:2.0:ResourceType'], id: 'User', name: 'User', endpoint: '/Users', schema: USER_SCHEMA, meta: { resourceType: 'ResourceType', location: `${baseUrl}/scim/v2/ResourceTypes/User` } },
            { schemas: ['urn:ietf:params:scim:schemas:core:2.0:ResourceType'], id: 'Group', name: 'Group', endpoint: '/Groups', schema: GROUP_SCHEMA, meta: { resourceType: 'ResourceType', location: `${baseUrl}/scim/v2/ResourceTypes/Group` } },
          ],
        },
      }),
    }),
    scim({
      method: 'GET',
      url: '/scim/v2/Schemas',
      summary: 'SCIM: the attributes this service keeps',
      work: async () => {
        const attribute = (name: string, extra: Record<string, unknown> = {}) => ({ name, type: 'string', multiValued: false, required: false, caseExact: false, mutability: 'readWrite', returned: 'default', uniqueness: 'none', ...extra });
        const user = {
          schemas: ['urn:ietf:params:scim:schemas:core:2.0:Schema'],
          id: USER_SCHEMA,
          name: 'User',
          description: 'A member of the tenant',
          attributes: [
            attribute('userName', { required: true, uniqueness: 'server' }),
            attribute('externalId'),
            attribute('displayName'),
            { ...attribute('name'), type: 'complex', subAttributes: [attribute('givenName'), attribute('familyName')] },
            { ...attribute('emails'), type: 'complex', multiValued: true, mutability: 'readOnly', subAttributes: [attribute('value'), attribute('type'), { ...attribute('primary'), type: 'boolean' }] },
            { ...attribute('active'), type: 'boolean' },
            { ...attribute('groups'), type: 'complex', multiValued: true, mutability: 'readOnly', subAttributes: [attribute('value'), attribute('display'), { ...attribute('$ref'), type: 'reference' }] },
          ],
          meta: { resourceType: 'Schema', location: `${baseUrl}/scim/v2/Schemas/${USER_SCHEMA}` },
        };
        const group = {
          schemas: ['urn:ietf:params:scim:schemas:core:2.0:Schema'],
          id: GROUP_SCHEMA,
          name: 'Group',
          description: "A group in the tenant's IdP; an admin maps it to a role",
          attributes: [
            attribute('displayName', { required: true, uniqueness: 'server' }),
            attribute('externalId'),
            { ...attribute('members'), type: 'complex', multiValued: true, subAttributes: [{ ...attribute('value'), mutability: 'immutable' }, { ...attribute('display'), mutability: 'readOnly' }, { ...attribute('type'), mutability: 'immutable', canonicalValues: ['User'] }] },
          ],
          meta: { resourceType: 'Schema', location: `${baseUrl}/scim/v2/Schemas/${GROUP_SCHEMA}` },
        };
        return { status: 200, body: { schemas: [LIST_SCHEMA], totalResults: 2, startIndex: 1, itemsPerPage: 2, Resources: [user, group] } };
      },
    }),
    scim({
      method: 'GET',
      url: '/scim/v2/Users',
      summary: "SCIM: the tenant's users (filter: userName eq, externalId eq; startIndex and count paging)",
      schema: { querystring: ListParams },
      work: async ({ tx, caller, query }) => {
        let filter: UserFilter = {};
        if (query.filter) {
          const match = /^\s*(userName|externalId|emails\.value|emails)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$/i.exec(query.filter);
          if (!match) throw new ScimError(400, 'Supported filters: userName eq "…", externalId eq "…", emails.value eq "…"', 'invalidFilter');
          const value = filterValue(match[2]!);
          filter = match[1]!.toLowerCase() === 'externalid' ? { externalId: value } : { userName: value.toLowerCase() };
        }
        const { startIndex, offset, limit } = pageOf(query);
        const users = await findUsers(tx, caller.tenantId, filter, { offset, limit });
        const groups = await groupsOfUsers(tx, caller.tenantId, users.map((u) => u.id), baseUrl);
        return { status: 200, body: listResponse(users, await countUsers(tx, caller.tenantId, filter), startIndex, (u) => toResource(u, baseUrl, groups.get(u.id))) };
      },
    }),
    scim({
      method: 'GET',
      url: '/scim/v2/Users/:id',
      summary: 'SCIM: one user',
      schema: { params: IdParams },
      work: async ({ tx, caller, params }) => ({ status: 200, body: await resource(tx, caller.tenantId, await findUser(tx, caller.tenantId, params.id!)) }),
    }),
    scim({
      method: 'POST',
      url: '/scim/v2/Users',
      summary: 'SCIM: provision a user (linked at once for a domain the tenant verified; otherwise invited and pending until accepted)',
      work: async ({ tx, caller, body, actor, meta }) => {
        const created = await createUser(tx, caller, actor, meta, userAttributes(body), { info() {}, error() {} });
        return { status: 201, body: toResource(created, baseUrl) };
      },
    }),
    scim({
      method: 'PUT',
      url: '/scim/v2/Users/:id',
      summary: 'SCIM: replace a user (userName cannot change)',
      schema: { params: IdParams },
      work: async ({ tx, caller, params, body, actor, meta }) => {
        const user = await findUser(tx, caller.tenantId, params.id!);
        const attributes = userAttributes(body);
        if (attributes.user_name !== user.user_name) throw new ScimError(400, 'userName cannot change: it is the account email', 'mutability');
        return { status: 200, body: await replaceUser(tx, caller, actor, meta, user, attributes) };
      },
    }),
    scim({
      method: 'PATCH',
      url: '/scim/v2/Users/:id',
      summary: 'SCIM: change a user (active false suspends the membership here; Okta and Entra dialects)',
      schema: { params: IdParams },
      work: async ({ tx, caller, params, body, actor, meta }) => {
        const user = await findUser(tx, caller.tenantId, params.id!);
        const next: Omit<Attributes, 'user_name'> = { external_id: user.external_id, given_name: user.given_name, family_name: user.family_name, display_name: user.display_name, active: user.active };
        for (const [path, value] of Object.entries(patchChanges(body))) {
          if (path === 'userName' || path.startsWith('emails')) {
            if (typeof value === 'string' && value.toLowerCase() === user.user_name) continue;
            throw new ScimError(400, `${path} cannot change: it is the account email`, 'mutability');
          }
          const column = PATCHABLE[path];
          if (!column) continue; // attributes this service does not keep (extensions, phone numbers, ...)
          if (column === 'active') next.active = scimBoolean(value, 'active');
          else next[column] = scimString(value, path);
        }
        return { status: 200, body: await replaceUser(tx, caller, actor, meta, user, next) };
      },
    }),
    scim({
      method: 'DELETE',
      url: '/scim/v2/Users/:id',
      summary: "SCIM: remove the user's membership (their sessions here and keys go with it)",
      schema: { params: IdParams },
      work: async ({ tx, caller, params, actor, meta }) => {
        await removeUser(tx, caller, actor, meta, await findUser(tx, caller.tenantId, params.id!));
        return { status: 204 };
      },
    }),

    ...groupRoutes(scim, baseUrl),
    ...groupMappingRoutes(),

    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/scim-tokens',
      permission: 'members.manage',
      status: 201,
      schema: {
        summary: 'Issue a SCIM token for this tenant (shown once; it belongs to the tenant, not to you)',
        tags: ['scim'],
        params: TenantParams,
        body: Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })) }, { additionalProperties: false }),
        response: { 201: Type.Object({ id: Uuid, name: Type.String(), token: Type.String(), createdAt: Timestamp }) },
      },
      async handler({ tx, tenantId, principal, body, audit: record }) {
        const token = `cn_scim_${tenantId}_${generateToken()}`;
        const row = await tx
          .insertInto('scim_tokens')
          .values({ tenant_id: tenantId, name: body.name?.trim() ?? 'SCIM', token_hash: hashToken(token), created_by: principal.userId })
          .returning(['id', 'name', 'created_at'])
          .executeTakeFirstOrThrow();
        await record({ action: 'scim_token.created', target: { type: 'scim_token', id: row.id }, metadata: { name: row.name } });
        return { id: row.id, name: row.name, token, createdAt: row.created_at.toISOString() };
      },
    }),
    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/scim-tokens',
      permission: 'members.manage',
      schema: {
        summary: "The tenant's SCIM tokens (never the secret)",
        tags: ['scim'],
        params: TenantParams,
        response: { 200: Type.Object({ items: Type.Array(Type.Object({ id: Uuid, name: Type.String(), createdBy: Uuid, createdAt: Timestamp, lastUsedAt: Type.Union([Timestamp, Type.Null()]) })) }) },
      },
      async handler({ tx, tenantId }) {
        const rows = await tx.selectFrom('scim_tokens').select(['id', 'name', 'created_by', 'created_at', 'last_used_at']).where('tenant_id', '=', tenantId).orderBy('created_at').execute();
        return { items: rows.map((r) => ({ id: r.id, name: r.name, createdBy: r.created_by, createdAt: r.created_at.toISOString(), lastUsedAt: r.last_used_at ? r.last_used_at.toISOString() : null })) };
      },
    }),
    tenantRoute({
      method: 'DELETE',
      url: '/api/v1/tenants/:tenantId/scim-tokens/:tokenId',
      permission: 'members.manage',
      status: 204,
      schema: { summary: 'Revoke a SCIM token (rotate: issue a new one first)', tags: ['scim'], params: Type.Object({ tenantId: Uuid, tokenId: Uuid }, { additionalProperties: false }), response: { 204: Type.Null() } },
      async handler({ tx, tenantId, params, audit: record }) {
        const row = await tx.deleteFrom('scim_tokens').where('tenant_id', '=', tenantId).where('id', '=', params.tokenId.toLowerCase()).returning(['id', 'name']).executeTakeFirst();
        if (!row) throw new AppError('not_found');
        await record({ action: 'scim_token.revoked', target: { type: 'scim_token', id: row.id }, metadata: { name: row.name } });
      },
    }),
  ];
}

/** When a pending SCIM user accepts their invitation, the resource links to the account (and keeps its id). */
export async function linkProvisionedUser(tx: Tx, tenantId: string, invitationId: string, userId: string): Promise<void> {
  const row = await tx
    .updateTable('scim_users')
    .set({ user_id: userId, invitation_id: null, updated_at: sql`now()` })
    .where('tenant_id', '=', tenantId)
    .where('invitation_id', '=', invitationId)
    .returning(['active'])
    .executeTakeFirst();
  // Deactivated by the IdP while pending: the membership starts suspended.
  if (row && !row.active) await suspendMembership(tx, tenantId, userId, userId);
}
