/**
 * The route registry. Every route declares its access; the guard enforces it before the
 * handler runs. Tenant routes get their transaction from withTenant and their principal
 * from one query inside it: the membership is read fresh on every request, so a removed
 * member or a revoked session is refused on the very next request.
 */
import { sealTenantLog } from '../audit/sealer.ts';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Readable } from 'node:stream';
import type { Static, TSchema } from 'typebox';
import type { Compilable } from 'kysely';
import { StrictEntryRefusedError, type Database, type QueryCompiler, type TenantCaller, type TenantKeyCaller, type Tx } from '../db/database.ts';
import { recordPlatformEvent, recordTenantEvent, type Actor, type AuditEvent, type RequestMeta } from '../audit/record.ts';
import { csrfTokenFor, generateToken, hashToken, isIssuedToken, safeEqual } from '../crypto/tokens.ts';
import { AppError } from './errors.ts';
import { compilePrefetch, type PrefetchTemplate } from './prefetch-template.ts';
import { ipAllowed, normalizeIp } from './ip-allowlist.ts';
import { ReadMeter } from './read-meter.ts';
import { DEFAULT_ALERT_THRESHOLDS, type AlertThresholds } from '../config/config.ts';
import {
  actorOf,
  type Authenticator,
  type Authorizer,
  type Credential,
  type TenantPrincipal,
  type UserPrincipal,
} from './principal.ts';

/** The request's address as the tenant entry compares it with the allow-list (IPv4-mapped IPv6 as IPv4). */
const clientIp = (ip: string | null) => (ip === null ? null : normalizeIp(ip));

export const SESSION_COOKIE = 'cn_session';

export type Access =
  | { readonly kind: 'public'; readonly reason: string }
  | { readonly kind: 'authenticated' }
  | { readonly kind: 'tenant'; readonly permission: string };

export interface RouteSchema {
  readonly summary: string;
  readonly tags?: readonly string[];
  readonly params?: TSchema;
  readonly querystring?: TSchema;
  readonly body?: TSchema;
  /** Output allow-list: only declared fields are serialised. */
  readonly response: Readonly<Record<number, TSchema>>;
}

type In<S extends RouteSchema, K extends 'params' | 'querystring' | 'body'> = S[K] extends TSchema ? Static<S[K]> : undefined;

interface BaseContext<S extends RouteSchema> {
  readonly request: FastifyRequest;
  readonly reply: FastifyReply;
  readonly params: In<S, 'params'>;
  readonly query: In<S, 'querystring'>;
  readonly body: In<S, 'body'>;
  readonly meta: RequestMeta;
}

export interface PublicContext<S extends RouteSchema> extends BaseContext<S> {
  readonly db: Database;
}

/** No transaction is open here: the handler opens the one it needs (never one inside another). */
export interface UserContext<S extends RouteSchema> extends BaseContext<S> {
  readonly principal: UserPrincipal;
  readonly credential: Credential & { kind: 'session' };
  readonly db: Database;
  /**
   * Gives this session a new token inside tx (no fixation across a privilege change: a
   * planted or leaked old token stops working). The new cookie and its CSRF token (response
   * header x-csrf-token) are sent only if the handler succeeds.
   */
  renewSession(tx: Tx): Promise<void>;
}

export interface TenantContext<S extends RouteSchema, R = never> extends BaseContext<S> {
  readonly principal: TenantPrincipal;
  readonly tenantId: string;
  readonly tx: Tx;
  /** The rows of the route's prefetch query, read in this transaction after the guard let the caller in. */
  readonly prefetched: readonly R[];
  /** Records an event in this tenant's log, in this transaction, with the caller as actor. */
  audit(event: AuditEvent): Promise<void>;
  /**
   * For a streamed answer: runs fn in a new transaction of this tenant, once the handler has
   * returned and the request's own transaction has committed (each chunk of an export).
   */
  readLater<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  /**
   * For a streamed answer: counts records served to the caller (each chunk of an export), as
   * the registry counts a JSON answer's; crossing ALERT_LARGE_READ_RECORDS is audited.
   */
  countRead(records: number): Promise<void>;
}

