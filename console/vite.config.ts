// Builds the console into console/dist, served by the node at /console/.
// Preact's JSX runtime through esbuild: no Babel preset needed.
import { defineConfig } from 'vite';

export default defineConfig({
  root: import.meta.dirname,
  base: '/console/',
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    // Inline nothing as data: URLs beyond images; the CSP allows scripts and styles from 'self' only.
    assetsInlineLimit: 0,
    target: 'es2022',
  },
  logLevel: 'warn',
});
