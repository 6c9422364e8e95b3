/**
 * Mailed single-use tokens: password reset (30 minutes) and email verification (24 hours).
 * A token is 256 random bits, mailed once and stored only as its SHA-256 digest; consuming
 * it is one conditional UPDATE, so two parallel uses cannot both succeed.
 */
import { sql } from 'kysely';
import Type from 'typebox';
import { recordPlatformEvent } from '../../kernel/audit/record.ts';
import type { Config } from '../../kernel/config/config.ts';
import { generateToken, hashToken, isIssuedToken } from '../../kernel/crypto/tokens.ts';
import type { Tx } from '../../kernel/db/database.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { actorOf } from '../../kernel/http/principal.ts';
import { publicRoute, userRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import type { Mailer } from '../../kernel/mail/mailer.ts';
import { recordAuthEvent } from './auth-events.ts';
import { assertAcceptablePassword, hashPassword } from './passwords.ts';
import { accountKey, clear, countAttempt, rateLimited } from './throttle.ts';

type Purpose = 'password_reset' | 'email_verification';

const LIFETIME_MINUTES: Record<Purpose, number> = { password_reset: 30, email_verification: 24 * 60 };
/** Mails per address and hour: enough for a person, too few to bomb a mailbox. */
const MAILS_PER_HOUR = 3;
/** Reset requests per IP and hour: beyond this the IP is told to slow down (it reveals nothing about accounts). */
const RESET_REQUESTS_PER_IP_HOUR = 30;

const Token = Type.String({ minLength: 1, maxLength: 100 });
const Password = Type.String({ minLength: 1, maxLength: 1024 });
const Accepted = Type.Object({ status: Type.Literal('accepted') });

type RecoveryConfig = Pick<Config, 'argon2' | 'appUrl'>;

/** Creates a token for user, replacing any earlier unused one of the same purpose. */
export async function issueUserToken(tx: Tx, user: { id: string; email: string }, purpose: Purpose): Promise<string> {
  const token = generateToken();
  await tx.deleteFrom('user_tokens').where('user_id', '=', user.id).where('purpose', '=', purpose).where('used_at', 'is', null).execute();
  await tx
    .insertInto('user_tokens')
    .values({
      token_hash: hashToken(token),
      user_id: user.id,
      purpose,
      email: user.email,
      expires_at: new Date(Date.now() + LIFETIME_MINUTES[purpose] * 60_000),
    })
    .execute();
  return token;
}

/** Marks a live token used and returns its owner, or null when it is unknown, expired or used. */
async function consumeUserToken(tx: Tx, token: string, purpose: Purpose): Promise<{ userId: string; email: string } | null> {
  if (!isIssuedToken(token)) return null;
  const row = await tx
    .updateTable('user_tokens')
    .set({ used_at: sql`now()` })
    .where('token_hash', '=', hashToken(token))
    .where('purpose', '=', purpose)
    .where('used_at', 'is', null)
    .where('expires_at', '>', sql<Date>`now()`)
    .returning(['user_id', 'email'])
    .executeTakeFirst();
  return row ? { userId: row.user_id, email: row.email } : null;
}

export function verificationMail(config: Pick<Config, 'appUrl'>, to: string, token: string) {
  return {
    to,
    subject: 'Confirm your email address for CustomerNode',
    // The token rides in the fragment: browsers never send it to a server or in a Referer.
    text: `Confirm that this address is yours:\n\n${config.appUrl}/verify-email#token=${token}\n\nThe link works once, for 24 hours. If you did not sign up for CustomerNode, ignore this mail.\n`,
  };
}

export function recoveryRoutes(options: {
  config: RecoveryConfig;
  mailer: Mailer;
  throughGate: <T>(work: () => Promise<T>) => Promise<T>;
}): RouteDefinition[] {
  const { config, mailer, throughGate } = options;

  /** Counts a mail to address; false when the hourly allowance is used up. */
  async function mayMail(tx: Tx, kind: 'reset' | 'verify', address: string): Promise<boolean> {
    const attempt = await countAttempt(tx, accountKey(kind, address), 60);
    return attempt.failures <= MAILS_PER_HOUR;
  }

  return [
    publicRoute({
      method: 'POST',
      url: '/api/v1/auth/password-reset',
      reason: 'a person who forgot their password has no session',
      status: 202,
      schema: {
        summary: 'Mail a password-reset link (the answer is the same whether or not the address has an account)',
        tags: ['identity'],
        body: Type.Object({ email: Type.String({ format: 'email', maxLength: 254 }) }, { additionalProperties: false }),
        response: { 202: Accepted },
      },
      async handler({ db, body, meta, request }) {
        const email = body.email.trim().toLowerCase();
        const system = db.systemDb({ reason: 'password-reset requests: throttling and events across the tenants of a user' });
        // Only the per-IP count decides the answer (it says nothing about the address).
        const byIp = await system.transaction((tx) => countAttempt(tx, `reset-ip:${meta.ip ?? 'unknown'}`, 60));
        if (byIp.failures > RESET_REQUESTS_PER_IP_HOUR) throw rateLimited(new Date(Date.now() + 60 * 60_000));
        // Everything that depends on whether the address has an account happens after the
        // answer, so neither its content nor its timing can tell.
        setImmediate(() => {
          const work = system.transaction(async (tx) => {
            const allowed = await mayMail(tx, 'reset', email);
            const user = await tx.selectFrom('users').select(['id', 'email']).where('email', '=', email).executeTakeFirst();
            if (!user) {
              await recordPlatformEvent(tx, { type: 'anonymous', id: null }, meta, { action: 'auth.password_reset.requested', outcome: 'failure', metadata: { email, reason: 'unknown email' } });
              return null;
            }
            const actor = { type: 'user' as const, id: user.id, email: user.email };
            if (!allowed) {
              await recordAuthEvent(tx, actor, meta, { action: 'auth.password_reset.requested', outcome: 'denied', metadata: { reason: 'too many reset mails this hour' } });
              return null;
            }
            const token = await issueUserToken(tx, user, 'password_reset');
            await recordAuthEvent(tx, actor, meta, { action: 'auth.password_reset.requested' });
            return {
              to: user.email,
              subject: 'Reset your CustomerNode password',
              text: `Someone asked to reset the password of your CustomerNode account. To choose a new password, open:\n\n${config.appUrl}/reset-password#token=${token}\n\nThe link works once, for 30 minutes. If it was not you, ignore this mail: your password stays as it is.\n`,
            };
          });
          work
            .then((mail) => (mail ? mailer.send(mail, request.log) : undefined))
            .catch((error: unknown) => request.log.error({ err: error instanceof Error ? { message: error.message } : String(error) }, 'password-reset request failed'));
        });
        return { status: 'accepted' };
      },
    }),

    publicRoute({
      method: 'POST',
      url: '/api/v1/auth/password-reset/confirm',
      reason: 'the mailed token is the credential',
      status: 204,
      schema: {
        summary: 'Set a new password with a mailed reset token; every session of the account ends',
        tags: ['identity'],
        body: Type.Object({ token: Token, newPassword: Password }, { additionalProperties: false }),
        response: { 204: Type.Null() },
      },
      async handler({ db, body, meta }) {
        // Look before consuming, so a weak new password does not burn the link.
        const pending = isIssuedToken(body.token)
          ? await db.withGlobal((tx) =>
              tx
                .selectFrom('user_tokens as t')
                .innerJoin('users as u', 'u.id', 't.user_id')
                .select(['u.email', 'u.name'])
                .where('t.token_hash', '=', hashToken(body.token))
                .where('t.purpose', '=', 'password_reset')
                .where('t.used_at', 'is', null)
                .where('t.expires_at', '>', sql<Date>`now()`)
                .executeTakeFirst(),
            )
          : undefined;
        if (!pending) throw new AppError('auth.token_invalid');
        assertAcceptablePassword(body.newPassword, { email: pending.email, name: pending.name });
        const passwordHash = await throughGate(() => hashPassword(body.newPassword, config.argon2));
        const done = await db.systemDb({ reason: 'password reset: new password, end sessions, record it in every tenant of the user' }).transaction(async (tx) => {
          const owner = await consumeUserToken(tx, body.token, 'password_reset');
          if (!owner) return false;
          const user = await tx
            .updateTable('users')
            .set({ password_hash: passwordHash })
            .where('id', '=', owner.userId)
            .returning(['id', 'email'])
            .executeTakeFirstOrThrow();
          // The link reached the mailbox: that proves the address, if it is still the account's.
          if (user.email === owner.email) await tx.updateTable('users').set({ email_verified_at: sql`coalesce(email_verified_at, now())` }).where('id', '=', user.id).execute();
          const ended = await tx.updateTable('sessions').set({ revoked_at: sql`now()` }).where('user_id', '=', user.id).where('revoked_at', 'is', null).executeTakeFirst();
          await tx.deleteFrom('user_tokens').where('user_id', '=', user.id).where('purpose', '=', 'password_reset').where('used_at', 'is', null).execute();
          // The new password is unknown to whoever was guessing: the lock has done its job.
          const wasLocked = await clear(tx, accountKey('login', user.email));
          await recordAuthEvent(tx, { type: 'user', id: user.id, email: user.email }, meta, {
            action: 'auth.password.reset',
            metadata: { sessionsEnded: Number(ended.numUpdatedRows), lockCleared: wasLocked },
          });
          return true;
        });
        if (!done) throw new AppError('auth.token_invalid');
      },
    }),

    userRoute({
      method: 'POST',
      url: '/api/v1/auth/email-verification',
      status: 202,
      schema: { summary: 'Mail a new email-verification link to the signed-in user', tags: ['identity'], response: { 202: Type.Object({ status: Type.Union([Type.Literal('accepted'), Type.Literal('already_verified')]) }) } },
      async handler({ db, principal, meta, request }) {
        const result = await db.systemDb({ reason: 'email verification: throttling and events across the tenants of a user' }).transaction(async (tx) => {
          const user = await tx.selectFrom('users').select(['id', 'email', 'email_verified_at']).where('id', '=', principal.userId).executeTakeFirstOrThrow();
          if (user.email_verified_at !== null) return { status: 'already_verified' as const };
          if (!(await mayMail(tx, 'verify', user.email))) return { throttled: true as const };
          const token = await issueUserToken(tx, user, 'email_verification');
          await recordAuthEvent(tx, actorOf(principal), meta, { action: 'auth.email.verification_sent' });
          return { status: 'accepted' as const, mail: verificationMail(config, user.email, token) };
        });
        if ('throttled' in result) throw rateLimited(new Date(Date.now() + 60 * 60_000));
        // In the background: a mail server's failure is logged, and the link can be asked for again.
        if (result.mail) mailer.sendInBackground(result.mail, request.log);
        return { status: result.status };
      },
    }),

    publicRoute({
      method: 'POST',
      url: '/api/v1/auth/email-verification/confirm',
      reason: 'the mailed token is the credential (the link may be opened in another browser)',
      schema: {
        summary: 'Confirm an email address with a mailed token',
        tags: ['identity'],
        body: Type.Object({ token: Token }, { additionalProperties: false }),
        response: { 200: Type.Object({ email: Type.String(), emailVerified: Type.Literal(true) }) },
      },
      async handler({ db, body, meta }) {
        const email = await db.systemDb({ reason: 'email verification recorded in every tenant of the user' }).transaction(async (tx) => {
          const owner = await consumeUserToken(tx, body.token, 'email_verification');
          if (!owner) return null;
          // Only the address the mail went to: a token sent before an address change proves nothing now.
          const user = await tx
            .updateTable('users')
            .set({ email_verified_at: sql`coalesce(email_verified_at, now())` })
            .where('id', '=', owner.userId)
            .where('email', '=', owner.email)
            .returning(['id', 'email'])
            .executeTakeFirst();
          if (!user) return null;
          await recordAuthEvent(tx, { type: 'user', id: user.id, email: user.email }, meta, { action: 'auth.email.verified' });
          return user.email;
        });
        if (email === null) throw new AppError('auth.token_invalid');
        return { email, emailVerified: true as const };
      },
    }),
  ];
}
