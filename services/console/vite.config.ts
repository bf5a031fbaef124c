import { defineConfig } from 'vite';

// Served by the api-gateway at /console/ (see services/api-gateway/src/console.ts). Hashed asset names
// let the gateway cache them for a year; index.html is always revalidated.
export default defineConfig({
  base: '/console/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // The polyfill would be an inline script, which the page's Content-Security-Policy refuses.
    modulePreload: { polyfill: false },
    sourcemap: true,
  },
});
