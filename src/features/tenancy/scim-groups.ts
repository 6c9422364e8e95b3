/**
 * SCIM Groups (RFC 7643 4.2) pushed by the tenant's IdP, and the roles they carry.
 *
 * - A group carries no role until a tenant admin maps it to one (admin at most: owners are
 *   managed in CustomerNode only, as for Users).
 * - While a member belongs to a mapped group, their role is the highest role of their mapped
 *   groups; leaving the last one (or its unmapping, or its deletion) returns them to the
 *   tenant's scimDefaultRole. Roles are recomputed only for the members a change touches, so a
 *   role an admin set by hand on someone in no mapped group stays.
 * - Owners are never changed; a promotion signs the member out of the tenant (a new session
 *   comes with more authority), as a role change by an admin does. Pending resources carry the
 *   role into their invitation.
 * - Every change is audited: the group's own events, and member.role_changed for each role.
 */
import { sql } from 'kysely';
import Type from 'typebox';
import { recordTenantEvent, type AuditEvent } from '../../kernel/audit/record.ts';
import { isUuid, type Tx } from '../../kernel/db/database.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { TenantParams, Timestamp, Uuid } from '../../kernel/http/schemas.ts';
import { IDP_ASSIGNABLE_ROLES, isPromotion, OWNER_ROLE, type Role } from '../access/index.ts';
import { signOutOfTenant } from './members.ts';
import { filterValue, IdParams, ListParams, listResponse, pageOf, patchOperations, usersById, ScimError, scimString, type ScimRoute, type StoredUser } from './scim-common.ts';

export const GROUP_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:Group';
const MAX_MEMBERS_PER_REQUEST = 10_000;
const MappableRole = Type.Union(IDP_ASSIGNABLE_ROLES.map((role) => Type.Literal(role)));

type RecordEvent = (event: AuditEvent) => Promise<void>;

interface StoredGroup {
  id: string;
  display_name: string;
  external_id: string | null;
  role: Role | null;
  created_at: Date;
  updated_at: Date;
  members: string[];
}

interface GroupQuery {
  readonly id?: string;
  /** Lock the group rows (a change of the group): a concurrent DELETE waits, or this finds nothing. */
  readonly forUpdate?: boolean;
  /** Only these groups. */
  readonly ids?: readonly string[];
  /** Only groups with this member. */
  readonly member?: string;
  /** Read the member lists (a count is always read). */
  readonly withMembers?: boolean;
}

async function loadGroups(tx: Tx, tenantId: string, q: GroupQuery = {}): Promise<(StoredGroup & { member_count: number })[]> {
  let query = tx
    .selectFrom('scim_groups as g')
    .selectAll('g')
    .select(sql<number>`(select count(*) from scim_group_members c where c.tenant_id = g.tenant_id and c.group_id = g.id)`.as('member_count'))
    .where('g.tenant_id', '=', tenantId);
  if (q.id !== undefined) query = query.where('g.id', '=', q.id);
  if (q.ids !== undefined) query = query.where(sql<boolean>`g.id in (select value::uuid from jsonb_array_elements_text(${JSON.stringify(q.ids)}::jsonb))`);
  if (q.member !== undefined) query = query.where(sql<boolean>`exists (select 1 from scim_group_members m where m.tenant_id = g.tenant_id and m.group_id = g.id and m.member_id = ${q.member}::uuid)`);
  if (q.forUpdate) query = query.forUpdate();
  const groups = (await query.orderBy('g.created_at').orderBy('g.id').execute()).map((g) => ({ ...g, member_count: Number(g.member_count) }));
  if (groups.length === 0 || !q.withMembers) return groups.map((g) => ({ ...g, members: [] }));
  const rows = await tx
    .selectFrom('scim_group_members')
    .select(['group_id', 'member_id'])
    .where('tenant_id', '=', tenantId)
    .where(sql<boolean>`group_id in (select value::uuid from jsonb_array_elements_text(${JSON.stringify(groups.map((g) => g.id))}::jsonb))`)
    .orderBy('member_id')
    .execute();
  const byGroup = new Map<string, string[]>();
  for (const row of rows) {
    const list = byGroup.get(row.group_id);
    if (list) list.push(row.member_id);
    else byGroup.set(row.group_id, [row.member_id]);
  }
  return groups.map((g) => ({ ...g, members: byGroup.get(g.id) ?? [] }));
}

