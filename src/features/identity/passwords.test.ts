import { describe, expect, it } from 'vitest';
import { AppError } from '../../kernel/http/errors.ts';
import { assertAcceptablePassword, COMMON_PASSWORD_COUNT, hashPassword, needsRehash, NO_PASSWORD, verifyPassword } from './passwords.ts';

function refusal(password: string, context = {}): string | null {
  try {
    assertAcceptablePassword(password, context);
    return null;
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).code).toBe('auth.weak_password');
    return (error as AppError).publicDetail ?? '';
  }
}

describe('password policy', () => {
  it('accepts 12 to 128 characters of anything, counting code points, with no composition rules', () => {
    expect(refusal('correct horse battery staple')).toBeNull();
    expect(refusal('ü'.repeat(3) + 'ñandú pingüino')).toBeNull();
    expect(refusal('🦊🦁🐯🐻🐼🐨🐸🐵🐔🐧🐦🐤')).toBeNull(); // 12 emoji: 24 UTF-16 units, 12 characters
    expect(refusal('a'.repeat(5) + 'bcdefghijklmnopq'.repeat(7).slice(0, 123))).toBeNull();
    expect(refusal('elevenchars')).toMatch(/12 to 128/);
    expect(refusal('x'.repeat(60) + 'yz'.repeat(35))).toMatch(/12 to 128/);
  });

  it('refuses breached and common passwords, also with digits or symbols around them', () => {
    expect(COMMON_PASSWORD_COUNT).toBeGreaterThan(40_000);
    expect(refusal('1q2w3e4r5t6y')).toMatch(/breached or common/);
    expect(refusal('qazwsxedcrfv')).toMatch(/breached or common/);
    expect(refusal('Password123456!')).toMatch(/breached or common/);
    expect(refusal('!!sunshine2024!!')).toMatch(/breached or common/);
  });

  it('refuses repetitive passwords and ones built from the email or name', () => {
    expect(refusal('aaaaaaaaaaaaaaaa')).toMatch(/repeats/);
    expect(refusal('abababababab')).toMatch(/repeats/);
    expect(refusal('grace.hopper1906', { email: 'grace.hopper@example.com' })).toMatch(/email address or name/);
    expect(refusal('AdaLovelace!!', { name: 'Ada Lovelace'.replace(' ', '') })).toMatch(/email address or name/);
    expect(refusal('my grace.hopper is long enough here', { email: 'grace.hopper@example.com' })).toBeNull();
  });

  it('hashes with argon2id and verifies only the right password; a corrupt hash is a mismatch', async () => {
    const params = { memoryKiB: 19456, iterations: 2, parallelism: 1 };
    const stored = await hashPassword('correct horse battery staple', params);
    expect(stored.startsWith('$argon2id$')).toBe(true);
    expect(await verifyPassword(stored, 'correct horse battery staple')).toBe(true);
    expect(await verifyPassword(stored, 'correct horse battery stapl')).toBe(false);
    expect(await verifyPassword('not-a-phc-string', 'anything')).toBe(false);
  });

  it('a hash made with other argon2 parameters, or not with argon2id, needs a rehash; one without a password does not', async () => {
    const params = { memoryKiB: 19456, iterations: 2, parallelism: 1 };
    const stored = await hashPassword('correct horse battery staple', params);
    expect(needsRehash(stored, params)).toBe(false);
    expect(needsRehash(stored, { ...params, iterations: 3 })).toBe(true);
    expect(needsRehash(stored, { ...params, memoryKiB: 65536 })).toBe(true);
    expect(needsRehash(stored, { ...params, parallelism: 2 })).toBe(true);
    expect(needsRehash(stored.replace('$argon2id$', '$argon2i$'), params)).toBe(true);
    expect(needsRehash(NO_PASSWORD, params)).toBe(false);
  });
});
