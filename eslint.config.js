// @ts-check
import tseslint from 'typescript-eslint';
import customernode from './tools/eslint-plugin/index.ts';

export default tseslint.config(
  // The lint fixtures violate the rules on purpose: tools/eslint-plugin/lint-fixtures.test.ts lints them.
  { ignores: ['node_modules/**', 'data/**', 'coverage/**', 'web/dist/**', 'tools/eslint-plugin/fixtures/**'] },
  ...tseslint.configs.strict,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true } },
    plugins: { customernode },
    rules: {
      'customernode/no-raw-database': 'error',
      'customernode/no-raw-sql': 'error',
      'customernode/tenant-query-through-handle': 'error',
      'customernode/system-db-reason': 'error',
      'customernode/feature-boundaries': 'error',
      'customernode/no-role-interpretation': 'error',
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-non-null-assertion': 'off',
      // Only kernel/config reads the environment.
      'no-restricted-properties': ['error', { object: 'process', property: 'env', message: 'Read configuration through kernel/config.' }],
      // Only the data-access kernel touches database drivers; features get handles from withTenant.
      'no-restricted-imports': [
        'error',
        {
          paths: [
            { name: 'pg', message: 'Use withTenant/withGlobal/systemDb from kernel/db.' },
            { name: '@electric-sql/pglite', message: 'Use withTenant/withGlobal/systemDb from kernel/db.' },
          ],
        },
      ],
    },
  },
  {
    files: ['src/kernel/config/**', 'src/kernel/db/**', 'test/**', 'bench/**', 'tools/eslint-plugin/*.ts', '**/*.test.ts', 'vitest.config.ts'],
    rules: { 'no-restricted-properties': 'off', 'no-restricted-imports': 'off' },
  },
  {
    // Tests, the bench and the lint plugin seed and inspect databases directly (as the superuser or owner).
    files: ['test/**', 'bench/**', 'tools/eslint-plugin/*.ts', '**/*.test.ts', 'vitest.config.ts'],
    rules: {
      'customernode/no-raw-database': 'off',
      'customernode/no-raw-sql': 'off',
      'customernode/tenant-query-through-handle': 'off',
    },
  },
);
