/**
 * Random tokens and their one-way hashes. Secrets (session tokens, invitation tokens)
 * are stored only as SHA-256 digests; 256 bits of randomness make a fast hash safe here.
 */
import { createHmac, hash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Whether value has the shape of a token generateToken() made (43 base64url characters). */
export function isIssuedToken(value: unknown): value is string {
  return typeof value === 'string' && /^[A-Za-z0-9_-]{43}$/.test(value);
}

/** A URL-safe random token with 256 bits of entropy. */
export function generateToken(prefix = ''): string {
  return prefix + randomBytes(32).toString('base64url');
}

export function hashToken(token: string): Buffer {
  // The one-shot hash: on every request, and much cheaper than a Hash object.
  return hash('sha256', token, 'buffer');
}

/** Constant-time comparison of two strings (false for different lengths, without early exit on content). */
export function safeEqual(a: string, b: string): boolean {
  const left = Buffer.from(a, 'utf8');
  const right = Buffer.from(b, 'utf8');
  if (left.length !== right.length) return false;
  return timingSafeEqual(left, right);
}

/**
 * The CSRF token of a session: an HMAC keyed by the session token itself. Only a holder
 * of the (HttpOnly) session cookie's value can compute it, so no server secret is needed,
 * and it is stable for the session's life.
 */
export function csrfTokenFor(sessionToken: string): string {
  return createHmac('sha256', sessionToken).update('customernode csrf v1').digest('base64url');
}