/** One group with its members; forUpdate for a change (locks the group row). */
async function findGroup(tx: Tx, tenantId: string, id: string, forUpdate = false): Promise<StoredGroup> {
  const [group] = isUuid(id) ? await loadGroups(tx, tenantId, { id: id.toLowerCase(), forUpdate, withMembers: true }) : [];
  if (!group) throw new ScimError(404, 'No such group');
  return group;
}

function groupResource(group: StoredGroup, users: ReadonlyMap<string, StoredUser>, baseUrl: string, withMembers: boolean) {
  return {
    schemas: [GROUP_SCHEMA],
    id: group.id,
    ...(group.external_id ? { externalId: group.external_id } : {}),
    displayName: group.display_name,
    ...(withMembers
      ? {
          members: group.members.flatMap((id) => {
            const user = users.get(id);
            return user ? [{ value: id, display: user.display_name ?? user.user_name, type: 'User', $ref: `${baseUrl}/scim/v2/Users/${id}` }] : [];
          }),
        }
      : {}),
    meta: { resourceType: 'Group', created: group.created_at.toISOString(), lastModified: group.updated_at.toISOString(), location: `${baseUrl}/scim/v2/Groups/${group.id}` },
  };
}

/**
 * The SCIM User ids of a `members` value. Members added must be Users of this tenant; members
 * removed need only be ids (Entra removes users it has already deleted; the removal is scoped
 * to this group anyway).
 */
async function memberIds(tx: Tx, tenantId: string, value: unknown, mustExist = true): Promise<string[]> {
  if (value === null || value === undefined) return [];
  const list = Array.isArray(value) ? value : [value];
  // One statement's parameters stay well under the databases' limit (65,535).
  if (list.length > MAX_MEMBERS_PER_REQUEST) throw new ScimError(400, `At most ${MAX_MEMBERS_PER_REQUEST} members per request; send larger groups in several PATCH requests`, 'invalidValue');
  const ids = list.map((member: unknown) => {
    const id = typeof member === 'object' && member !== null ? (member as { value?: unknown }).value : undefined;
    if (typeof id !== 'string' || !isUuid(id)) throw new ScimError(400, 'Each member needs the value of a User id', 'invalidValue');
    return id.toLowerCase();
  });
  const unique = [...new Set(ids)];
  if (!mustExist) return unique;
  const found = await usersById(tx, tenantId, unique);
  const unknown = unique.find((id) => !found.has(id));
  if (unknown) throw new ScimError(400, `No user ${unknown} in this tenant`, 'invalidValue');
  return unique;
}

function displayNameOf(value: unknown): string {
  const name = scimString(value, 'displayName');
  if (!name) throw new ScimError(400, 'displayName is required', 'invalidValue');
  return name;
}

async function assertNameFree(tx: Tx, tenantId: string, name: string, except?: string): Promise<void> {
  let query = tx.selectFrom('scim_groups').select('id').where('tenant_id', '=', tenantId).where(sql<boolean>`lower(display_name) = lower(${name})`);
  if (except) query = query.where('id', '!=', except);
  if (await query.executeTakeFirst()) throw new ScimError(409, 'A group with this displayName exists', 'uniqueness');
}

/** A POST or PUT body: its name (free, unless it is this group's own), externalId and members (each a User here). */
async function groupBody(tx: Tx, tenantId: string, body: unknown, except?: string): Promise<{ name: string; externalId: string | null; members: string[] }> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ScimError(400, 'The request body must be a SCIM Group', 'invalidSyntax');
  const b = body as Record<string, unknown>;
  const name = displayNameOf(b.displayName);
  await assertNameFree(tx, tenantId, name, except);
  return { name, externalId: scimString(b.externalId, 'externalId'), members: await memberIds(tx, tenantId, b.members) };
}

function slices(ids: readonly string[], size = 5000): string[][] {
  const out: string[][] = [];
  for (let i = 0; i < ids.length; i += size) out.push(ids.slice(i, i + size));
  return out;
}

