/**
 * TOTP second factor (RFC 6238: SHA-1, 6 digits, 30 s, one step of drift either side)
 * with replay protection (a code's time step is accepted at most once) and 10 single-use
 * recovery codes of 80 bits each, stored as SHA-256 digests.
 * TOTP seeds are stored only encrypted under the platform data key (users are global),
 * bound to the user and the column; seeds from before migration 21 are encrypted at start.
 */
import { sql } from 'kysely';
import { randomBytes } from 'node:crypto';
import { Secret, TOTP } from 'otpauth';
import type { Keyring } from '../../kernel/crypto/envelope.ts';
import type { Database, Tx } from '../../kernel/db/database.ts';
import { generateToken, hashToken } from '../../kernel/crypto/tokens.ts';

export const RECOVERY_CODE_COUNT = 10;
export const CHALLENGE_TTL_MS = 5 * 60_000;
const PERIOD_SECONDS = 30;

export function totpFor(secretBase32: string, label: string): TOTP {
  return new TOTP({ issuer: 'CustomerNode', label, algorithm: 'SHA1', digits: 6, period: PERIOD_SECONDS, secret: Secret.fromBase32(secretBase32) });
}

type SeedColumn = 'totp_secret' | 'totp_pending_secret';

export function sealTotpSecret(keyring: Keyring, tx: Tx, userId: string, column: SeedColumn, secretBase32: string): Promise<Buffer> {
  return keyring.encryptPlatform(tx, { table: 'users', column, rowId: userId }, secretBase32);
}

/** The seed in the clear: from its ciphertext, or the plaintext of a row the backfill has not reached. */
export async function openTotpSecret(keyring: Keyring, tx: Tx, userId: string, column: SeedColumn, stored: { ct: Uint8Array | null; plain: string | null }): Promise<string | null> {
  if (stored.ct) return keyring.decryptPlatformText(tx, { table: 'users', column, rowId: userId }, stored.ct);
  return stored.plain;
}

/** Encrypts TOTP seeds stored in the clear before migration 21. Idempotent; returns the users done. */
export async function encryptLegacyTotpSecrets(db: Database, keyring: Keyring): Promise<number> {
  return db.systemDb({ reason: 'encrypt TOTP seeds stored before field encryption' }).transaction(async (tx) => {
    const rows = await tx
      .selectFrom('users')
      .select(['id', 'totp_secret', 'totp_pending_secret'])
      .where((eb) => eb.or([eb('totp_secret', 'is not', null), eb('totp_pending_secret', 'is not', null)]))
      .forUpdate()
      .execute();
    for (const row of rows) {
      await tx
        .updateTable('users')
        .set({
          ...(row.totp_secret !== null ? { totp_secret: null, totp_secret_ct: await sealTotpSecret(keyring, tx, row.id, 'totp_secret', row.totp_secret) } : {}),
          ...(row.totp_pending_secret !== null ? { totp_pending_secret: null, totp_pending_secret_ct: await sealTotpSecret(keyring, tx, row.id, 'totp_pending_secret', row.totp_pending_secret) } : {}),
        })
        .where('id', '=', row.id)
        .execute();
    }
    return rows.length;
  });
}

export function newTotpSecret(): string {
  return new Secret({ size: 20 }).base32;
}

/** The time step a valid code belongs to, or null. validate() answers a delta: 0 is a match. */
export function matchingStep(secretBase32: string, code: string, nowMs = Date.now()): number | null {
  if (!/^\d{6}$/.test(code)) return null;
  const delta = totpFor(secretBase32, 'x').validate({ token: code, window: 1, timestamp: nowMs });
  if (delta === null) return null;
  return Math.floor(nowMs / 1000 / PERIOD_SECONDS) + delta;
}

/** Accepts step only if it is newer than the last accepted one (atomic: no replay, even in parallel). */
export async function claimStep(tx: Tx, userId: string, step: number): Promise<boolean> {
  const row = await tx
    .updateTable('users')
    .set({ totp_last_step: step })
    .where('id', '=', userId)
    .where((eb) => eb.or([eb('totp_last_step', 'is', null), eb('totp_last_step', '<', step)]))
    .returning('id')
    .executeTakeFirst();
  return row !== undefined;
}

function normalizeRecoveryCode(code: string): string {
  return code.toUpperCase().replace(/[\s-]/g, '');
}

/** Issues a fresh set of recovery codes (replacing any old ones) and returns them, shown once. */
export async function issueRecoveryCodes(tx: Tx, userId: string): Promise<string[]> {
  const codes = Array.from({ length: RECOVERY_CODE_COUNT }, () => {
    const base32 = new Secret({ buffer: randomBytes(10).buffer }).base32; // 80 bits, 16 characters
    return base32.match(/.{4}/g)!.join('-');
  });
  await tx.deleteFrom('mfa_recovery_codes').where('user_id', '=', userId).execute();
  await tx
    .insertInto('mfa_recovery_codes')
    .values(codes.map((code) => ({ user_id: userId, code_hash: hashToken(normalizeRecoveryCode(code)) })))
    .execute();
  return codes;
}

/** Uses up a recovery code; false if it is unknown or already used. */
export async function useRecoveryCode(tx: Tx, userId: string, code: string): Promise<boolean> {
  const normalized = normalizeRecoveryCode(code);
  if (!/^[A-Z2-7]{16}$/.test(normalized)) return false;
  const row = await tx
    .updateTable('mfa_recovery_codes')
    .set({ used_at: sql`now()` })
    .where('user_id', '=', userId)
    .where('code_hash', '=', hashToken(normalized))
    .where('used_at', 'is', null)
    .returning('user_id')
    .executeTakeFirst();
  return row !== undefined;
}

export async function createChallenge(tx: Tx, userId: string): Promise<string> {
  const token = generateToken();
  await tx.insertInto('mfa_challenges').values({ token_hash: hashToken(token), user_id: userId, expires_at: new Date(Date.now() + CHALLENGE_TTL_MS) }).execute();
  return token;
}
