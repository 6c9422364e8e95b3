import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts', 'bench/**/*.test.ts', 'tools/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    // Opening PGlite or creating a PostgreSQL database takes seconds on 2 cores.
    hookTimeout: 60_000,
    reporters: ['default'],
    env: { NODE_ENV: 'test' },
  },
});