/** Adds and removes members; returns the ids whose membership actually changed. */
async function changeMembers(tx: Tx, tenantId: string, groupId: string, change: { add?: readonly string[]; remove?: readonly string[] }): Promise<string[]> {
  const changed: string[] = [];
  // In slices, so a large group's PUT stays under the databases' limit of statement parameters.
  for (const ids of slices(change.remove ?? [])) {
    const removed = await tx.deleteFrom('scim_group_members').where('tenant_id', '=', tenantId).where('group_id', '=', groupId).where('member_id', 'in', ids).returning('member_id').execute();
    changed.push(...removed.map((r) => r.member_id));
  }
  for (const ids of slices(change.add ?? [])) {
    const added = await tx
      .insertInto('scim_group_members')
      .values(ids.map((member_id) => ({ tenant_id: tenantId, group_id: groupId, member_id })))
      .onConflict((oc) => oc.doNothing())
      .returning('member_id')
      .execute();
    changed.push(...added.map((r) => r.member_id));
  }
  if (changed.length > 0) await tx.updateTable('scim_groups').set({ updated_at: sql`now()` }).where('tenant_id', '=', tenantId).where('id', '=', groupId).execute();
  return [...new Set(changed)];
}

const higher = (a: Role | null, b: Role): Role => (a === null || isPromotion(a, b) ? b : a);

/**
 * Gives each of these SCIM Users the role their mapped groups now carry (the highest), or the
 * tenant's scimDefaultRole when they are in none. Owners are left alone.
 */
export async function syncGroupRoles(tx: Tx, tenantId: string, scimIds: readonly string[], record: RecordEvent, skipUserId?: string): Promise<void> {
  const ids = [...new Set(scimIds)];
  if (ids.length === 0) return;
  // One sync of a tenant at a time, each reading what the one before committed: two concurrent
  // changes (a member leaving the admin group while another group is mapped) must not both
  // compute from the state before either, or the last writer leaves a stale role.
  await sql`select pg_advisory_xact_lock(hashtextextended(${`cn_scim_roles:${tenantId}`}, 0))`.execute(tx);
  // Set-based, so mapping a group of every employee is a handful of statements, not two per person.
  const mapped = await tx
    .selectFrom('scim_group_members as m')
    .innerJoin('scim_groups as g', (join) => join.onRef('g.tenant_id', '=', 'm.tenant_id').onRef('g.id', '=', 'm.group_id'))
    .select(['m.member_id', 'g.role', 'g.display_name'])
    .where('m.tenant_id', '=', tenantId)
    .where(sql<boolean>`m.member_id in (select value::uuid from jsonb_array_elements_text(${JSON.stringify(ids)}::jsonb))`)
    .where('g.role', 'is not', null)
    .execute();
  const settings = await tx.selectFrom('tenant_settings').select('scim_default_role').where('tenant_id', '=', tenantId).executeTakeFirst();
  const fallback = (settings?.scim_default_role ?? 'member') as Role;
  const groupsOf = new Map<string, { role: Role | null; groups: string[] }>();
  for (const row of mapped) {
    const entry = groupsOf.get(row.member_id) ?? { role: null, groups: [] };
    entry.role = higher(entry.role, row.role!);
    entry.groups.push(row.display_name);
    groupsOf.set(row.member_id, entry);
  }
  const users = await usersById(tx, tenantId, ids);
  const targets = ids.flatMap((id) => {
    const user = users.get(id);
    const entry = groupsOf.get(id);
    return user ? [{ id, userId: user.user_id, role: entry?.role ?? fallback, metadata: { groups: (entry?.groups ?? []).sort(), via: 'scim' } }] : [];
  });

  const linked = targets.filter((target) => target.userId !== null && target.userId !== skipUserId);
  const current = linked.length === 0 ? [] : (await sql<{ user_id: string; role: Role }>`
    select user_id, role from memberships
    where tenant_id = ${tenantId} and user_id in (select value::uuid from jsonb_array_elements_text(${JSON.stringify(linked.map((target) => target.userId))}::jsonb))
    for update`.execute(tx)).rows;
  const before = new Map(current.map((row) => [row.user_id, row.role]));
  const changes = linked.flatMap((target) => {
    const was = before.get(target.userId!);
    return was !== undefined && was !== OWNER_ROLE && was !== target.role ? [{ ...target, userId: target.userId!, before: was, promoted: isPromotion(was, target.role) }] : [];
  });
  if (changes.length > 0) {
    await sql`
      update memberships m set role = v.role
      from jsonb_to_recordset(${JSON.stringify(changes.map((c) => ({ user_id: c.userId, role: c.role })))}::jsonb) as v(user_id uuid, role text)
      where m.tenant_id = ${tenantId} and m.user_id = v.user_id`.execute(tx);
    await signOutOfTenant(tx, tenantId, changes.filter((c) => c.promoted).map((c) => c.userId));
    for (const c of changes) {
      await record({ action: 'member.role_changed', target: { type: 'user', id: c.userId }, metadata: { before: c.before, after: c.role, signedOut: c.promoted, ...c.metadata } });
    }
  }

  // Pending resources: the invitation they will accept carries the role.
  const pending = targets.filter((target) => target.userId === null);
  if (pending.length === 0) return;
  const { rows: invited } = await sql<{ scim_id: string; invitation_id: string; before: Role; after: Role }>`
    with old as (
      select s.id as scim_id, i.id as invitation_id, i.role as before, v.role as after
      from scim_users s
      join invitations i on i.tenant_id = s.tenant_id and i.id = s.invitation_id
      join jsonb_to_recordset(${JSON.stringify(pending.map((p) => ({ id: p.id, role: p.role })))}::jsonb) as v(id uuid, role text) on v.id = s.id
      where s.tenant_id = ${tenantId} and i.accepted_at is null and i.revoked_at is null and i.role <> v.role
      for update of i
    )
    update invitations i set role = old.after from old
    where i.tenant_id = ${tenantId} and i.id = old.invitation_id
    returning old.scim_id, old.invitation_id, old.before, old.after`.execute(tx);
  const metadataOf = new Map(pending.map((p) => [p.id, p.metadata]));
  for (const row of invited) {
    await record({ action: 'member.role_changed', target: { type: 'invitation', id: row.invitation_id }, metadata: { before: row.before, after: row.after, ...metadataOf.get(row.scim_id) } });
  }
}

