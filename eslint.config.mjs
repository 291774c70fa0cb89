// ESLint (flat config): typescript-eslint's recommended rules plus the type-aware rules that catch
// this code base's real hazards. Import cycles and layer directions are checked by scripts/cycles.mjs (madge). `npm run lint` runs both; so does `npm test` (after tsc).
// The README's Dependencies section says why each tool is here.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

const TS = ['src/**/*.ts', 'webview/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts'];


export default defineConfig(
  { ignores: ['node_modules/', 'dist/', 'dist-test/', 'media/webview.js', '.vscode-e2e/', 'e2e-out/', 'test-out/', 'tmp/', 'sample/'] },

  // Plain JavaScript (build script, e2e harness, scripts): ESLint's recommended rules, Node globals.
  {
    files: ['**/*.mjs', '**/*.js'],
    extends: [js.configs.recommended],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: 'module',
      globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', __dirname: 'readonly', fetch: 'readonly', AbortController: 'readonly' },
    },
  },

  // TypeScript: recommended + type-checked rules chosen for this code base.
  {
    files: TS,
    extends: [js.configs.recommended, ...tseslint.configs.recommended],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // tsc already reports undefined names (and knows the DOM and Node globals)
      'no-undef': 'off',
      // a `let` read by a closure before its one assignment (a callback wired up before the object it
      // calls exists) cannot be a const
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // A promise nobody awaits loses its rejection: an unhandled error in the extension host, or a
      // write that is still running when the CLI exits. (node:test's test()/describe() return
      // promises the runner itself tracks.)
      '@typescript-eslint/no-floating-promises': ['error', { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }] }],
      // An async callback handed to an API that ignores its result (an event emitter, a VS Code
      // event, a webview message handler) drops its errors and its ordering.
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: true, attributes: false } }],
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/no-unnecessary-type-assertion': 'error',
      // A template literal given an object or an undefined is how "[object Object]" and
      // "undefined" get into a user's error message.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowNullish: false, allowAny: false, allowNever: true }],
      '@typescript-eslint/only-throw-error': 'error',
      '@typescript-eslint/prefer-promise-reject-errors': 'error',
    },
  },

  // Tests and benchmarks print whatever a value is in their messages (undefined and null included:
  // "ours undefined vs qemu-img 3" is the point of the message).
  { files: ['test/**/*.ts', 'bench/**/*.ts'], rules: { '@typescript-eslint/restrict-template-expressions': 'off' } },

);
