import type { Keyring } from '../../kernel/crypto/envelope.ts';
import Type from 'typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { randomUUID } from 'node:crypto';
import type { Config } from '../../kernel/config/config.ts';
import { recordPlatformEvent, recordTenantEvent } from '../../kernel/audit/record.ts';
import { isUniqueViolation } from '../../kernel/db/database.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { actorOf } from '../../kernel/http/principal.ts';
import { publicRoute, SESSION_COOKIE, setSessionCookie as setCookie, userRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { csrfTokenFor } from '../../kernel/crypto/tokens.ts';
import { OWNER_ROLE } from '../access/index.ts';
import { recordAuthEvent } from './auth-events.ts';
import { accountRoutes } from './account-routes.ts';
import { createLogin } from './login.ts';
import { mfaRoutes } from './mfa-routes.ts';
import { issueUserToken, recoveryRoutes, verificationMail } from './recovery.ts';
import type { Mailer } from '../../kernel/mail/mailer.ts';
import { assertAcceptablePassword, hashPassword } from './passwords.ts';
import { LoginBody, LoginResponse, SessionResponse, SignupBody, SignupResponse } from './schemas.ts';
import { createSession, revokeSession, type IssuedSession } from './sessions.ts';

type IdentityConfig = Pick<Config, 'argon2' | 'signupOpen' | 'isProduction' | 'sessionAbsoluteHours' | 'loginProtection' | 'appUrl'>;

export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

export function identityRoutes(config: IdentityConfig, mailer: Mailer, keyring: Keyring): RouteDefinition[] {
  const { login, throughGate, confirmPassword } = createLogin(config);

  function setSessionCookie(request: FastifyRequest, reply: FastifyReply, session: IssuedSession): void {
    setCookie(request, reply, session, config.isProduction);
  }

  return [
    ...mfaRoutes({ config, setSessionCookie, confirmPassword, keyring }),
    ...accountRoutes({ config, confirmPassword, throughGate, keyring }),
    ...recoveryRoutes({ config, mailer, throughGate }),
    publicRoute({
      method: 'POST',
      url: '/api/v1/auth/signup',
      reason: 'creating an account happens before there is a session',
      status: 201,
      schema: { summary: 'Create an account and its first tenant', tags: ['identity'], body: SignupBody, response: { 201: SignupResponse } },
      async handler({ body, db, meta, request, reply }) {
        if (!config.signupOpen) throw new AppError('auth.signup_closed');
        assertAcceptablePassword(body.password, { email: body.email, name: body.name });
        const passwordHash = await throughGate(() => hashPassword(body.password, config.argon2));
        const email = normalizeEmail(body.email);
        // The tenant id is chosen up front so the whole signup is one transaction in its context.
        const tenantId = randomUUID();
        try {
          const result = await db.withTenant(tenantId, async (tx) => {
            const user = await tx
              .insertInto('users')
              .values({ email, name: body.name.trim(), password_hash: passwordHash, last_login_at: new Date() })
              .returning(['id', 'email', 'name'])
              .executeTakeFirstOrThrow();
            const tenant = await tx.insertInto('tenants').values({ id: tenantId, name: body.tenantName.trim() }).returning(['id', 'name']).executeTakeFirstOrThrow();
            await tx.insertInto('memberships').values({ tenant_id: tenantId, user_id: user.id, role: OWNER_ROLE }).execute();
            const session = await createSession(tx, { userId: user.id, meta, lifetimeHours: config.sessionAbsoluteHours });
            const actor = actorOf({ kind: 'user', userId: user.id, email: user.email, name: user.name, sessionId: session.id, ssoTenantId: null });
            const event = { action: 'auth.signup', target: { type: 'tenant', id: tenantId } };
            await recordTenantEvent(tx, tenantId, actor, meta, event);
            await recordPlatformEvent(tx, actor, meta, { ...event, tenantId });
            const verification = await issueUserToken(tx, user, 'email_verification');
            return { user, tenant, session, verification };
          });
          mailer.sendInBackground(verificationMail(config, result.user.email, result.verification), request.log);
          setSessionCookie(request, reply, result.session);
          return { user: result.user, tenant: result.tenant, csrfToken: result.session.csrfToken };
        } catch (error) {
          if (isUniqueViolation(error)) throw new AppError('auth.email_taken', { cause: error });
          throw error;
        }
      },
    }),

    publicRoute({
      method: 'POST',
      url: '/api/v1/auth/login',
      reason: 'logging in is how a session is obtained',
      schema: { summary: 'Log in with email and password', tags: ['identity'], body: LoginBody, response: { 200: LoginResponse } },
      async handler({ body, db, meta, request, reply }) {
        const result = await login({ db, meta, email: normalizeEmail(body.email), password: body.password });
        if (result.challenge !== undefined) return { status: 'mfa_required', challenge: result.challenge };
        setSessionCookie(request, reply, result.session);
        return { status: 'ok', user: result.user, csrfToken: result.session.csrfToken };
      },
    }),

    userRoute({
      method: 'POST',
      url: '/api/v1/auth/logout',
      status: 204,
      schema: { summary: 'Log out: revoke this session', tags: ['identity'], response: { 204: Type.Null() } },
      async handler({ principal, db, meta, reply }) {
        await db.systemDb({ reason: 'record a logout in the platform log and every tenant of the user' }).transaction(async (tx) => {
          await revokeSession(tx, principal.sessionId);
          await recordAuthEvent(tx, actorOf(principal), meta, { action: 'auth.logout' });
        });
        void reply.clearCookie(SESSION_COOKIE, { path: '/' });
      },
    }),

    userRoute({
      method: 'GET',
      url: '/api/v1/auth/session',
      schema: { summary: 'The current session', tags: ['identity'], response: { 200: SessionResponse } },
      async handler({ principal, db, credential }) {
        const { memberships, verified } = await db.withGlobal(
          async (tx) => ({
            memberships: await tx
              .selectFrom('memberships as m')
              .innerJoin('tenants as t', 't.id', 'm.tenant_id')
              .select(['m.tenant_id as tenantId', 't.name as tenantName', 'm.role'])
              .where('m.user_id', '=', principal.userId)
              .where('m.suspended_at', 'is', null)
              .$if(principal.ssoTenantId !== null, (qb) => qb.where('m.tenant_id', '=', principal.ssoTenantId))
              .orderBy('t.name')
              .execute(),
            verified: await tx.selectFrom('users').select('email_verified_at').where('id', '=', principal.userId).executeTakeFirstOrThrow(),
          }),
          { userId: principal.userId },
        );
        return {
          user: { id: principal.userId, email: principal.email, name: principal.name, emailVerified: verified.email_verified_at !== null },
          memberships,
          csrfToken: csrfTokenFor(credential.token),
        };
      },
    }),
  ];
}
