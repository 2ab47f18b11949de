import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['labextension/src/**/*.spec.ts', 'labextension/src/**/*.spec.tsx'],
    environment: 'jsdom',
    css: false
  }
});