/** The groups each of these SCIM Users belongs to (the User resource's read-only `groups`). */
export async function groupsOfUsers(tx: Tx, tenantId: string, scimIds: readonly string[], baseUrl: string): Promise<Map<string, { value: string; display: string; $ref: string }[]>> {
  const out = new Map<string, { value: string; display: string; $ref: string }[]>();
  if (scimIds.length === 0) return out;
  const rows = await tx
    .selectFrom('scim_group_members as m')
    .innerJoin('scim_groups as g', (join) => join.onRef('g.tenant_id', '=', 'm.tenant_id').onRef('g.id', '=', 'm.group_id'))
    .select(['m.member_id', 'g.id', 'g.display_name'])
    .where('m.tenant_id', '=', tenantId)
    .where(sql<boolean>`m.member_id in (select value::uuid from jsonb_array_elements_text(${JSON.stringify(scimIds)}::jsonb))`)
    .orderBy('g.display_name')
    .execute();
  for (const row of rows) {
    const entry = { value: row.id, display: row.display_name, $ref: `${baseUrl}/scim/v2/Groups/${row.id}` };
    const list = out.get(row.member_id);
    if (list) list.push(entry);
    else out.set(row.member_id, [entry]);
  }
  return out;
}

/** Groups' side of a SCIM User leaving: they are no longer anyone's member. */
export async function leaveGroups(tx: Tx, tenantId: string, scimId: string): Promise<void> {
  await tx.deleteFrom('scim_group_members').where('tenant_id', '=', tenantId).where('member_id', '=', scimId).execute();
}

const OneParams = Type.Object({ attributes: Type.Optional(Type.String({ maxLength: 500 })), excludedAttributes: Type.Optional(Type.String({ maxLength: 500 })) });

const withoutMembers = (query: Record<string, string>) => /(^|,)\s*members\s*(,|$)/i.test(query.excludedAttributes ?? '');

