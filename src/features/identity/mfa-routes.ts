/** Routes of the second factor: enrol, activate, and complete a login. */
import type { FastifyReply, FastifyRequest } from 'fastify';
import Type from 'typebox';
import type { RequestMeta } from '../../kernel/audit/record.ts';
import type { Config } from '../../kernel/config/config.ts';
import type { Database } from '../../kernel/db/database.ts';
import { hashToken, isIssuedToken } from '../../kernel/crypto/tokens.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { actorOf } from '../../kernel/http/principal.ts';
import { publicRoute, userRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { recordAuthEvent } from './auth-events.ts';
import { assertAccountSession, assertRecentAuthentication } from './step-up.ts';
import type { Keyring } from '../../kernel/crypto/envelope.ts';
import { claimStep, issueRecoveryCodes, matchingStep, newTotpSecret, openTotpSecret, sealTotpSecret, totpFor, useRecoveryCode } from './mfa.ts';
import { ActivateBody, ActivateResponse, EnrollResponse, LoginOk, MfaBody, PasswordBody } from './schemas.ts';
import { createSession, type IssuedSession } from './sessions.ts';
import { accountKey, clear, countAttempt, lock, rateLimited } from './throttle.ts';

type MfaConfig = Pick<Config, 'loginProtection' | 'sessionAbsoluteHours'>;

export function mfaRoutes(options: {
  config: MfaConfig;
  keyring: Keyring;
  confirmPassword: (options: { db: Database; meta: RequestMeta; userId: string; password: string }) => Promise<void>;
  setSessionCookie: (request: FastifyRequest, reply: FastifyReply, session: IssuedSession) => void;
}): RouteDefinition[] {
  const { config, setSessionCookie, confirmPassword, keyring } = options;
  const protection = config.loginProtection;
  return [
    userRoute({
      method: 'POST',
      url: '/api/v1/auth/totp/enroll',
      schema: { summary: 'Start TOTP enrollment: a new secret, confirmed by /totp/activate', tags: ['identity'], response: { 200: EnrollResponse } },
      async handler({ db, principal }) {
        assertAccountSession(principal);
        const secret = newTotpSecret();
        await db.withGlobal(async (tx) => {
          await assertRecentAuthentication(tx, principal.sessionId);
          const row = await tx.selectFrom('users').select('mfa_enabled').where('id', '=', principal.userId).executeTakeFirstOrThrow();
          if (row.mfa_enabled) throw new AppError('auth.mfa_already_enabled');
          const sealed = await sealTotpSecret(keyring, tx, principal.userId, 'totp_pending_secret', secret);
          await tx.updateTable('users').set({ totp_pending_secret: null, totp_pending_secret_ct: sealed }).where('id', '=', principal.userId).execute();
        });
        return { secret, otpauthUri: totpFor(secret, principal.email).toString() };
      },
    }),

    userRoute({
      method: 'POST',
      url: '/api/v1/auth/totp/activate',
      schema: { summary: 'Confirm enrollment with a code; returns recovery codes once', tags: ['identity'], body: ActivateBody, response: { 200: ActivateResponse } },
      async handler({ db, principal, body, meta, renewSession }) {
        assertAccountSession(principal);
        return db.systemDb({ reason: 'turn on MFA and record it in every tenant of the user' }).transaction(async (tx) => {
          await assertRecentAuthentication(tx, principal.sessionId);
          const row = await tx.selectFrom('users').select(['mfa_enabled', 'totp_pending_secret', 'totp_pending_secret_ct']).where('id', '=', principal.userId).forUpdate().executeTakeFirstOrThrow();
          if (row.mfa_enabled) throw new AppError('auth.mfa_already_enabled');
          const pendingSecret = await openTotpSecret(keyring, tx, principal.userId, 'totp_pending_secret', { ct: row.totp_pending_secret_ct, plain: row.totp_pending_secret });
          if (!pendingSecret) throw new AppError('auth.mfa_not_enrolled');
          const step = matchingStep(pendingSecret, body.code);
          if (step === null) throw new AppError('auth.mfa_invalid');
          // Sealed again for its new column: the column is part of what the ciphertext is bound to.
          const active = await sealTotpSecret(keyring, tx, principal.userId, 'totp_secret', pendingSecret);
          await tx
            .updateTable('users')
            .set({ totp_secret: null, totp_secret_ct: active, totp_pending_secret: null, totp_pending_secret_ct: null, totp_last_step: step, mfa_enabled: true })
            .where('id', '=', principal.userId)
            .execute();
          const recoveryCodes = await issueRecoveryCodes(tx, principal.userId);
          await recordAuthEvent(tx, actorOf(principal), meta, { action: 'auth.mfa.enrolled', metadata: { method: 'totp' } });
          await renewSession(tx);
          return { recoveryCodes };
        });
      },
    }),

    userRoute({
      method: 'POST',
      url: '/api/v1/auth/totp/disable',
      status: 204,
      schema: { summary: 'Turn two-factor authentication off (needs your password)', tags: ['identity'], body: PasswordBody, response: { 204: Type.Null() } },
      async handler({ db, principal, body, meta, renewSession }) {
        assertAccountSession(principal);
        await confirmPassword({ db, meta, userId: principal.userId, password: body.password });
        await db.systemDb({ reason: 'turn off MFA and record it in every tenant of the user' }).transaction(async (tx) => {
          const updated = await tx
            .updateTable('users')
            .set({ mfa_enabled: false, totp_secret: null, totp_secret_ct: null, totp_pending_secret: null, totp_pending_secret_ct: null, totp_last_step: null })
            .where('id', '=', principal.userId)
            .where('mfa_enabled', '=', true)
            .returning('id')
            .executeTakeFirst();
          if (!updated) throw new AppError('auth.mfa_not_enrolled');
          await tx.deleteFrom('mfa_recovery_codes').where('user_id', '=', principal.userId).execute();
          await recordAuthEvent(tx, actorOf(principal), meta, { action: 'auth.mfa.disabled' });
          await renewSession(tx);
        });
      },
    }),

    userRoute({
      method: 'POST',
      url: '/api/v1/auth/totp/recovery-codes',
      schema: { summary: 'Replace your recovery codes (needs your password); shown once', tags: ['identity'], body: PasswordBody, response: { 200: ActivateResponse } },
      async handler({ db, principal, body, meta }) {
        assertAccountSession(principal);
        await confirmPassword({ db, meta, userId: principal.userId, password: body.password });
        return db.systemDb({ reason: 'replace recovery codes and record it in every tenant of the user' }).transaction(async (tx) => {
          const row = await tx.selectFrom('users').select('mfa_enabled').where('id', '=', principal.userId).executeTakeFirstOrThrow();
          if (!row.mfa_enabled) throw new AppError('auth.mfa_not_enrolled');
          const recoveryCodes = await issueRecoveryCodes(tx, principal.userId);
          await recordAuthEvent(tx, actorOf(principal), meta, { action: 'auth.mfa.recovery_codes_replaced' });
          return { recoveryCodes };
        });
      },
    }),

    publicRoute({
      method: 'POST',
      url: '/api/v1/auth/mfa',
      reason: 'the second step of a login happens before there is a session',
      schema: { summary: 'Complete a login with a TOTP or recovery code', tags: ['identity'], body: MfaBody, response: { 200: LoginOk } },
      async handler({ db, body, meta, request, reply }) {
        const invalid = () => new AppError('auth.mfa_invalid');
        if (!isIssuedToken(body.challenge)) throw invalid();
        const challengeHash = hashToken(body.challenge);
        // 1. Find the pending login and count this attempt against the user (committed even when refused).
        const pending = await db.withGlobal(async (tx) => {
          const found = await tx
            .selectFrom('mfa_challenges as c')
            .innerJoin('users as u', 'u.id', 'c.user_id')
            .select(['c.id', 'u.id as userId', 'u.email', 'u.name', 'u.totp_secret', 'u.totp_secret_ct'])
            .where('c.token_hash', '=', challengeHash)
            .where('c.consumed_at', 'is', null)
            .where('c.expires_at', '>', new Date())
            .executeTakeFirst();
          if (!found) return null;
          const attempt = await countAttempt(tx, accountKey('mfa', found.userId), protection.windowMinutes);
          let refusedUntil = attempt.lockedUntil;
          if (refusedUntil === null && attempt.failures > protection.maxFailures) {
            refusedUntil = (await lock(tx, accountKey('mfa', found.userId), protection.lockMinutes)) ?? new Date(Date.now() + protection.lockMinutes * 60_000);
          }
          return { ...found, failures: attempt.failures, refusedUntil };
        });
        if (pending === null) throw invalid();
        if (pending.refusedUntil !== null) throw rateLimited(pending.refusedUntil);
        const actor = { type: 'user' as const, id: pending.userId, email: pending.email };

        // 2. Check the code, and on success consume the challenge and open the session, atomically.
        const outcome = await db.systemDb({ reason: 'complete an MFA login and record it in every tenant of the user' }).transaction(async (tx) => {
          const secret = await openTotpSecret(keyring, tx, pending.userId, 'totp_secret', { ct: pending.totp_secret_ct, plain: pending.totp_secret });
          const step = secret ? matchingStep(secret, body.code) : null;
          const ok = step !== null ? await claimStep(tx, pending.userId, step) : await useRecoveryCode(tx, pending.userId, body.code);
          if (ok) {
            const consumed = await tx
              .updateTable('mfa_challenges')
              .set({ consumed_at: new Date() })
              .where('id', '=', pending.id)
              .where('consumed_at', 'is', null)
              .returning('id')
              .executeTakeFirst();
            if (consumed) {
              await clear(tx, accountKey('mfa', pending.userId));
              const session = await createSession(tx, { userId: pending.userId, meta, lifetimeHours: config.sessionAbsoluteHours });
              await tx.updateTable('users').set({ last_login_at: new Date() }).where('id', '=', pending.userId).execute();
              await recordAuthEvent(tx, actor, meta, { action: 'auth.mfa.succeeded', metadata: { method: step !== null ? 'totp' : 'recovery_code' } });
              await recordAuthEvent(tx, actor, meta, { action: 'auth.login.succeeded' });
              return { session };
            }
          }
          await recordAuthEvent(tx, actor, meta, { action: 'auth.mfa.failed', outcome: 'failure' });
          if (pending.failures >= protection.maxFailures) {
            const until = await lock(tx, accountKey('mfa', pending.userId), protection.lockMinutes);
            if (until) await recordAuthEvent(tx, actor, meta, { action: 'auth.lockout', outcome: 'denied', metadata: { factor: 'mfa', until: until.toISOString() } });
          }
          return { session: null };
        });
        // A failed check has been recorded (committed); only then is the caller refused.
        if (outcome.session === null) throw invalid();
        setSessionCookie(request, reply, outcome.session);
        return { status: 'ok', user: { id: pending.userId, email: pending.email, name: pending.name }, csrfToken: outcome.session.csrfToken };
      },
    }),
  ];
}
