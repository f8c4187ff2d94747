import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The service serves the console's build: built first when missing or stale.
    globalSetup: ['test/support/build-console.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // End-to-end files each start a service process; two at a time suit a 2-core machine.
    maxWorkers: 2,
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
});
