import { ESLint } from 'eslint';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const FIXTURES = path.join(ROOT, 'tools/eslint-plugin/fixtures/src/features/demo');

/** The rule ids `npm run lint` reports for a fixture, with the repository's own configuration. */
async function rulesFiring(file: string): Promise<string[]> {
  const eslint = new ESLint({ cwd: ROOT, ignore: false });
  const [result] = await eslint.lintFiles([path.join(FIXTURES, file)]);
  return [...new Set(result!.messages.map((m) => m.ruleId ?? `fatal: ${m.message}`))].sort();
}

// Proof, on files shaped like feature code, that the lint (run in CI) has teeth for each pattern.
describe('npm run lint refuses each tenant-scope violation', () => {
  it.each([
    ['raw-pool.ts', ['customernode/no-raw-database', 'no-restricted-imports']],
    ['kysely-instance.ts', ['customernode/tenant-query-through-handle']],
    ['raw-sql.ts', ['customernode/no-raw-sql']],
    ['system-db.ts', ['customernode/system-db-reason']],
    ['env.ts', ['no-restricted-properties']],
    ['cross-feature.ts', ['customernode/feature-boundaries']],
    ['role-check.ts', ['customernode/no-role-interpretation']],
    ['good.ts', []],
  ])('%s -> %j', async (file, expected) => {
    expect(await rulesFiring(file)).toEqual(expected);
  }, 60_000);
});
