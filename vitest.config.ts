import { defineConfig } from 'vitest/config';

// Model tests are CPU-heavy and ORT already uses both cores: run files in two forks at most.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // A fresh cache folder per run instead of ~/.cache/redline (see the file).
    globalSetup: ['test/setup/isolated-cache.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
