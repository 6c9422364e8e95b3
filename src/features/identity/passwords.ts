/** Password hashing (argon2id, PHC strings) and the password policy. */
import { hash, verify, type Algorithm } from '@node-rs/argon2';
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

/** Verifies; a malformed stored hash counts as a mismatch, never an exception to the caller. */
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

/** Length in characters (code points), as NIST SP 800-63B counts them; no composition rules. */
export function assertAcceptablePassword(password: string): void {
  const length = [...password].length;
  if (length < MIN_PASSWORD_CHARS || length > MAX_PASSWORD_CHARS) {
    throw new AppError('auth.weak_password', {
      detail: `Passwords must be ${MIN_PASSWORD_CHARS} to ${MAX_PASSWORD_CHARS} characters long`,
    });
  }
}
