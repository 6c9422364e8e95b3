/** Password hashing (argon2id, PHC strings) and the password policy. */
import { hash, verify, type Algorithm } from '@node-rs/argon2';
import { dictionary } from '@zxcvbn-ts/language-common';
import { AppError } from '../../kernel/http/errors.ts';

export interface Argon2Parameters {
  readonly memoryKiB: number;
  readonly iterations: number;
  readonly parallelism: number;
}

export const MIN_PASSWORD_CHARS = 12;
export const MAX_PASSWORD_CHARS = 128;

export async function hashPassword(password: string, params: Argon2Parameters): Promise<string> {
  return hash(password, {
    // Algorithm is an ambient const enum (not importable under erasable syntax): 2 is Argon2id.
    algorithm: 2 as Algorithm,
    memoryCost: params.memoryKiB,
    timeCost: params.iterations,
    parallelism: params.parallelism,
  });
}

/**
 * Whether a stored hash was made with other parameters than the configured ones (or not
 * with argon2id): after a successful login it is recomputed, so raising the cost reaches
 * every active account without a password reset.
 */
export function needsRehash(passwordHash: string, params: Argon2Parameters): boolean {
  const match = /^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$/.exec(passwordHash);
  if (!match) return hasUsablePassword(passwordHash);
  return Number(match[1]) !== params.memoryKiB || Number(match[2]) !== params.iterations || Number(match[3]) !== params.parallelism;
}

/** Verifies; a malformed stored hash counts as a mismatch, never an exception to the caller. */
/**
 * The password hash of an account created by single sign-on: matches no password, so the
 * account has no password login until a mailed reset sets one.
 */
export const NO_PASSWORD = '!no-password';

export function hasUsablePassword(passwordHash: string): boolean {
  return passwordHash.startsWith('$argon2');
}

export async function verifyPassword(passwordHash: string, password: string): Promise<boolean> {
  try {
    return await verify(passwordHash, password);
  } catch {
    return false;
  }
}

/**
 * A hash of a random password, computed once, verified against when the email is
 * unknown so that "no such user" costs the same as "wrong password".
 */
export function createDummyHash(params: Argon2Parameters): Promise<string> {
  return hashPassword(`dummy-${crypto.randomUUID()}`, params);
}

/**
 * Passwords seen in breaches and common-password lists: the 49,233 entries of the
 * maintained @zxcvbn-ts/language-common package (offline, no network call), lower-cased.
 */
const COMMON_PASSWORDS: ReadonlySet<string> = new Set(dictionary['passwords-common'].map((entry) => entry.toLowerCase()));
export const COMMON_PASSWORD_COUNT = COMMON_PASSWORDS.size;

function weak(detail: string): AppError {
  return new AppError('auth.weak_password', { detail });
}

/**
 * NIST SP 800-63B: length in characters (code points), 12 to 128, any characters, no
 * composition rules; refuse breached and common passwords, repetitive ones, and ones
 * built from the account's own email or name.
 */
export function assertAcceptablePassword(password: string, context: { email?: string; name?: string } = {}): void {
  const characters = [...password];
  if (characters.length < MIN_PASSWORD_CHARS || characters.length > MAX_PASSWORD_CHARS) {
    throw weak(`Passwords must be ${MIN_PASSWORD_CHARS} to ${MAX_PASSWORD_CHARS} characters long`);
  }
  const lower = password.toLowerCase();
  // Common passwords padded with digits or symbols ("password123!") are still common.
  const core = lower.replace(/[^\p{L}]+$/u, '').replace(/^[^\p{L}]+/u, '');
  if (COMMON_PASSWORDS.has(lower) || (core.length >= 4 && COMMON_PASSWORDS.has(core))) {
    throw weak('This password appears in lists of breached or common passwords');
  }
  if (new Set(characters).size < 4) throw weak('This password repeats too few characters');
  const contextWords = [context.email?.split('@')[0], context.email, context.name]
    .filter((word): word is string => typeof word === 'string' && word.length >= 4)
    .map((word) => word.toLowerCase());
  if (contextWords.some((word) => lower.includes(word) && word.length * 2 >= lower.length)) {
    throw weak('Passwords may not be built from your email address or name');
  }
}
