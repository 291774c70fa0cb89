/**
 * When the extension's bundle started loading: extension.ts imports this module first, so esbuild
 * runs it before every other module of the bundle, and activation time includes their loading.
 */
export const loadStart = performance.now();
