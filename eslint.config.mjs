// Lint as part of `npm test`: the recommended sets, typed rules that catch real bugs (floating
// promises), and the layering the architecture depends on (libraries never reach into services; no
// import cycles; every error goes through the catalog in libs/schemas/src/errors.ts).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';

const root = path.dirname(fileURLToPath(import.meta.url));
const SERVICE_PACKAGES = ['@ic/api-gateway', '@ic/responses', '@ic/titler', '@ic/stack', '@ic/test-support'];

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'helm/**', '.data/**', '**/*.js', '**/*.cjs', '**/*.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { project: ['./tsconfig.tests.json'], tsconfigRootDir: root },
    },
    plugins: { 'import-x': importX },
    settings: {
      'import-x/extensions': ['.ts'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      // tsconfig.tests.json maps every @ic/* package to its sources, so cycles across packages show too.
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.js', '.json'], tsconfig: { configFile: path.join(root, 'tsconfig.tests.json') } })],
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false, attributes: false } }],
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      'import-x/no-self-import': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Initialising a variable before a try whose catch reads it is deliberate here, not dead code.
      'no-useless-assignment': 'off',
      'no-restricted-syntax': [
        'error',
        {
          selector: "NewExpression[callee.name='AppError']",
          message: "Throw catalogued errors: apiError('code', args) from @ic/schemas (add the code to ERROR_CATALOG).",
        },
      ],
    },
  },
  {
    // The console is browser code with its own compiler settings (DOM, bundler resolution).
    files: ['services/console/**/*.ts'],
    languageOptions: {
      parserOptions: { project: ['./services/console/tsconfig.json'], tsconfigRootDir: root },
    },
  },
  {
    // The catalog itself builds AppErrors.
    files: ['libs/schemas/src/errors.ts'],
    rules: { 'no-restricted-syntax': 'off' },
  },
  {
    // Layering: a library is used by services, never the other way round (tests may use test support).
    files: ['libs/*/src/**/*.ts'],
    ignores: ['**/*.test.ts', 'libs/*/src/test-helpers.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            ...SERVICE_PACKAGES.map((name) => ({ name, message: 'Libraries (libs/*) must not import services, deploy or test code.' })),
            { name: '@ic/schemas', importNames: ['badRequest', 'notFound', 'unauthorized', 'forbidden', 'unavailable'], message: "Use apiError('code', args): every error code lives in ERROR_CATALOG." },
          ],
          patterns: [{ group: ['**/services/**', '**/deploy/**', '**/test/**'], message: 'Libraries (libs/*) must not import services, deploy or test code.' }],
        },
      ],
    },
  },
  {
    files: ['**/*.test.ts', 'test/**/*.ts'],
    rules: {
      // Tests build AppErrors to check the mapping.
      'no-restricted-syntax': 'off',
    },
  },
);
