// The dashboard's production build goes to dist/, which the controller serves at `/`.
// Everything is bundled (no CDN): the dashboard works on a network without internet.
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

export default defineConfig({
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 1500 },
  server: {
    // `pnpm --filter @fleet/dashboard dev` against a controller on :8080.
    proxy: { '/v1': { target: 'http://127.0.0.1:8080', ws: true } },
  },
});
