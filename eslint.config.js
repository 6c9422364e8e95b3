// @ts-check
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/**', 'data/**', 'coverage/**', 'web/dist/**'] },
  ...tseslint.configs.strict,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true } },
    rules: {
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
    files: ['src/kernel/config/**', 'src/kernel/db/**', 'test/**', 'bench/**', '**/*.test.ts', 'vitest.config.ts'],
    rules: { 'no-restricted-properties': 'off', 'no-restricted-imports': 'off' },
  },
);
