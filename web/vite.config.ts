import react from '@vitejs/plugin-react';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// The studio is served by `redline serve` from web/dist (src/service/routes/studio.ts):
// index.html at / and hashed files under /assets/. The server's CSP allows only
// same-origin scripts and styles, so nothing here may be inlined into the HTML.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    sourcemap: false,
  },
});
