// The console's build: a small static app, served by the API at /console/ (shared/api/console.ts).
// Relative asset paths, so it works under any prefix (an API Gateway stage too).
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: './',
  logLevel: 'warn',
  build: {
    outDir: fileURLToPath(new URL('../dist/console', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    // Every asset a file of its own: the server's CSP allows scripts and styles from itself only.
    assetsInlineLimit: 0,
  },
});
