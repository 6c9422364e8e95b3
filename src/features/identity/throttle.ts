/**
 * Login protection shared by every server instance (state in PostgreSQL).
 *
 * An attempt is counted BEFORE the password is checked: the counter is incremented
 * atomically and only attempts that got a number within the limit may verify. So 50
 * parallel guesses still get at most maxFailures verifications. A success clears the
 * account's counter; reaching the limit locks the account (then longer each time).
 * Unknown emails are counted the same way (by a digest of the email), so locks reveal
 * nothing about which accounts exist.
 */
import { sql } from 'kysely';
import { createHash } from 'node:crypto';
import type { Config } from '../../kernel/config/config.ts';
import type { Tx } from '../../kernel/db/database.ts';
import { AppError } from '../../kernel/http/errors.ts';

export type LoginProtection = Config['loginProtection'];

export function accountKey(kind: 'login' | 'mfa' | 'reset' | 'verify', subject: string): string {
  return `${kind}:${createHash('sha256').update(subject).digest('hex')}`;
}

export function ipKey(ip: string | null): string {
  return `ip:${ip ?? 'unknown'}`;
}

export function rateLimited(until: Date): AppError {
  const seconds = Math.max(1, Math.ceil((until.getTime() - Date.now()) / 1000));
  return new AppError('rate_limited', { detail: 'Too many attempts; try again later', headers: { 'retry-after': String(seconds) } });
}

/** Counts one attempt against key; returns the attempt's number in the window and any lock in force. */
export async function countAttempt(tx: Tx, key: string, windowMinutes: number): Promise<{ failures: number; lockedUntil: Date | null }> {
  const row = await sql<{ failures: number; locked_until: Date | null }>`
    insert into auth_throttles as t (key, failures, window_started_at) values (${key}, 1, now())
    on conflict (key) do update set
      failures = case when t.window_started_at < now() - make_interval(mins => ${windowMinutes}) then 1 else t.failures + 1 end,
      window_started_at = case when t.window_started_at < now() - make_interval(mins => ${windowMinutes}) then now() else t.window_started_at end,
      updated_at = now()
    returning failures, locked_until`.execute(tx);
  const first = row.rows[0]!;
  const lockedUntil = first.locked_until && new Date(first.locked_until).getTime() > Date.now() ? new Date(first.locked_until) : null;
  return { failures: Number(first.failures), lockedUntil };
}

/**
 * Locks key unless a lock is already in force; the counter restarts and the next lock
 * doubles. Returns the new lock's end, or null when another request locked it first.
 */
export async function lock(tx: Tx, key: string, lockMinutes: number): Promise<Date | null> {
  const row = await sql<{ locked_until: Date }>`
    update auth_throttles
    set locked_until = now() + make_interval(mins => ${lockMinutes} * power(2, least(lockouts, 6))::int),
        lockouts = lockouts + 1, failures = 0, window_started_at = now(), updated_at = now()
    where key = ${key} and (locked_until is null or locked_until <= now())
    returning locked_until`.execute(tx);
  const first = row.rows[0];
  return first ? new Date(first.locked_until) : null;
}

/** After a success: forget the account's failures and lock history. Returns whether it had been locked before. */
export async function clear(tx: Tx, key: string): Promise<boolean> {
  const row = await tx.deleteFrom('auth_throttles').where('key', '=', key).returning('lockouts').executeTakeFirst();
  return (row?.lockouts ?? 0) > 0;
}

/** Gives back the attempt a success had reserved on a shared counter (the IP's). */
export async function release(tx: Tx, key: string): Promise<void> {
  await tx.updateTable('auth_throttles').set({ failures: sql`greatest(failures - 1, 0)` }).where('key', '=', key).execute();
}

export async function recordFailureForIp(tx: Tx, ip: string | null, account: string, windowMinutes: number): Promise<number> {
  await tx.insertInto('auth_failures').values({ ip: ip ?? 'unknown', account_key: account }).execute();
  await sql`delete from auth_failures where at < now() - make_interval(mins => ${windowMinutes * 2})`.execute(tx);
  const row = await sql<{ accounts: number }>`
    select count(distinct account_key)::int as accounts from auth_failures
    where ip = ${ip ?? 'unknown'} and at >= now() - make_interval(mins => ${windowMinutes})`.execute(tx);
  return Number(row.rows[0]?.accounts ?? 0);
}

/**
 * A counting semaphore: at most `concurrency` argon2 computations at once, at most
 * `maxQueued` waiting. Beyond that the caller is told to come back (429), so a login
 * flood queues behind itself instead of taking every libuv thread from other requests.
 */
export function createGate(concurrency: number, maxQueued: number) {
  let running = 0;
  const queue: (() => void)[] = [];
  return async function run<T>(work: () => Promise<T>): Promise<T> {
    if (running >= concurrency) {
      if (queue.length >= maxQueued) throw rateLimited(new Date(Date.now() + 1000));
      await new Promise<void>((resolve) => queue.push(resolve));
    } else {
      running++;
    }
    try {
      return await work();
    } finally {
      const next = queue.shift();
      if (next) next();
      else running--;
    }
  };
}
