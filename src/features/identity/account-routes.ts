/** A signed-in user's own credentials: re-authenticate (step-up) and change the password. */
import { sql } from 'kysely';
import Type from 'typebox';
import type { RequestMeta } from '../../kernel/audit/record.ts';
import type { Config } from '../../kernel/config/config.ts';
import type { Database } from '../../kernel/db/database.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { actorOf } from '../../kernel/http/principal.ts';
import { userRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { recordAuthEvent } from './auth-events.ts';
import type { Keyring } from '../../kernel/crypto/envelope.ts';
import { claimStep, matchingStep, openTotpSecret } from './mfa.ts';
import { assertAcceptablePassword, hashPassword } from './passwords.ts';
import { assertAccountSession } from './step-up.ts';

const Password = Type.String({ minLength: 1, maxLength: 1024 });
const ReauthBody = Type.Object({ password: Password, code: Type.Optional(Type.String({ pattern: '^[0-9]{6}$' })) }, { additionalProperties: false });
const ChangePasswordBody = Type.Object({ currentPassword: Password, newPassword: Password }, { additionalProperties: false });

export function accountRoutes(options: {
  config: Pick<Config, 'argon2'>;
  confirmPassword: (options: { db: Database; meta: RequestMeta; userId: string; password: string }) => Promise<void>;
  throughGate: <T>(work: () => Promise<T>) => Promise<T>;
  keyring: Keyring;
}): RouteDefinition[] {
  const { config, confirmPassword, throughGate, keyring } = options;
  return [
    userRoute({
      method: 'POST',
      url: '/api/v1/auth/reauth',
      status: 204,
      schema: { summary: 'Prove it is you again (password, and code when MFA is on) before a sensitive action', tags: ['identity'], body: ReauthBody, response: { 204: Type.Null() } },
      async handler({ db, principal, body, meta, renewSession }) {
        assertAccountSession(principal);
        await confirmPassword({ db, meta, userId: principal.userId, password: body.password });
        const ok = await db.systemDb({ reason: 'step-up authentication recorded in every tenant of the user' }).transaction(async (tx) => {
          const user = await tx.selectFrom('users').select(['mfa_enabled', 'totp_secret', 'totp_secret_ct']).where('id', '=', principal.userId).executeTakeFirstOrThrow();
          if (user.mfa_enabled) {
            const secret = await openTotpSecret(keyring, tx, principal.userId, 'totp_secret', { ct: user.totp_secret_ct, plain: user.totp_secret });
            const step = body.code && secret ? matchingStep(secret, body.code) : null;
            if (step === null || !(await claimStep(tx, principal.userId, step))) {
              await recordAuthEvent(tx, actorOf(principal), meta, { action: 'auth.reauth.failed', outcome: 'failure', metadata: { factor: 'totp' } });
              return false;
            }
          }
          await tx.updateTable('sessions').set({ authenticated_at: sql`now()` }).where('id', '=', principal.sessionId).execute();
          await recordAuthEvent(tx, actorOf(principal), meta, { action: 'auth.reauth.succeeded' });
          await renewSession(tx);
          return true;
        });
        if (!ok) throw new AppError('auth.mfa_invalid');
      },
    }),

    userRoute({
      method: 'POST',
      url: '/api/v1/auth/password',
      status: 204,
      schema: { summary: 'Change your password; your other sessions end', tags: ['identity'], body: ChangePasswordBody, response: { 204: Type.Null() } },
      async handler({ db, principal, body, meta, renewSession }) {
        assertAccountSession(principal);
        assertAcceptablePassword(body.newPassword, { email: principal.email, name: principal.name });
        await confirmPassword({ db, meta, userId: principal.userId, password: body.currentPassword });
        const passwordHash = await throughGate(() => hashPassword(body.newPassword, config.argon2));
        await db.systemDb({ reason: 'change a password, end other sessions, record it in every tenant of the user' }).transaction(async (tx) => {
          await tx.updateTable('users').set({ password_hash: passwordHash }).where('id', '=', principal.userId).execute();
          const ended = await tx
            .updateTable('sessions')
            .set({ revoked_at: sql`now()` })
            .where('user_id', '=', principal.userId)
            .where('id', '!=', principal.sessionId)
            .where('revoked_at', 'is', null)
            .executeTakeFirst();
          await tx.updateTable('sessions').set({ authenticated_at: sql`now()` }).where('id', '=', principal.sessionId).execute();
          await recordAuthEvent(tx, actorOf(principal), meta, { action: 'auth.password.changed', metadata: { otherSessionsEnded: Number(ended.numUpdatedRows) } });
          await renewSession(tx);
        });
      },
    }),
  ];
}
