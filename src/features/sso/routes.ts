/**
 * Per-tenant single sign-on over OpenID Connect: the tenant's configuration (admins, with
 * step-up) and the login itself (/start redirects to the IdP, /callback comes back).
 *
 * Identity rules, because users are global and one tenant's IdP must never reach beyond it:
 * - an IdP identity is (issuer, subject), linked once to one user;
 * - a new link to an existing account by email needs the email's domain verified by this
 *   tenant (DNS TXT), a verified email claim and an allowed domain;
 * - a session the IdP opens reaches only this tenant, and cannot change the account's
 *   password or second factor.
 */
import { sql } from 'kysely';
import Type from 'typebox';
import type { Actor, RequestMeta } from '../../kernel/audit/record.ts';
import { recordPlatformEvent, recordTenantEvent } from '../../kernel/audit/record.ts';
import type { Config } from '../../kernel/config/config.ts';
import type { Keyring } from '../../kernel/crypto/envelope.ts';
import { hashToken, safeEqual } from '../../kernel/crypto/tokens.ts';
import { isUniqueViolation, type Database, type Tx } from '../../kernel/db/database.ts';
import { AppError, notFound } from '../../kernel/http/errors.ts';
import { publicRoute, setSessionCookie, tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { TenantParams, Timestamp } from '../../kernel/http/schemas.ts';
import { countAttempt, createSession, NO_PASSWORD, rateLimited } from '../identity/index.ts';
import { openSso, sealSsoSecret, type SsoRow, type SsoView } from './client-secret.ts';
import { isVerifiedDomain } from './domains.ts';
import { failureReason, type ProviderSettings, type RelyingParty } from './oidc.ts';

const STATE_COOKIE = 'cn_sso_state';
const STATE_COOKIE_PATH = '/api/v1/auth/sso/';
const LOGIN_TTL_MINUTES = 10;
const START_WINDOW_MINUTES = 10;
const STARTS_PER_WINDOW = 100;
/** amr values (RFC 8176) that mean the IdP used more than one factor. */
const MULTI_FACTOR_AMR = new Set(['mfa', 'otp', 'hwk', 'swk', 'sms', 'fpt', 'face', 'iris', 'retina', 'vbm']);

const SsoRole = Type.Union([Type.Literal('admin'), Type.Literal('member'), Type.Literal('viewer')]);
const DomainList = Type.Array(Type.String({ minLength: 3, maxLength: 253, pattern: '^[a-zA-Z0-9.-]+\\.[a-zA-Z]{2,}$' }), { maxItems: 50, uniqueItems: true });

const SsoConfig = Type.Object({
  configured: Type.Boolean(),
  issuer: Type.Union([Type.String(), Type.Null()]),
  clientId: Type.Union([Type.String(), Type.Null()]),
  hasClientSecret: Type.Boolean(),
  allowedDomains: Type.Array(Type.String()),
  defaultRole: SsoRole,
  jitProvisioning: Type.Boolean(),
  enabled: Type.Boolean(),
  redirectUri: Type.String(),
  loginUrl: Type.String(),
  updatedAt: Type.Union([Timestamp, Type.Null()]),
});

const SsoConfigBody = Type.Object(
  {
    issuer: Type.String({ minLength: 8, maxLength: 500 }),
    clientId: Type.String({ minLength: 1, maxLength: 500 }),
    // Required the first time; omitted later, the stored secret is kept.
    clientSecret: Type.Optional(Type.String({ minLength: 1, maxLength: 2000 })),
    allowedDomains: DomainList,
    defaultRole: Type.Optional(SsoRole),
    jitProvisioning: Type.Optional(Type.Boolean()),
    enabled: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

const CallbackQuery = Type.Object(
  {
    code: Type.Optional(Type.String({ maxLength: 4096 })),
    state: Type.Optional(Type.String({ maxLength: 512 })),
    iss: Type.Optional(Type.String({ maxLength: 2048 })),
    error: Type.Optional(Type.String({ maxLength: 256 })),
    error_description: Type.Optional(Type.String({ maxLength: 2048 })),
  },
  // IdPs add their own parameters (session_state, ...): tolerated, passed to the library.
  { additionalProperties: Type.String({ maxLength: 4096 }) },
);

type SsoConfig = Pick<Config, 'appUrl' | 'isProduction' | 'sessionAbsoluteHours' | 'argon2' | 'sso'>;


const SSO_VIEW_COLUMNS = ['issuer', 'client_id', 'allowed_domains', 'default_role', 'jit_provisioning', 'enabled', 'updated_at'] as const;
const SSO_COLUMNS = [...SSO_VIEW_COLUMNS, 'client_secret', 'client_secret_ct'] as const;

async function readSso(keyring: Keyring, tx: Tx, tenantId: string): Promise<SsoRow | undefined> {
  const stored = await tx.selectFrom('tenant_sso').select(SSO_COLUMNS).where('tenant_id', '=', tenantId).executeTakeFirst();
  return stored && openSso(keyring, tx, tenantId, stored);
}

/** The configuration without its secret: what GET shows an admin (nothing to decrypt). */
async function readSsoView(tx: Tx, tenantId: string): Promise<SsoView | undefined> {
  return tx.selectFrom('tenant_sso').select(SSO_VIEW_COLUMNS).where('tenant_id', '=', tenantId).executeTakeFirst();
}

function providerOf(tenantId: string, row: SsoRow): ProviderSettings {
  return { tenantId, issuer: row.issuer, clientId: row.client_id, clientSecret: row.client_secret, updatedAt: new Date(row.updated_at) };
}

/** The configuration as an admin may see it: never the secret. */
function describe(row: SsoView | undefined) {
  return {
    issuer: row?.issuer ?? null,
    clientId: row?.client_id ?? null,
    hasClientSecret: row !== undefined,
    allowedDomains: row?.allowed_domains ?? [],
    defaultRole: row?.default_role ?? 'member',
    jitProvisioning: row?.jit_provisioning ?? false,
    enabled: row?.enabled ?? false,
  };
}

type Outcome =
  | { readonly ok: true; readonly userId: string; readonly email: string; readonly name: string; readonly idpMfa: boolean }
  | { readonly ok: false; readonly error: AppError; readonly actor: Actor; readonly reason: string };

export function ssoRoutes(options: { config: SsoConfig; relyingParty: RelyingParty; keyring: Keyring }): RouteDefinition[] {
  const { config, relyingParty, keyring } = options;
  const redirectUriFor = (tenantId: string) => `${config.appUrl}/api/v1/auth/sso/${tenantId}/callback`;

  /** The configuration as an admin sees it (never the secret), with the URLs to register at the IdP. */
  function present(tenantId: string, row: SsoView | undefined) {
    return {
      configured: row !== undefined,
      ...describe(row),
      redirectUri: redirectUriFor(tenantId),
      loginUrl: `${config.appUrl}/api/v1/auth/sso/${tenantId}/start`,
      updatedAt: row ? new Date(row.updated_at).toISOString() : null,
    };
  }

  function checkIssuer(issuer: string): void {
    if (!URL.canParse(issuer)) throw new AppError('validation.failed', { detail: 'issuer must be a URL' });
    const url = new URL(issuer);
    const httpAllowed = config.sso.allowHttpIssuers && url.protocol === 'http:';
    if (url.protocol !== 'https:' && !httpAllowed) throw new AppError('validation.failed', { detail: 'issuer must be an https:// URL' });
    if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
      throw new AppError('validation.failed', { detail: 'issuer must not carry credentials, a query or a fragment' });
    }
  }

  /**
   * A failure before the state checked out is anyone's request: the platform log only, so
   * strangers cannot fill a tenant's log. After it, the tenant's log too.
   */
  async function recordFailure(db: Database, tenantId: string, actor: Actor, meta: RequestMeta, reason: string, stage: 'before-state' | 'after-state'): Promise<void> {
    const event = { action: 'auth.sso.login.failed', outcome: 'failure' as const, metadata: { reason } };
    await db.withTenant(tenantId, async (tx) => {
      if (stage === 'after-state') await recordTenantEvent(tx, tenantId, actor, meta, event);
      await recordPlatformEvent(tx, actor, meta, { ...event, tenantId });
    });
  }

  /**
   * Finds or creates the user behind the ID token's claims and makes sure they may enter.
   * Nothing is written until every check has passed, and a refusal names no account: the
   * tenant's log (and its IdP) must not learn who has an account here.
   */
  async function admit(tx: Tx, tenantId: string, sso: SsoRow, claims: Record<string, unknown>, meta: RequestMeta): Promise<Outcome> {
    const refuse = (error: AppError, reason: string): Outcome => ({ ok: false, error, actor: { type: 'anonymous', id: null }, reason });
    const subject = typeof claims.sub === 'string' ? claims.sub : null;
    if (subject === null) return refuse(new AppError('auth.sso_failed', { detail: 'The ID token has no subject' }), 'no subject');
    const amr = Array.isArray(claims.amr) ? claims.amr.filter((v): v is string => typeof v === 'string') : [];
    const idpMfa = amr.some((method) => MULTI_FACTOR_AMR.has(method));

    const linked = await tx
      .selectFrom('sso_identities as i')
      .innerJoin('users as u', 'u.id', 'i.user_id')
      .select(['u.id', 'u.email', 'u.name'])
      .where('i.issuer', '=', sso.issuer)
      .where('i.subject', '=', subject)
      .executeTakeFirst();

    // A first sign-in: the address must be verified by the IdP, in an allowed domain, and in
    // a domain this tenant proved it owns. Only then may the IdP create an account or vouch
    // for an existing one (otherwise one tenant's IdP could take over, or squat, anyone's address).
    let email: string | null = linked?.email ?? null;
    if (!linked) {
      email = typeof claims.email === 'string' ? claims.email.trim().toLowerCase() : null;
      if (email === null || !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email) || email.length > 254) {
        return refuse(new AppError('auth.sso_failed', { detail: 'The identity provider did not share a usable email address' }), 'no email');
      }
      if (claims.email_verified !== true) {
        return refuse(new AppError('auth.sso_failed', { detail: 'The identity provider has not verified this email address' }), 'email not verified');
      }
      const domain = email.slice(email.lastIndexOf('@') + 1);
      if (!sso.allowed_domains.includes(domain)) {
        return refuse(new AppError('auth.sso_failed', { detail: 'This email domain is not allowed for this tenant' }), `domain ${domain} not allowed`);
      }
      if (!(await isVerifiedDomain(tx, tenantId, email))) {
        return refuse(new AppError('auth.sso_link_refused'), `domain ${domain} not verified by this tenant`);
      }
    }
    const existing = linked ?? (await tx.selectFrom('users').select(['id', 'email', 'name']).where('email', '=', email!).executeTakeFirst());
    const membership = existing
      ? await tx.selectFrom('memberships').select('role').where('tenant_id', '=', tenantId).where('user_id', '=', existing.id).executeTakeFirst()
      : undefined;
    if (!membership && !sso.jit_provisioning) return refuse(new AppError('auth.sso_not_member'), 'not a member and just-in-time provisioning is off');

    let user = existing;
    if (!user) {
      const name = typeof claims.name === 'string' && claims.name.trim() !== '' ? claims.name.trim().slice(0, 200) : email!;
      user = await tx.insertInto('users').values({ email: email!, name, password_hash: NO_PASSWORD, email_verified_at: new Date() }).returning(['id', 'email', 'name']).executeTakeFirstOrThrow();
    }
    const actor: Actor = { type: 'user', id: user.id, email: user.email };
    if (!linked) {
      await tx.insertInto('sso_identities').values({ issuer: sso.issuer, subject, user_id: user.id, tenant_id: tenantId }).execute();
      await recordTenantEvent(tx, tenantId, actor, meta, {
        action: 'auth.sso.identity_linked',
        target: { type: 'user', id: user.id },
        metadata: { issuer: sso.issuer, subject, newAccount: !existing },
      });
    }
    if (!membership) {
      await tx.insertInto('memberships').values({ tenant_id: tenantId, user_id: user.id, role: sso.default_role }).execute();
      await recordTenantEvent(tx, tenantId, actor, meta, { action: 'member.joined', target: { type: 'user', id: user.id }, metadata: { role: sso.default_role, via: 'sso' } });
    }
    return { ok: true, userId: user.id, email: user.email, name: user.name, idpMfa };
  }

  return [
    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/sso',
      permission: 'sso.manage',
      schema: { summary: "The tenant's single sign-on configuration (the client secret is never returned)", tags: ['sso'], params: TenantParams, response: { 200: SsoConfig } },
      async handler({ tx, tenantId }) {
        return present(tenantId, await readSsoView(tx, tenantId));
      },
    }),

    tenantRoute({
      method: 'PUT',
      url: '/api/v1/tenants/:tenantId/sso',
      permission: 'sso.configure',
      stepUp: true,
      schema: { summary: 'Configure single sign-on (needs a recent authentication)', tags: ['sso'], params: TenantParams, body: SsoConfigBody, response: { 200: SsoConfig } },
      async handler({ tx, tenantId, body, audit }) {
        checkIssuer(body.issuer);
        const before = await readSso(keyring, tx, tenantId);
        // The stored secret is kept only for the same IdP and client: never handed to a new issuer.
        const sameClient = before !== undefined && before.issuer === body.issuer && before.client_id === body.clientId;
        const secret = body.clientSecret ?? (sameClient ? before.client_secret : undefined);
        if (secret === undefined) throw new AppError('validation.failed', { detail: 'clientSecret is required when the issuer or client id is new' });
        const values = {
          issuer: body.issuer,
          client_id: body.clientId,
          client_secret: null,
          client_secret_ct: await sealSsoSecret(keyring, tx, tenantId, secret),
          allowed_domains: body.allowedDomains.map((d) => d.toLowerCase()),
          default_role: body.defaultRole ?? before?.default_role ?? 'member',
          jit_provisioning: body.jitProvisioning ?? before?.jit_provisioning ?? false,
          enabled: body.enabled ?? before?.enabled ?? true,
        };
        if (!values.enabled) await assertNotRequired(tx, tenantId);
        const row = await tx
          .insertInto('tenant_sso')
          .values({ tenant_id: tenantId, ...values })
          .onConflict((oc) => oc.column('tenant_id').doUpdateSet({ ...values, updated_at: sql`date_trunc('milliseconds', now())` }))
          .returning(SSO_VIEW_COLUMNS)
          .executeTakeFirstOrThrow();
        await audit({
          action: 'sso.configured',
          target: { type: 'tenant', id: tenantId },
          metadata: { before: before ? describe(before) : null, after: describe(row), clientSecretChanged: body.clientSecret !== undefined && body.clientSecret !== before?.client_secret },
        });
        return present(tenantId, row);
      },
    }),

    tenantRoute({
      method: 'DELETE',
      url: '/api/v1/tenants/:tenantId/sso',
      permission: 'sso.configure',
      stepUp: true,
      status: 204,
      schema: { summary: 'Remove single sign-on (needs a recent authentication; not while the tenant requires it)', tags: ['sso'], params: TenantParams, response: { 204: Type.Null() } },
      async handler({ tx, tenantId, audit }) {
        await assertNotRequired(tx, tenantId);
        const row = await tx.deleteFrom('tenant_sso').where('tenant_id', '=', tenantId).returning(SSO_VIEW_COLUMNS).executeTakeFirst();
        if (!row) throw notFound();
        await audit({ action: 'sso.removed', target: { type: 'tenant', id: tenantId }, metadata: { before: describe(row) } });
      },
    }),

    publicRoute({
      method: 'GET',
      url: '/api/v1/auth/sso/:tenantId/start',
      reason: 'single sign-on is how a person without a session gets one',
      status: 302,
      schema: { summary: "Start signing in through the tenant's identity provider (redirects there)", tags: ['sso'], params: TenantParams, response: { 302: Type.Null() } },
      async handler({ db, params, request, reply, meta }) {
        const tenantId = params.tenantId.toLowerCase();
        const sso = await db.withTenant(tenantId, (tx) => readSso(keyring, tx, tenantId));
        if (!sso?.enabled) throw notFound();
        // Each start stores a pending login: bounded per address and tenant, so nobody can fill the
        // table, and probing other tenants does not use up this tenant's allowance.
        const attempt = await db.withGlobal((tx) => countAttempt(tx, `sso-start:${tenantId}:${meta.ip ?? 'unknown'}`, START_WINDOW_MINUTES));
        if (attempt.failures > STARTS_PER_WINDOW) throw rateLimited(new Date(Date.now() + START_WINDOW_MINUTES * 60_000));
        // Discovery is a network call: never inside a transaction.
        const login = await relyingParty.authorizationUrl(providerOf(tenantId, sso), redirectUriFor(tenantId));
        await db.withTenant(tenantId, async (tx) => {
          await tx.deleteFrom('sso_logins').where('tenant_id', '=', tenantId).where('expires_at', '<', sql<Date>`now() - interval '1 day'`).execute();
          await tx
            .insertInto('sso_logins')
            .values({
              tenant_id: tenantId,
              state_hash: hashToken(login.state),
              code_verifier: login.codeVerifier,
              nonce: login.nonce,
              expires_at: new Date(Date.now() + LOGIN_TTL_MINUTES * 60_000),
            })
            .execute();
        });
        // Binds the login to this browser: a callback carrying someone else's state is refused (login CSRF).
        void reply.setCookie(STATE_COOKIE, login.state, {
          httpOnly: true,
          sameSite: 'lax',
          path: STATE_COOKIE_PATH,
          secure: request.protocol === 'https' || config.isProduction,
          maxAge: LOGIN_TTL_MINUTES * 60,
        });
        void reply.header('location', login.url.href);
        return null;
      },
    }),

    publicRoute({
      method: 'GET',
      url: '/api/v1/auth/sso/:tenantId/callback',
      reason: "the identity provider sends the browser back here before there is a session",
      status: 302,
      schema: { summary: 'Where the identity provider returns; opens a session and redirects to the app', tags: ['sso'], params: TenantParams, querystring: CallbackQuery, response: { 302: Type.Null() } },
      async handler({ db, params, query, request, reply, meta }) {
        const tenantId = params.tenantId.toLowerCase();
        const anonymous: Actor = { type: 'anonymous', id: null };
        let stage: 'before-state' | 'after-state' = 'before-state';
        const fail = async (error: AppError, reason: string, actor: Actor = anonymous): Promise<never> => {
          await recordFailure(db, tenantId, actor, meta, reason, stage);
          void reply.clearCookie(STATE_COOKIE, { path: STATE_COOKIE_PATH });
          throw error;
        };
        if (query.error !== undefined) {
          const code = query.error.replace(/[^a-z_]/g, '').slice(0, 64);
          return fail(new AppError('auth.sso_failed', { detail: `The identity provider answered: ${code}` }), `idp error ${code}`);
        }
        const state = query.state;
        const cookieState = request.cookies[STATE_COOKIE];
        if (state === undefined || query.code === undefined) return fail(new AppError('auth.sso_failed', { detail: 'The callback lacks code or state' }), 'missing code or state');
        if (typeof cookieState !== 'string' || !safeEqual(cookieState, state)) {
          return fail(new AppError('auth.sso_failed', { detail: 'This sign-in was not started in this browser' }), 'state does not match the browser');
        }
        // Single use: the login row is consumed before the code is redeemed.
        const pending = await db.withTenant(tenantId, async (tx) => {
          const login = await tx
            .updateTable('sso_logins')
            .set({ consumed_at: sql`now()` })
            .where('tenant_id', '=', tenantId)
            .where('state_hash', '=', hashToken(state))
            .where('consumed_at', 'is', null)
            .where('expires_at', '>', sql<Date>`now()`)
            .returning(['code_verifier', 'nonce'])
            .executeTakeFirst();
          return login ? { login, sso: await readSso(keyring, tx, tenantId) } : null;
        });
        if (!pending) return fail(new AppError('auth.sso_failed', { detail: 'Unknown, used or expired sign-in; start again' }), 'unknown, used or expired state');
        stage = 'after-state';
        const { login, sso } = pending;
        if (!sso?.enabled) return fail(new AppError('auth.sso_failed', { detail: 'Single sign-on is not enabled for this tenant' }), 'sso disabled');

        // The library checks issuer (including the iss parameter), audience, signature, expiry, nonce, state and PKCE.
        const callbackUrl = new URL(redirectUriFor(tenantId));
        for (const [key, value] of Object.entries(query)) if (typeof value === 'string') callbackUrl.searchParams.set(key, value);
        let claims: Record<string, unknown>;
        try {
          claims = await relyingParty.redeem(providerOf(tenantId, sso), callbackUrl, { codeVerifier: login.code_verifier, state, nonce: login.nonce });
        } catch (error) {
          return fail(error instanceof AppError ? error : new AppError('auth.sso_failed', { cause: error }), failureReason(error));
        }

        const signIn = db.withTenant(tenantId, async (tx) => {
          const outcome = await admit(tx, tenantId, sso, claims, meta);
          if (!outcome.ok) return { outcome, session: null };
          const session = await createSession(tx, { userId: outcome.userId, meta, lifetimeHours: config.sessionAbsoluteHours, sso: { tenantId, idpMfa: outcome.idpMfa } });
          await tx.updateTable('users').set({ last_login_at: new Date() }).where('id', '=', outcome.userId).execute();
          const actor: Actor = { type: 'user', id: outcome.userId, email: outcome.email };
          const event = { action: 'auth.sso.login.succeeded', metadata: { issuer: sso.issuer, idpMfa: outcome.idpMfa } };
          await recordTenantEvent(tx, tenantId, actor, meta, event);
          await recordPlatformEvent(tx, actor, meta, { ...event, tenantId });
          return { outcome, session };
        });
        let result: Awaited<typeof signIn>;
        try {
          result = await signIn;
        } catch (error) {
          // Two callbacks racing to create the same account or link: one wins, the other starts over.
          if (!isUniqueViolation(error)) throw error;
          return fail(new AppError('auth.sso_failed', { detail: 'Another sign-in for this identity was completing; start again', cause: error }), 'concurrent first sign-in');
        }
        if (!result.outcome.ok) return fail(result.outcome.error, result.outcome.reason, result.outcome.actor);
        setSessionCookie(request, reply, result.session!, config.isProduction);
        void reply.clearCookie(STATE_COOKIE, { path: STATE_COOKIE_PATH });
        void reply.header('location', `${config.appUrl}/`);
        return null;
      },
    }),
  ];
}

async function assertNotRequired(tx: Tx, tenantId: string): Promise<void> {
  const settings = await tx.selectFrom('tenant_settings').select('require_sso').where('tenant_id', '=', tenantId).executeTakeFirst();
  if (settings?.require_sso) throw new AppError('sso.in_use');
}
