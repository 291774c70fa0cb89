/**
 * A usage error: the command line is wrong (exit 64). Its message names options and operands, never
 * their values: a value may be a passphrase (`--object secret,…,data=…`) or one typed in the wrong
 * place, and error messages end up in logs and terminals.
 */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/**
 * Each command is its own bundle (build.mjs), with its own copy of this class: main recognises a
 * usage error from any of them by its name, not by `instanceof`.
 */
export function isUsageError(e: unknown): e is UsageError {
  return e instanceof Error && e.name === 'UsageError';
}
