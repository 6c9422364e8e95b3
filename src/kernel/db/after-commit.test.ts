import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../../test/harness.ts';
import { runAfterCommit } from './database.ts';

// Threat: a mail with a link goes out for a change that never committed (the link is dead, or worse, misleading).
describe('side effects after commit', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await openTestDatabase();
  });
  afterAll(async () => t?.close());

  it('run once the transaction has committed, in order, and never for one that rolled back', async () => {
    const ran: string[] = [];
    await t.db.withTenant(randomUUID(), async () => {
      runAfterCommit(() => ran.push('first'));
      runAfterCommit(() => ran.push('second'));
      expect(ran).toEqual([]);
    });
    expect(ran).toEqual(['first', 'second']);
    await expect(
      t.db.withTenant(randomUUID(), async () => {
        runAfterCommit(() => ran.push('rolled back'));
        throw new Error('the change failed');
      }),
    ).rejects.toThrow('the change failed');
    expect(ran).toEqual(['first', 'second']);
    expect(() => runAfterCommit(() => undefined)).toThrow(/outside a kernel transaction/);
  });
});
