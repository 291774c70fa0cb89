/**
 * `--image-opts`, as qemu-img takes it: the IMAGE operand is an option list naming the file and
 * the secrets of its encrypted layers instead of a plain file name:
 *   driver=qcow2,file.filename=PATH,encrypt.key-secret=ID[,backing.encrypt.key-secret=ID2[,backing.backing.…]]
 * Each ID names an `--object secret,id=ID,…` (objects.ts). The secrets' bytes are read once, held
 * as Secret values (which never print) and wiped when the command ends (`dispose`).
 * Errors name option keys and secret ids, never a value that could be a passphrase.
 */
import { Secret } from '../engine/crypto/secret';
import type { KeyLookup } from '../engine/image/encryption';
import type { OptionSpec, ParsedArgs } from './command';
import { UsageError } from './errors';
import { findSecret, secretBytes, type QemuObject } from './objects';
import { parseOptionList } from './optlist';

export const IMAGE_OPTS: OptionSpec = {
  long: 'image-opts',
  help: 'the image operand is an option list, as qemu-img takes it: driver=qcow2,file.filename=PATH[,encrypt.key-secret=ID][,backing.encrypt.key-secret=ID] (ID: an --object secret)',
};

/** Keys accepted without effect (qemu-img takes them; reads here are always read-only and never cached). */
const IGNORED = new Set(['read-only', 'force-share', 'file.driver', 'file.locking', 'cache.direct', 'cache.no-flush', 'file.aio', 'encrypt.format', 'node-name']);
const KEY_SECRET = /^((?:backing\.)*)encrypt\.key-secret$/;

export interface ImageOperand {
  /** The image file. */
  path: string;
  /** Passphrases of the chain's encrypted layers, by depth; undefined when none were named. */
  keys?: KeyLookup;
  /** Wipes the secrets read for this operand. */
  dispose(): void;
}

/** Reads an --object secret's bytes as a Secret; a missing id is a usage error naming the id. */
export async function secretById(objects: readonly QemuObject[], id: string, option: string): Promise<Secret> {
  const obj = findSecret(objects, id);
  if (!obj) throw new UsageError(`${option}: no --object secret with id ${id}`);
  return Secret.adopt(await secretBytes(obj));
}

/** A plain file name, or (with --image-opts) the option list parsed and its secrets read. */
export async function imageOperand(args: ParsedArgs, operand: string): Promise<ImageOperand> {
  if (!args.has('image-opts')) return { path: operand, dispose() {} };
  const entries = parseOptionList(operand, '--image-opts');
  let path: string | undefined;
  const byDepth = new Map<number, string>();
  for (const { key, value } of entries) {
    const m = KEY_SECRET.exec(key);
    if (key === 'driver') {
      if (value !== 'qcow2') throw new UsageError('--image-opts: driver must be qcow2');
    } else if (key === 'file.filename' || key === 'filename') {
      if (path !== undefined) throw new UsageError('--image-opts: file.filename given twice');
      path = value;
    } else if (m) {
      const depth = m[1].length / 'backing.'.length;
      if (byDepth.has(depth)) throw new UsageError(`--image-opts: ${key} given twice`);
      byDepth.set(depth, value);
    } else if (!IGNORED.has(key)) {
      // not echoed: a mistyped list may have put the passphrase where a key belongs
      throw new UsageError('--image-opts: unknown option (taken: driver, file.filename, encrypt.key-secret, backing.encrypt.key-secret, …)');
    }
  }
  if (!path) throw new UsageError('--image-opts: file.filename is required');
  const secrets = new Map<number, Secret>();
  const dispose = () => { for (const s of secrets.values()) s.wipe(); };
  try {
    for (const [depth, id] of byDepth) secrets.set(depth, await secretById(args.objects, id, `--image-opts ${'backing.'.repeat(depth)}encrypt.key-secret`));
  } catch (e) {
    dispose();
    throw e;
  }
  return { path, keys: secrets.size ? ({ depth }) => secrets.get(depth) : undefined, dispose };
}

/** Runs `fn` with every operand opened as imageOperand, disposing their secrets afterwards. */
export async function withImageOperands<T>(args: ParsedArgs, operands: readonly string[], fn: (ops: ImageOperand[]) => Promise<T>): Promise<T> {
  const ops: ImageOperand[] = [];
  try {
    for (const o of operands) ops.push(await imageOperand(args, o));
    return await fn(ops);
  } finally {
    for (const o of ops) o.dispose();
  }
}