/** The SCIM Group routes; `scim` is the Users module's wrapper (token, tenant transaction, SCIM errors). */
export function groupRoutes(scim: (route: ScimRoute) => RouteDefinition, baseUrl: string): RouteDefinition[] {
  const scimRecord =
    (ctx: Parameters<ScimRoute['work']>[0]): RecordEvent =>
    (event) =>
      recordTenantEvent(ctx.tx, ctx.caller.tenantId, ctx.actor, ctx.meta, { ...event, metadata: { ...event.metadata, via: 'scim' } });
  const groupEvent = (ctx: Parameters<ScimRoute['work']>[0], action: string, group: { id: string; display_name: string }, metadata: Record<string, unknown> = {}) =>
    scimRecord(ctx)({ action, target: { type: 'scim_group', id: group.id }, metadata: { displayName: group.display_name, ...metadata } });

  const render = async (tx: Tx, tenantId: string, group: StoredGroup, withMembers: boolean) =>
    groupResource(group, withMembers ? await usersById(tx, tenantId, group.members) : new Map(), baseUrl, withMembers);

  /** A group's change, audited only when something changed (name, externalId or members). */
  const updated = async (ctx: Parameters<ScimRoute['work']>[0], group: StoredGroup, next: { name: string; externalId: string | null }, changed: readonly string[]) => {
    if (next.name === group.display_name && next.externalId === group.external_id && changed.length === 0) return;
    const metadata = { ...(next.name === group.display_name ? {} : { renamedFrom: group.display_name }), ...(next.externalId === group.external_id ? {} : { externalId: next.externalId }), membersChanged: changed.length };
    await groupEvent(ctx, 'scim_group.updated', { id: group.id, display_name: next.name }, metadata);
  };

  /** Membership changes of a mapped group move roles; an unmapped group's carry none. */
  const afterMembership = async (ctx: Parameters<ScimRoute['work']>[0], group: StoredGroup, changed: readonly string[]) => {
    if (group.role !== null) await syncGroupRoles(ctx.tx, ctx.caller.tenantId, changed, scimRecord(ctx));
  };

  return [
    scim({
      method: 'GET',
      url: '/scim/v2/Groups',
      summary: 'SCIM: the groups the IdP pushed (filter: displayName, externalId or id eq, optionally and members[value eq]; startIndex and count paging)',
      schema: { querystring: ListParams },
      work: async ({ tx, caller, query }) => {
        let member: string | undefined;
        let keep: (g: StoredGroup) => boolean = () => true;
        if (query.filter) {
          const match = /^\s*(displayName|externalId|id)\s+eq\s+"((?:[^"\\]|\\.)*)"(?:\s+and\s+members\[\s*value\s+eq\s+"((?:[^"\\]|\\.)*)"\s*\])?\s*$/i.exec(query.filter);
          if (!match) throw new ScimError(400, 'Supported filters: displayName eq "…", externalId eq "…", id eq "…", each optionally followed by and members[value eq "…"]', 'invalidFilter');
          const attribute = match[1]!.toLowerCase();
          const value = filterValue(match[2]!);
          member = match[3] === undefined ? undefined : filterValue(match[3]).toLowerCase();
          // An id that is no UUID names no member: nothing matches.
          if (member !== undefined && !isUuid(member)) member = '00000000-0000-0000-0000-000000000000';
          keep = (g) => (attribute === 'displayname' ? g.display_name.toLowerCase() === value.toLowerCase() : attribute === 'externalid' ? g.external_id === value : g.id === value.toLowerCase());
        }
        const groups = (await loadGroups(tx, caller.tenantId, member === undefined ? {} : { member })).filter(keep);
        const { startIndex, offset, limit } = pageOf(query);
        const wanted = groups.slice(offset, offset + limit);
        const page = withoutMembers(query) || wanted.length === 0 ? wanted : await loadGroups(tx, caller.tenantId, { ids: wanted.map((g) => g.id), withMembers: true });
        const users = withoutMembers(query) ? new Map<string, StoredUser>() : await usersById(tx, caller.tenantId, page.flatMap((g) => g.members));
        return { status: 200, body: listResponse(page, groups.length, startIndex, (g) => groupResource(g, users, baseUrl, !withoutMembers(query))) };
      },
    }),
    scim({
      method: 'GET',
      url: '/scim/v2/Groups/:id',
      summary: 'SCIM: one group',
      schema: { params: IdParams, querystring: OneParams },
      work: async ({ tx, caller, params, query }) => {
        const group = await findGroup(tx, caller.tenantId, params.id!);
        return { status: 200, body: await render(tx, caller.tenantId, group, !withoutMembers(query)) };
      },
    }),
    scim({
      method: 'POST',
      url: '/scim/v2/Groups',
      summary: 'SCIM: create a group (it carries no role until an admin maps it)',
      work: async (ctx) => {
        const { tx, caller, body } = ctx;
        const { name, externalId, members } = await groupBody(tx, caller.tenantId, body);
        const row = await tx.insertInto('scim_groups').values({ tenant_id: caller.tenantId, display_name: name, external_id: externalId }).returning('id').executeTakeFirstOrThrow();
        await changeMembers(tx, caller.tenantId, row.id, { add: members });
        await groupEvent(ctx, 'scim_group.created', { id: row.id, display_name: name }, { members: members.length });
        return { status: 201, body: await render(tx, caller.tenantId, await findGroup(tx, caller.tenantId, row.id), true) };
      },
    }),
    scim({
      method: 'PUT',
      url: '/scim/v2/Groups/:id',
      summary: 'SCIM: replace a group (its name and its whole member list)',
      schema: { params: IdParams },
      work: async (ctx) => {
        const { tx, caller, params, body } = ctx;
        const group = await findGroup(tx, caller.tenantId, params.id!, true);
        const { name, externalId, members: wanted } = await groupBody(tx, caller.tenantId, body, group.id);
        const current = new Set(group.members);
        const next = new Set(wanted);
        await tx.updateTable('scim_groups').set({ display_name: name, external_id: externalId, updated_at: sql`now()` }).where('tenant_id', '=', caller.tenantId).where('id', '=', group.id).execute();
        const changed = await changeMembers(tx, caller.tenantId, group.id, { remove: group.members.filter((m) => !next.has(m)), add: wanted.filter((m) => !current.has(m)) });
        await updated(ctx, group, { name, externalId }, changed);
        await afterMembership(ctx, group, changed);
        return { status: 200, body: await render(tx, caller.tenantId, await findGroup(tx, caller.tenantId, group.id), true) };
      },
    }),
    scim({
      method: 'PATCH',
      url: '/scim/v2/Groups/:id',
      summary: "SCIM: change a group's name or members (Okta's and Entra's PatchOp forms); answers 204",
      schema: { params: IdParams },
      work: async (ctx) => {
        const { tx, caller, params, body } = ctx;
        const group = await findGroup(tx, caller.tenantId, params.id!, true);
        const ids = (value: unknown, mustExist = true) => memberIds(tx, caller.tenantId, value, mustExist);
        let name = group.display_name;
        let externalId = group.external_id;
        // The operations in order: `removeAll` drops every current member, then `add` and `remove` apply.
        const add = new Set<string>();
        const remove = new Set<string>();
        let removeAll = false;
        const addMembers = (ids: readonly string[]) => {
          for (const id of ids) {
            remove.delete(id);
            add.add(id);
          }
        };
        const removeMembers = (ids: readonly string[]) => {
          for (const id of ids) {
            add.delete(id);
            remove.add(id);
          }
        };
        const clearMembers = () => {
          removeAll = true;
          add.clear();
          remove.clear();
        };
        for (const { op, path, value } of patchOperations(body)) {
          const filtered = path === undefined ? null : /^members\[\s*value\s+eq\s+"((?:[^"\\]|\\.)*)"\s*\]$/i.exec(path);
          const target = path?.replace(/^urn:ietf:params:scim:schemas:core:2\.0:Group:/, '').toLowerCase();
          if (filtered) {
            // Okta: remove one member by filter.
            if (op !== 'remove') throw new ScimError(400, 'Only remove may name a member by filter', 'invalidPath');
            const id = filterValue(filtered[1]!).toLowerCase();
            if (!isUuid(id)) throw new ScimError(400, 'A member is named by the value of a User id', 'invalidValue');
            removeMembers([id]);
          } else if (target === 'members') {
            if (op === 'remove' && (value === undefined || value === null)) clearMembers();
            else if (op === 'remove') removeMembers(await ids(value, false));
            else {
              if (op === 'replace') clearMembers();
              addMembers(await ids(value));
            }
          } else if (target === 'displayname') {
            if (op === 'remove') throw new ScimError(400, 'displayName is required', 'mutability');
            name = displayNameOf(value);
          } else if (target === 'externalid') {
            externalId = op === 'remove' ? null : scimString(value, 'externalId');
          } else if (target === undefined) {
            // Okta's rename ({ id, displayName }) and path-less adds of members.
            if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ScimError(400, 'An operation without a path needs an object value', 'invalidValue');
            const v = value as Record<string, unknown>;
            if (v.displayName !== undefined) name = displayNameOf(v.displayName);
            if (v.externalId !== undefined) externalId = scimString(v.externalId, 'externalId');
            if (v.members !== undefined) {
              if (op === 'replace') clearMembers();
              addMembers(await ids(v.members));
            }
          } else if (target !== 'id') {
            throw new ScimError(400, `Unsupported path ${path}`, 'invalidPath');
          }
        }
        if (name !== group.display_name) await assertNameFree(tx, caller.tenantId, name, group.id);
        if (name !== group.display_name || externalId !== group.external_id) {
          await tx.updateTable('scim_groups').set({ display_name: name, external_id: externalId, updated_at: sql`now()` }).where('tenant_id', '=', caller.tenantId).where('id', '=', group.id).execute();
        }
        const current = new Set(group.members);
        const changed = await changeMembers(tx, caller.tenantId, group.id, {
          remove: removeAll ? group.members.filter((m) => !add.has(m)) : [...remove],
          add: [...add].filter((m) => !current.has(m)),
        });
        await updated(ctx, group, { name, externalId }, changed);
        await afterMembership(ctx, group, changed);
        return { status: 204 };
      },
    }),
    scim({
      method: 'DELETE',
      url: '/scim/v2/Groups/:id',
      summary: 'SCIM: delete a group (its members lose the role it carried)',
      schema: { params: IdParams },
      work: async (ctx) => {
        const { tx, caller, params } = ctx;
        const group = await findGroup(tx, caller.tenantId, params.id!, true);
        await tx.deleteFrom('scim_groups').where('tenant_id', '=', caller.tenantId).where('id', '=', group.id).execute();
        await groupEvent(ctx, 'scim_group.deleted', group, { role: group.role, members: group.members.length });
        await afterMembership(ctx, group, group.members);
        return { status: 204 };
      },
    }),
  ];
}

