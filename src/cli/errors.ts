/**
 * A usage error: the command line is wrong (exit 64). Its message names options and operands, never
 * their values: a value may be a passphrase (`--object secret,…,data=…`) or one typed in the wrong
 * place, and error messages end up in logs and terminals.
 */
export class UsageError extends Error {}