interface RouteBase<S extends RouteSchema> {
  readonly method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
  readonly url: string;
  readonly schema: S;
  /** Status of a successful response (default 200; 204 sends no body). */
  readonly status?: number;
  /** A GET with a side effect (an audited export) gets no automatic HEAD twin. */
  readonly noHead?: boolean;
  /** Tenant routes: the caller must have proved who they are recently (step-up); API keys never can. */
  readonly stepUp?: boolean;
  /** Tenant routes that read the audit log: the tenant's pending events are sealed first, so the reader sees what they caused. */
  readonly sealsAudit?: boolean;
}

export type RouteDefinition =
  | (RouteBase<RouteSchema> & { readonly access: Access & { kind: 'public' }; handler(ctx: PublicContext<RouteSchema>): Promise<unknown> })
  | (RouteBase<RouteSchema> & { readonly access: Access & { kind: 'authenticated' }; handler(ctx: UserContext<RouteSchema>): Promise<unknown> })
  | (RouteBase<RouteSchema> & {
      readonly access: Access & { kind: 'tenant' };
      readonly prefetch?: PrefetchBuilder<RouteSchema, unknown>;
      handler(ctx: TenantContext<RouteSchema, unknown>): Promise<unknown>;
    });

/**
 * A read-only route's first query, built from the request alone (no principal): on
 * PostgreSQL it travels in the same message as the tenant entry, behind a strict entry that
 * aborts the transaction unless the caller may proceed (one round trip for the whole read).
 * Elsewhere the registry runs it in the transaction once the guard has let the caller in.
 */
export type PrefetchBuilder<S extends RouteSchema, R> = (input: {
  readonly db: QueryCompiler;
  readonly tenantId: string;
  readonly params: In<S, 'params'>;
  readonly query: In<S, 'querystring'>;
}) => Compilable<R>;

export function publicRoute<S extends RouteSchema>(
  route: RouteBase<S> & { reason: string; handler(ctx: PublicContext<S>): Promise<unknown> },
): RouteDefinition {
  const { reason, ...rest } = route;
  return { ...rest, access: { kind: 'public', reason } } as unknown as RouteDefinition;
}

export function userRoute<S extends RouteSchema>(
  route: RouteBase<S> & { handler(ctx: UserContext<S>): Promise<unknown> },
): RouteDefinition {
  return { ...route, access: { kind: 'authenticated' } } as unknown as RouteDefinition;
}

export function tenantRoute<S extends RouteSchema, R = never>(
  route: RouteBase<S> & { permission: string; prefetch?: PrefetchBuilder<S, R>; handler(ctx: TenantContext<S, R>): Promise<unknown> },
): RouteDefinition {
  const { permission, ...rest } = route;
  if (!rest.url.includes('/tenants/:tenantId')) throw new Error(`tenant route ${rest.url} must contain /tenants/:tenantId`);
  if (rest.prefetch && rest.method !== 'GET') throw new Error(`tenant route ${rest.method} ${rest.url}: only GET routes may prefetch`);
  return { ...rest, access: { kind: 'tenant', permission } } as unknown as RouteDefinition;
}

const UNSAFE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export function requestMeta(request: FastifyRequest): RequestMeta {
  const userAgent = request.headers['user-agent'];
  return { requestId: request.id, ip: request.ip ?? null, userAgent: typeof userAgent === 'string' ? userAgent.slice(0, 512) : null };
}

/** API keys: `cn_` + the tenant id's 32 hex digits + `_` + 43 base64url characters of secret. */
const API_KEY = /^cn_([0-9a-f]{32})_[A-Za-z0-9_-]{43}$/;