const GroupItem = Type.Object({
  id: Uuid,
  displayName: Type.String(),
  externalId: Type.Union([Type.String(), Type.Null()]),
  role: Type.Union([MappableRole, Type.Null()]),
  members: Type.Integer(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});

function toItem(group: StoredGroup & { member_count: number }) {
  return { id: group.id, displayName: group.display_name, externalId: group.external_id, role: group.role, members: group.member_count, createdAt: group.created_at.toISOString(), updatedAt: group.updated_at.toISOString() };
}

/** The admin's side: see the IdP's groups and map each to a role (admin at most). */
export function groupMappingRoutes(): RouteDefinition[] {
  return [
    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/scim-groups',
      permission: 'members.manage',
      schema: { summary: "The groups the tenant's IdP pushed through SCIM, with the role each is mapped to", tags: ['scim'], params: TenantParams, response: { 200: Type.Object({ items: Type.Array(GroupItem) }) } },
      async handler({ tx, tenantId }) {
        return { items: (await loadGroups(tx, tenantId)).map(toItem) };
      },
    }),
    tenantRoute({
      method: 'PATCH',
      url: '/api/v1/tenants/:tenantId/scim-groups/:groupId',
      permission: 'members.manage',
      schema: {
        summary: "Map a SCIM group to a role (admin at most; null: the group carries none). Its members' roles follow at once.",
        tags: ['scim'],
        params: Type.Object({ tenantId: Uuid, groupId: Uuid }, { additionalProperties: false }),
        body: Type.Object({ role: Type.Union([MappableRole, Type.Null()]) }, { additionalProperties: false }),
        response: { 200: GroupItem },
      },
      async handler({ tx, tenantId, principal, params, body, audit }) {
        const [group] = await loadGroups(tx, tenantId, { id: params.groupId.toLowerCase(), forUpdate: true, withMembers: true });
        if (!group) throw new AppError('not_found');
        if (group.role !== body.role) {
          await tx.updateTable('scim_groups').set({ role: body.role, updated_at: sql`now()` }).where('tenant_id', '=', tenantId).where('id', '=', group.id).execute();
          await audit({ action: 'scim_group.role_mapped', target: { type: 'scim_group', id: group.id }, metadata: { displayName: group.display_name, before: group.role, after: body.role } });
          // Nobody changes their own role (as on the members route): the admin's own role stays until the IdP next moves them.
          await syncGroupRoles(tx, tenantId, group.members, audit, principal.userId);
        }
        const [after] = await loadGroups(tx, tenantId, { id: group.id });
        return toItem(after!);
      },
    }),
  ];
}
