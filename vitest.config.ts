import { defineConfig } from 'vitest/config';

// Two projects: fast unit tests beside the code, and end-to-end tests in test/
// that start real processes (controller, workers) and talk real gRPC/TLS.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['apps/*/src/**/*.test.ts', 'apps/dashboard/web/**/*.test.tsx', 'packages/*/src/**/*.test.ts', 'proto/src/**/*.test.ts', 'prisma/src/**/*.test.ts', 'scripts/**/*.test.ts'],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/**/*.test.ts'],
          testTimeout: 180_000,
          hookTimeout: 120_000,
          // Each file in a fresh process (files must not share module state such as
          // Prisma's schema-engine wasm instance). scripts/test.sh also runs e2e files
          // one at a time (--no-file-parallelism): each starts several processes.
          pool: 'forks',
          isolate: true,
        },
      },
    ],
  },
});
