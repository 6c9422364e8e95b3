import { RuleTester } from '@typescript-eslint/utils/ts-eslint';
import tseslint from 'typescript-eslint';
import { afterAll, describe, it } from 'vitest';
import { featureBoundaries, noRawDatabase, noRawSql, noRoleInterpretation, systemDbReason } from './index.ts';

// RuleTester drives its cases through the test framework's describe/it.
const rules = RuleTester as unknown as { afterAll: unknown; describe: unknown; it: unknown; itOnly: unknown };
rules.afterAll = afterAll;
rules.describe = describe;
rules.it = it;
rules.itOnly = it.only;

const tester = new RuleTester({ languageOptions: { parser: tseslint.parser } } as never);
const feature = '/repo/src/features/records/routes.ts';
const kernel = '/repo/src/kernel/db/database.ts';

tester.run('no-raw-database', noRawDatabase, {
  valid: [
    { filename: feature, code: "import type { Kysely } from 'kysely'; let k: Kysely<never>;" },
    { filename: feature, code: "import { sql } from 'kysely';" },
    { filename: kernel, code: "import pg from 'pg'; import { Kysely } from 'kysely'; new Kysely({} as never);" },
    { filename: '/repo/src/main.ts', code: "import { openDatabase } from './kernel/db/database.ts';" },
  ],
  invalid: [
    { filename: feature, code: "import pg from 'pg';", errors: [{ messageId: 'driver' }] },
    { filename: feature, code: "import { PGlite } from '@electric-sql/pglite';", errors: [{ messageId: 'driver' }] },
    { filename: feature, code: "import { Kysely } from 'kysely'; new Kysely({} as never);", errors: [{ messageId: 'kysely' }, { messageId: 'kysely' }] },
    { filename: feature, code: "import { openDatabase } from '../../kernel/db/database.ts';", errors: [{ messageId: 'opener' }] },
    { filename: feature, code: "import * as k from 'kysely'; new k.Kysely({} as never);", errors: [{ messageId: 'kysely' }] },
    { filename: feature, code: "import { Kysely as K } from 'kysely'; new K({} as never);", errors: [{ messageId: 'kysely' }, { messageId: 'kysely' }] },
  ],
});

tester.run('no-raw-sql', noRawSql, {
  valid: [
    { filename: feature, code: 'sql`select ${value}`;' },
    { filename: kernel, code: 'sql.raw(text);' },
  ],
  invalid: [
    { filename: feature, code: 'sql.raw(text);', errors: [{ messageId: 'raw' }] },
    { filename: feature, code: 'sql.lit(value);', errors: [{ messageId: 'raw' }] },
    { filename: feature, code: 'sql.id(column);', errors: [{ messageId: 'raw' }] },
    { filename: feature, code: 'CompiledQuery.raw(text);', errors: [{ messageId: 'raw' }] },
    { filename: feature, code: "import { sql as q } from 'kysely'; q.raw(text);", errors: [{ messageId: 'raw' }] },
    { filename: feature, code: "sql['raw'](text);", errors: [{ messageId: 'raw' }] },
    { filename: feature, code: 'const { raw } = sql; raw(text);', errors: [{ messageId: 'raw' }] },
    { filename: feature, code: "import * as k from 'kysely'; k.sql.raw(text);", errors: [{ messageId: 'raw' }] },
  ],
});

tester.run('system-db-reason', systemDbReason, {
  valid: [
    { filename: feature, code: "db.systemDb({ reason: 'record a login in every tenant' });" },
    { filename: feature, code: 'db.systemDb({ reason: `a template without values` });' },
  ],
  invalid: [
    { filename: feature, code: 'db.systemDb();', errors: [{ messageId: 'reason' }] },
    { filename: feature, code: 'db.systemDb({});', errors: [{ messageId: 'reason' }] },
    { filename: feature, code: "db.systemDb({ reason: 'short' });", errors: [{ messageId: 'reason' }] },
    { filename: feature, code: 'db.systemDb({ reason: why });', errors: [{ messageId: 'reason' }] },
    { filename: feature, code: 'db.systemDb({ reason: `because ${why}` });', errors: [{ messageId: 'reason' }] },
  ],
});

tester.run('feature-boundaries', featureBoundaries, {
  valid: [
    { filename: feature, code: "import { can } from '../access/index.ts';" },
    { filename: feature, code: "import { store } from './store.ts';" },
    { filename: feature, code: "import { AppError } from '../../kernel/http/errors.ts';" },
    { filename: '/repo/src/features/records/records.test.ts', code: "import { totpFor } from '../identity/mfa.ts';" },
  ],
  invalid: [
    { filename: feature, code: "import { totpFor } from '../identity/mfa.ts';", errors: [{ messageId: 'boundary' }] },
    { filename: '/repo/src/features/records/deep/file.ts', code: "import { x } from '../../identity/login.ts';", errors: [{ messageId: 'boundary' }] },
    { filename: feature, code: "export { x } from '../sso/oidc.ts';", errors: [{ messageId: 'boundary' }] },
  ],
});

tester.run('no-role-interpretation', noRoleInterpretation, {
  valid: [
    { filename: feature, code: 'if (role === OWNER_ROLE) {}' },
    { filename: feature, code: "if (status === 'active') {}" },
    { filename: '/repo/src/features/access/policy.ts', code: "if (role === 'owner') {}" },
    { filename: feature, code: "query.where('name', '=', 'owner');" },
  ],
  invalid: [
    { filename: feature, code: "if (role === 'owner') {}", errors: [{ messageId: 'role' }] },
    { filename: feature, code: "if ('admin' !== principal.role) {}", errors: [{ messageId: 'role' }] },
    { filename: feature, code: "query.where('m.role', '=', 'owner');", errors: [{ messageId: 'role' }] },
    { filename: feature, code: "switch (role) { case 'owner': break; }", errors: [{ messageId: 'role' }] },
    { filename: feature, code: "if (['admin', 'owner'].includes(role)) {}", errors: [{ messageId: 'role' }] },
  ],
});
