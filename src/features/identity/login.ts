/** Password login with lockout, per-IP throttling and credential-stuffing detection. */
import type { Config } from '../../kernel/config/config.ts';
import type { Database, Tx } from '../../kernel/db/database.ts';
import { recordPlatformEvent, SYSTEM_ACTOR, type Actor, type RequestMeta } from '../../kernel/audit/record.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { recordAuthEvent } from './auth-events.ts';
import { createChallenge } from './mfa.ts';
import { createDummyHash, hashPassword, hasUsablePassword, needsRehash, verifyPassword } from './passwords.ts';
import { createSession, type IssuedSession } from './sessions.ts';
import { accountKey, clear, countAttempt, createGate, ipKey, lock, rateLimited, recordFailureForIp, release } from './throttle.ts';

type LoginConfig = Pick<Config, 'argon2' | 'loginProtection' | 'sessionAbsoluteHours'>;

export interface LoginUser {
  readonly id: string;
  readonly email: string;
  readonly name: string;
}

export function createLogin(config: LoginConfig) {
  const protection = config.loginProtection;
  const gate = createGate(protection.argon2Concurrency, 256);
  let dummyHash: Promise<string> | undefined;

  /** Runs password hashing or verification through the shared argon2 gate. */
  function throughGate<T>(work: () => Promise<T>): Promise<T> {
    return gate(work);
  }

  async function login(options: {
    db: Database;
    meta: RequestMeta;
    email: string;
    password: string;
  }): Promise<{ user: LoginUser; session: IssuedSession; challenge?: undefined } | { challenge: string; user?: undefined; session?: undefined }> {
    const { db, meta, email, password } = options;
    const account = accountKey('login', email);
    const ip = ipKey(meta.ip);
    const system = db.systemDb({ reason: 'login protection and login events across the tenants of a user' });

    // 1. Count the attempt (committed even when refused), and read the user.
    const gateState = await db.withGlobal(async (tx) => {
      const byIp = await countAttempt(tx, ip, protection.windowMinutes);
      const byAccount = await countAttempt(tx, account, protection.windowMinutes);
      const user = await tx.selectFrom('users').select(['id', 'email', 'name', 'password_hash', 'mfa_enabled']).where('email', '=', email).executeTakeFirst();
      let refusedUntil = byIp.lockedUntil ?? byAccount.lockedUntil;
      let newlyLocked: Date | null = null;
      if (refusedUntil === null && byAccount.failures > protection.maxFailures) {
        // Parallel guesses past the limit: lock now rather than wait for their verifications.
        newlyLocked = await lock(tx, account, protection.lockMinutes);
        refusedUntil = newlyLocked ?? new Date(Date.now() + protection.lockMinutes * 60_000);
      }
      if (refusedUntil === null && byIp.failures > protection.ipMaxFailures) {
        refusedUntil = (await lock(tx, ip, protection.lockMinutes)) ?? new Date(Date.now() + protection.lockMinutes * 60_000);
      }
      return { user, refusedUntil, newlyLocked, failures: byAccount.failures };
    });
    const { user } = gateState;
    const actor: Actor = user ? { type: 'user', id: user.id, email: user.email } : { type: 'anonymous', id: null };

    if (gateState.refusedUntil !== null) {
      await system.transaction(async (tx) => {
        if (gateState.newlyLocked && user) await recordAuthEvent(tx, actor, meta, { action: 'auth.lockout', outcome: 'denied', metadata: { until: gateState.newlyLocked.toISOString() } });
        const event = { action: 'auth.login.failed', outcome: 'denied' as const, metadata: { reason: 'throttled' } };
        if (user) await recordAuthEvent(tx, actor, meta, event);
        else await recordPlatformEvent(tx, actor, meta, { ...event, metadata: { ...event.metadata, email } });
      });
      throw rateLimited(gateState.refusedUntil);
    }

    // 2. Verify outside any transaction: argon2 must never hold a database connection.
    dummyHash ??= createDummyHash(config.argon2);
    // No account, or one without a password (SSO): the same argon2 work, so timing tells nothing.
    const usable = user !== undefined && hasUsablePassword(user.password_hash);
    const storedHash = usable ? user.password_hash : await dummyHash;
    const ok = (await throughGate(() => verifyPassword(storedHash, password))) && usable;

    if (!user || !ok) {
      await system.transaction(async (tx) => {
        const event = { action: 'auth.login.failed', outcome: 'failure' as const };
        if (user) await recordAuthEvent(tx, actor, meta, event);
        else await recordPlatformEvent(tx, actor, meta, { ...event, metadata: { email } });
        if (gateState.failures >= protection.maxFailures) {
          const until = await lock(tx, account, protection.lockMinutes);
          if (until && user) await recordAuthEvent(tx, actor, meta, { action: 'auth.lockout', outcome: 'denied', metadata: { until: until.toISOString() } });
        }
        const accounts = await recordFailureForIp(tx, meta.ip, account, protection.windowMinutes);
        if (accounts >= protection.stuffingAccounts) {
          const until = await lock(tx, ip, protection.lockMinutes);
          if (until) {
            await recordPlatformEvent(tx, SYSTEM_ACTOR, meta, {
              action: 'auth.credential_stuffing',
              outcome: 'denied',
              metadata: { ip: meta.ip, distinctAccounts: accounts, until: until.toISOString() },
            });
          }
        }
      });
      throw new AppError('auth.invalid_credentials');
    }

    // 3. Success: forget the account's failures, give back the IP's reserved attempt, then
    // either ask for the second factor (no session yet) or open a session. A hash made with
    // other parameters than the configured ones is replaced while the password is at hand.
    const rehashed = needsRehash(user.password_hash, config.argon2) ? await throughGate(() => hashPassword(password, config.argon2)) : null;
    const saveRehash = async (tx: Tx) => {
      if (rehashed === null) return;
      // Only if unchanged meanwhile (a parallel password change wins).
      await tx.updateTable('users').set({ password_hash: rehashed }).where('id', '=', user.id).where('password_hash', '=', user.password_hash).execute();
    };
    if (user.mfa_enabled) {
      const challenge = await system.transaction(async (tx) => {
        await saveRehash(tx);
        await clear(tx, account);
        await release(tx, ip);
        return createChallenge(tx, user.id);
      });
      return { challenge };
    }
    const session = await system.transaction(async (tx) => {
      await saveRehash(tx);
      const wasLocked = await clear(tx, account);
      await release(tx, ip);
      const issued = await createSession(tx, { userId: user.id, meta, lifetimeHours: config.sessionAbsoluteHours });
      await tx.updateTable('users').set({ last_login_at: new Date() }).where('id', '=', user.id).execute();
      if (wasLocked) await recordAuthEvent(tx, actor, meta, { action: 'auth.unlocked', metadata: { by: 'successful login after the lock expired' } });
      await recordAuthEvent(tx, actor, meta, { action: 'auth.login.succeeded' });
      return issued;
    });
    return { user: { id: user.id, email: user.email, name: user.name }, session };
  }

  /**
   * A fresh password check for a signed-in user before a sensitive change (turning MFA
   * off, new recovery codes). Counted on the same lock as logins, so it is no way around it.
   */
  async function confirmPassword(options: { db: Database; meta: RequestMeta; userId: string; password: string }): Promise<void> {
    const { db, meta, userId, password } = options;
    const user = await db.withGlobal((tx) => tx.selectFrom('users').select(['email', 'password_hash']).where('id', '=', userId).executeTakeFirstOrThrow());
    const account = accountKey('login', user.email);
    const attempt = await db.withGlobal((tx) => countAttempt(tx, account, protection.windowMinutes));
    if (attempt.lockedUntil) throw rateLimited(attempt.lockedUntil);
    if (attempt.failures > protection.maxFailures) throw rateLimited(new Date(Date.now() + protection.lockMinutes * 60_000));
    const ok = await throughGate(() => verifyPassword(user.password_hash, password));
    await db.systemDb({ reason: 'record a password re-check in every tenant of the user' }).transaction(async (tx) => {
      const actor: Actor = { type: 'user', id: userId, email: user.email };
      if (ok) {
        await clear(tx, account);
        return;
      }
      await recordAuthEvent(tx, actor, meta, { action: 'auth.reauth.failed', outcome: 'failure' });
      if (attempt.failures >= protection.maxFailures) {
        const until = await lock(tx, account, protection.lockMinutes);
        if (until) await recordAuthEvent(tx, actor, meta, { action: 'auth.lockout', outcome: 'denied', metadata: { until: until.toISOString() } });
      }
    });
    if (!ok) throw new AppError('auth.invalid_credentials');
  }

  return { login, throughGate, confirmPassword };
}
