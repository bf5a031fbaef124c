/** One jest run for the whole monorepo: TS via swc, workspace imports mapped to their sources. */
// ESM-only packages that jest must compile to CommonJS: p-limit for the queue; the AI SDK (`ai`, `@ai-sdk/*`)
// and what it imports, for test-clients.
const esmOnly = ['p-limit', 'yocto-queue', 'ai', '@ai-sdk', 'eventsource-parser', '@workflow', '@vercel/oidc'];

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/libs', '<rootDir>/services', '<rootDir>/test', '<rootDir>/test-clients'],
  testMatch: ['**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
  transform: {
    '^.+\\.(t|j|mj)sx?$': ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' } }],
  },
  transformIgnorePatterns: [`^(?!.*/node_modules/(${esmOnly.join('|')})/).*/node_modules/`],
  moduleNameMapper: {
    // The AI SDK imports zod's locale by its ESM file name; zod ships the same module as .cjs.
    '^zod/v4/locales/en\\.js$': 'zod/v4/locales/en.cjs',
    '^@ic/(api-gateway|responses|titler)$': '<rootDir>/services/$1/src',
    '^@ic/(stack)$': '<rootDir>/deploy/src',
    '^@ic/test-support$': '<rootDir>/test/support',
    '^@ic/([a-z-]+)$': '<rootDir>/libs/$1/src',
  },
  globalSetup: '<rootDir>/test/global-setup.mjs',
  globalTeardown: '<rootDir>/test/global-teardown.mjs',
  testTimeout: 30000,
  maxWorkers: 2,
};