export function apiKeyTenant(key: string): string | null {
  const match = API_KEY.exec(key);
  if (!match) return null;
  const hex = match[1]!;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function readCredential(request: FastifyRequest): Credential | null {
  const authorization = request.headers.authorization;
  if (authorization !== undefined) {
    // A program's key; a malformed Authorization header is refused, never ignored.
    const key = /^Bearer (\S+)$/.exec(authorization)?.[1];
    const tenantId = key ? apiKeyTenant(key) : null;
    if (!key || !tenantId) throw new AppError('auth.unauthenticated', { detail: 'Malformed API key' });
    return { kind: 'apikey', token: key, tenantId };
  }
  const token = request.cookies[SESSION_COOKIE];
  // Tokens we issue are 43 base64url characters; anything else cannot be a session.
  if (isIssuedToken(token)) return { kind: 'session', token };
  return null;
}

/**
 * Authentication and CSRF before validation: an anonymous caller gets 401 whatever
 * the body, and a cookie-authenticated unsafe request must prove it came from our UI.
 * API keys are not sent by browsers on their own, so they need no CSRF token.
 */
function preflight(request: FastifyRequest): Credential {
  const credential = readCredential(request);
  if (credential === null) throw new AppError('auth.unauthenticated');
  if (credential.kind === 'session' && UNSAFE_METHODS.has(request.method)) {
    const header = request.headers['x-csrf-token'];
    if (typeof header !== 'string' || !safeEqual(header, csrfTokenFor(credential.token))) {
      throw new AppError('csrf.invalid');
    }
  }
  return credential;
}

export interface RegistryDeps {
  readonly config: { readonly sessionIdleMinutes: number; readonly isProduction: boolean; readonly alerts?: AlertThresholds };
  readonly db: Database;
  readonly authenticator: Authenticator;
  readonly authorizer: Authorizer;
}

type Outcome = { readonly denied: AppError } | { readonly value: unknown };

/** Registers the routes on app. Throws (so startup fails) for a route without a valid access declaration. */
export function registerRoutes(app: FastifyInstance, routes: readonly RouteDefinition[], deps: RegistryDeps): void {
  const { db } = deps;
  const meter = new ReadMeter(deps.config.alerts ?? DEFAULT_ALERT_THRESHOLDS);
  for (const route of routes) {
    assertAccess(route.method, route.url, route.access);
    const prefetch =
      route.access.kind === 'tenant' && 'prefetch' in route && route.prefetch
        ? compilePrefetch(`${route.method} ${route.url}`, route.prefetch as unknown as Parameters<typeof compilePrefetch>[1], db.compiler, !deps.config.isProduction)
        : undefined;
    const { summary, tags, response, ...validation } = route.schema;
    app.route({
      method: route.method,
      url: route.url,
      ...(route.noHead ? { exposeHeadRoute: false } : {}),
      config: { access: route.access },
      schema: { summary, tags: tags ? [...tags] : undefined, response, ...validation },
      ...(route.access.kind === 'public' ? {} : { onRequest: async (request: FastifyRequest) => { request.credential = preflight(request); } }),
      handler: async (request, reply) => {
        const base = {
          request,
          reply,
          params: request.params,
          query: request.query,
          body: request.body,
          meta: requestMeta(request),
        } as BaseContext<RouteSchema>;
        let value: unknown;
        if (route.access.kind === 'public') {
          value = await (route as Extract<RouteDefinition, { access: { kind: 'public' } }>).handler({ ...base, db });
        } else if (route.access.kind === 'authenticated') {
          value = await runUserRoute(route as Extract<RouteDefinition, { access: { kind: 'authenticated' } }>, base, request.credential!, deps);
        } else {
          const outcome = await runTenantRoute(
            route as Extract<RouteDefinition, { access: { kind: 'tenant' } }>,
            base,
            request.credential!,
            deps,
            prefetch,
            meter,
          );
          if ('denied' in outcome) throw outcome.denied;
          value = outcome.value;
        }
        const status = route.status ?? 200;
        reply.code(status);
        return status === 204 || status === 302 ? reply.send() : value;
      },
    });
  }
}

function assertAccess(method: string, url: string, access: Access | undefined): void {
  const ok =
    access !== undefined &&
    ((access.kind === 'public' && typeof access.reason === 'string' && access.reason.trim().length > 0) ||
      access.kind === 'authenticated' ||
      (access.kind === 'tenant' && typeof access.permission === 'string' && access.permission.length > 0 && url.includes('/tenants/:tenantId')));
  if (!ok) throw new Error(`Route ${method} ${url} has no valid access declaration; refusing to start.`);
}

/** Rejects any route added to the server, by us or a plugin, that did not declare its access. */
export function enforceAccessDeclarations(app: FastifyInstance): void {
  app.addHook('onRoute', (options) => {
    // Fastify's automatic HEAD routes copy their GET route's config, so they pass too.
    const access = (options.config as { access?: Access } | undefined)?.access;
    assertAccess(String(options.method), options.url ?? options.path ?? '?', access);
  });
}

async function runUserRoute(
  route: Extract<RouteDefinition, { access: { kind: 'authenticated' } }>,
  base: BaseContext<RouteSchema>,
  credential: Credential,
  deps: RegistryDeps,
): Promise<unknown> {
  if (credential.kind !== 'session') throw new AppError('auth.unauthenticated', { detail: 'API keys work on tenant routes only' });
  const principal = await deps.db.withGlobal((tx) => deps.authenticator.resolveUser(tx, credential));
  if (principal === null) throw new AppError('auth.unauthenticated');
  let renewed: { token: string; expiresAt: Date } | undefined;
  const renewSession = async (tx: Tx) => {
    const token = generateToken();
    const row = await tx
      .updateTable('sessions')
      .set({ token_hash: hashToken(token) })
      .where('id', '=', principal.sessionId)
      .where('revoked_at', 'is', null)
      .returning('expires_at')
      .executeTakeFirst();
    if (!row) throw new AppError('auth.unauthenticated');
    renewed = { token, expiresAt: new Date(row.expires_at) };
  };
  const value = await route.handler({ ...base, principal, credential, db: deps.db, renewSession });
  if (renewed) setSessionCookie(base.request, base.reply, renewed, deps.config.isProduction);
  return value;
}

/** Sets the session cookie and tells the client the session's CSRF token in x-csrf-token. */
export function setSessionCookie(request: FastifyRequest, reply: FastifyReply, session: { token: string; expiresAt: Date }, isProduction: boolean): void {
  void reply.setCookie(SESSION_COOKIE, session.token, {
    httpOnly: true,
    sameSite: 'lax',
    path: '/',
    secure: request.protocol === 'https' || isProduction,
    expires: session.expiresAt,
  });
  void reply.header('x-csrf-token', csrfTokenFor(session.token));
}

/** A resolved caller: the principal, and every role that must allow the permission. */
type Caller =
  | null
  | { role: null; actor: Actor; principal?: undefined; roles?: undefined }
  | { role: string; actor: Actor; principal: TenantPrincipal; roles: readonly string[] };

function sessionCaller(found: TenantCaller, tenantId: string): Caller {
  const actor: Actor = { type: 'user', id: found.userId, email: found.email };
  if (found.role === null) return { role: null, actor };
  return {
    role: found.role,
    actor,
    roles: [found.role],
    principal: { kind: 'user', tenantId, userId: found.userId, email: found.email, name: found.name, role: found.role, sessionId: found.sessionId, apiKeyId: null },
  };
}

function keyCaller(found: TenantKeyCaller, tenantId: string): Caller {
  return {
    role: found.keyRole,
    actor: { type: 'apikey', id: found.keyId },
    // A key acts with its own role, and never beyond what its creator may still do.
    roles: [found.keyRole, found.creatorRole!],
    principal: {
      kind: 'apikey',
      tenantId,
      userId: found.creatorId,
      email: found.creatorEmail,
      name: found.creatorName,
      role: found.keyRole,
      sessionId: null,
      apiKeyId: found.keyId,
    },
  };
}

async function runTenantRoute(
  route: Extract<RouteDefinition, { access: { kind: 'tenant' } }>,
  base: BaseContext<RouteSchema>,
  credential: Credential,
  deps: RegistryDeps,
  prefetch: PrefetchTemplate | undefined,
  meter: ReadMeter,
): Promise<Outcome> {
  const tenantId = (base.params as unknown as { tenantId: string }).tenantId.toLowerCase();
  const { permission } = route.access;
  const denial = (metadata: Record<string, unknown>) => ({
    action: 'access.denied',
    outcome: 'denied' as const,
    metadata: { route: `${route.method} ${route.url}`, permission, ...metadata },
  });
  let principal: TenantPrincipal | undefined;
  let answered = false;
  // Each later read checks the caller again (live session or key, still a member whose role
  // allows the route), so a long download stops at the next chunk once access is withdrawn.
  const readLater = <T>(fn: (tx: Tx) => Promise<T>): Promise<T> => {
    if (!answered) return Promise.reject(new Error('readLater is for streamed answers, after the handler has returned'));
    const withdrawn = () => new AppError('auth.unauthenticated', { detail: 'Access was withdrawn during the download' });
    return deps.db.detached(() =>
      credential.kind === 'session'
        ? deps.db.withTenantSession(tenantId, hashToken(credential.token), deps.config.sessionIdleMinutes, async (tx, found) => {
            const still =
              found && !found.idle && !found.suspended && found.role !== null && deps.authorizer.can(found.role, permission) &&
              (found.ssoTenantId === null || found.ssoTenantId === tenantId) && ipAllowed(found.ipAllowlist, base.meta.ip);
            if (!still) throw withdrawn();
            return fn(tx);
          })
        : deps.db.withTenantKey(tenantId, hashToken(credential.token), async (tx, found) => {
            const still =
              found && found.creatorRole !== null && deps.authorizer.can(found.keyRole, permission) && deps.authorizer.can(found.creatorRole, permission) &&
              ipAllowed(found.ipAllowlist, base.meta.ip);
            if (!still) throw withdrawn();
            return fn(tx);
          }),
    );
  };
  // Records served to this caller: past the threshold within the window, an audited
  // access.bulk_read (after the answer's own transaction, which may have been read-only).
  const countRead = async (records: number): Promise<void> => {
    // Never inside the request's transaction: the event goes in one of its own.
    if (!answered) throw new Error('countRead is for streamed answers, after the handler has returned');
    const member = principal;
    if (member === undefined) return;
    const actor = actorOf(member);
    const volume = meter.add(`${tenantId}|${actor.type}:${actor.id ?? ''}`, records, `${route.method} ${route.url}`);
    if (volume === null) return;
    await deps.db.detached(() =>
      deps.db.withTenant(tenantId, (tx) =>
        recordTenantEvent(tx, tenantId, actor, base.meta, { action: 'access.bulk_read', metadata: { records: volume.records, windowMinutes: volume.windowMinutes, routes: [...volume.routes] } }),
      ),
    );
  };
  const prefetchQuery = prefetch?.(tenantId, base.params as unknown as Record<string, string>, base.query);
  const body = async (tx: Tx, caller: Caller, prefetched?: readonly unknown[]): Promise<Outcome> => {
    if (caller === null) return { denied: new AppError('auth.unauthenticated') };
    if (caller.role === null) {
      // Not a member: the platform log, never the tenant's (it must not learn who else exists).
      await recordPlatformEvent(tx, caller.actor, base.meta, { ...denial({}), tenantId });
      return { denied: new AppError('not_found') };
    }
    principal = caller.principal;
    if (!caller.roles.every((role) => deps.authorizer.can(role, permission))) {
      await recordTenantEvent(tx, tenantId, actorOf(caller.principal), base.meta, denial({ role: caller.role }));
      return { denied: new AppError('access.forbidden') };
    }
    const member = caller.principal;
    if (route.stepUp) await deps.authenticator.assertRecentAuthentication(tx, member.sessionId);
    // Read here unless it came with the entry (only after the checks above let the caller in).
    const rows = prefetchQuery === undefined ? [] : (prefetched ?? (await tx.executeQuery(prefetchQuery)).rows);
    const value = await route.handler({
      ...base,
      principal: member,
      tenantId,
      tx,
      prefetched: rows,
      audit: (event) => recordTenantEvent(tx, tenantId, actorOf(member), base.meta, event),
      readLater,
      countRead,
    });
    return { value };
  };
  try {
    // Sealing is idempotent and bounded by the tenant's pending events, so it may run before the guard.
    if (route.sealsAudit) await sealTenantLog(deps.db, tenantId);
    const outcome = await decide();
    answered = true;
    // A JSON read counts its records (a list's items, else one); a stream counts its own (countRead).
    if ('value' in outcome && route.method === 'GET') await countRead(recordsIn(outcome.value));
    return outcome;
  } catch (error) {
    // A handler's own refusal (say, an admin touching an owner) rolled its transaction
    // back; the denial is still evidence, so it is recorded in a transaction of its own.
    if (error instanceof AppError && error.code === 'access.forbidden' && principal !== undefined) {
      const member = principal;
      await deps.db.withTenant(tenantId, (tx) =>
        recordTenantEvent(tx, tenantId, actorOf(member), base.meta, denial({ role: member.role, reason: error.publicDetail ?? null })),
      );
    }
    throw error;
  }

  async function decide(): Promise<Outcome> {
    if (credential.kind === 'session') {
      const tokenHash = hashToken(credential.token);
      const guard = async (tx: Tx, found: TenantCaller | null, prefetched?: readonly unknown[]): Promise<Outcome> => {
        if (found?.idle) return { denied: new AppError('auth.session_expired') };
        // Suspended (by an admin or SCIM): the membership stays, its access does not.
        if (found?.suspended) {
          await recordTenantEvent(tx, tenantId, { type: 'user', id: found.userId, email: found.email }, base.meta, denial({ reason: 'suspended' }));
          return { denied: new AppError('member.suspended') };
        }
        // A member outside the tenant's allowed networks (non-members still get the 404 below).
        if (found && found.role !== null && !ipAllowed(found.ipAllowlist, base.meta.ip)) {
          await recordTenantEvent(tx, tenantId, { type: 'user', id: found.userId, email: found.email }, base.meta, denial({ role: found.role, reason: 'ip_blocked', ip: base.meta.ip }));
          return { denied: new AppError('access.ip_blocked') };
        }
        // A session another tenant's IdP vouched for is no login here (whatever the membership).
        if (found && found.ssoTenantId !== null && found.ssoTenantId !== tenantId) {
          return { denied: new AppError('auth.unauthenticated', { detail: "This session came from another tenant's single sign-on; sign in again for this tenant" }) };
        }
        // The tenant's MFA and SSO rules bind its members' sessions (API keys are not affected).
        if (found && found.role !== null && found.requireMfa && !found.mfaEnabled) {
          await recordTenantEvent(tx, tenantId, { type: 'user', id: found.userId, email: found.email }, base.meta, denial({ role: found.role, reason: 'mfa_required' }));
          return { denied: new AppError('auth.mfa_required') };
        }
        if (found && found.role !== null && found.requireSso && found.ssoTenantId !== tenantId) {
          const actor: Actor = { type: 'user', id: found.userId, email: found.email };
          // Break-glass: an owner with a second factor keeps a password login, recorded once per session.
          if (!deps.authorizer.isBreakGlassRole(found.role) || !found.mfaEnabled) {
            await recordTenantEvent(tx, tenantId, actor, base.meta, denial({ role: found.role, reason: 'sso_required' }));
            return { denied: new AppError('auth.sso_required', { detail: `Sign in at /api/v1/auth/sso/${tenantId}/start` }) };
          }
          const first = await tx.insertInto('sso_break_glass').values({ tenant_id: tenantId, session_id: found.sessionId }).onConflict((oc) => oc.doNothing()).returning('session_id').executeTakeFirst();
          if (first) await recordTenantEvent(tx, tenantId, actor, base.meta, { action: 'auth.sso.break_glass', target: { type: 'session', id: found.sessionId } });
        }
        return body(tx, found === null ? null : sessionCaller(found, tenantId), prefetched);
      };
      const idle = deps.config.sessionIdleMinutes;
      if (prefetchQuery !== undefined) {
        // The read goes along with a strict entry; anyone it refuses takes the ordinary path,
        // where the guard above decides and records the outcome.
        const roles = deps.authorizer.rolesWith(permission);
        if (roles.length > 0) {
          try {
            return await deps.db.withTenantSession(tenantId, tokenHash, idle, guard, { roles, query: prefetchQuery, clientIp: clientIp(base.meta.ip) });
          } catch (error) {
            if (!(error instanceof StrictEntryRefusedError)) throw error;
          }
        }
      }
      return await deps.db.withTenantSession(tenantId, tokenHash, idle, guard);
    }
    if (credential.tenantId !== tenantId) {
      // A key of another tenant: as for any non-member, 404, recorded for operators only.
      await deps.db.withGlobal((tx) => recordPlatformEvent(tx, { type: 'apikey', id: null }, base.meta, { ...denial({ keyTenantId: credential.tenantId }), tenantId }));
      return { denied: new AppError('not_found') };
    }
    return await deps.db.withTenantKey(tenantId, hashToken(credential.token), async (tx, found) => {
      if (found && found.creatorRole !== null && !ipAllowed(found.ipAllowlist, base.meta.ip)) {
        await recordTenantEvent(tx, tenantId, { type: 'apikey', id: found.keyId }, base.meta, denial({ reason: 'ip_blocked', ip: base.meta.ip }));
        return { denied: new AppError('access.ip_blocked') };
      }
      return body(tx, found === null || found.creatorRole === null ? null : keyCaller(found, tenantId));
    });
  }
}

function recordsIn(value: unknown): number {
  if (value === null || typeof value !== 'object' || value instanceof Readable) return 0;
  const items = (value as { items?: unknown }).items;
  return Array.isArray(items) ? items.length : 1;
}

declare module 'fastify' {
  interface FastifyRequest {
    credential?: Credential;
  }
  interface FastifyContextConfig {
    access?: Access;
  }
}
