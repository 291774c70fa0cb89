import type { Secret } from '../../engine/crypto/secret';
import { Qcow2Error } from '../../engine/errors';
import { amendQcow2 } from '../../engine/ops/amend';
import { amendEncryption, type EncryptionAmendOptions } from '../../engine/ops/amendEncryption';
import type { OptionEntry } from '../../engine/ops/options';
import { UsageError } from '../args';
import { QUIET, type CommandSpec } from '../command';
import { IMAGE_OPTS, imageOperand, secretById } from '../imageOpts';
import { optionEntries } from './create';

/** encrypt.* options that only `create` takes (qemu-img: "Invalid parameter … only supported for image creation"). */
const CREATE_ONLY = new Set(['encrypt.format', 'encrypt.cipher-alg', 'encrypt.cipher-mode', 'encrypt.ivgen-alg', 'encrypt.ivgen-hash-alg', 'encrypt.hash-alg']);

function optionError(file: string, detail: string): Qcow2Error {
  return new Qcow2Error(file, 'options', undefined, detail, 'unsupported');
}

/** qemu_opt's number parse: decimal, 0x hex or 0 octal; the key slot may be negative (QEMU then prints it unsigned). */
function numberOption(file: string, key: string, value: string, signed: boolean): number {
  const m = /^(-?)(0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*)$/i.exec(value);
  if (!m || (m[1] && !signed)) throw optionError(file, `Parameter '${key}' expects a number`);
  const body = m[2];
  const n = body.toLowerCase().startsWith('0x') ? parseInt(body.slice(2), 16) : body.length > 1 && body.startsWith('0') ? parseInt(body, 8) : Number(body);
  return m[1] ? -n : n;
}

/**
 * The encrypt.* amend options, their secrets read from --object (the caller wipes `secrets`).
 * `encrypt.key-secret` (the image's own passphrase) is taken in -o as well as in --image-opts.
 */
async function encryptOptions(file: string, entries: readonly OptionEntry[], objects: Parameters<typeof secretById>[0], secrets: Secret[]): Promise<{ opts: EncryptionAmendOptions; keySecretId?: string }> {
  let state: string | undefined, keySecretId: string | undefined;
  const o: Partial<EncryptionAmendOptions> = {};
  const ids: { newSecret?: string; oldSecret?: string } = {};
  for (const { key, value } of entries) {
    if (key === 'encrypt.state') state = value;
    else if (key === 'encrypt.new-secret') ids.newSecret = value;
    else if (key === 'encrypt.old-secret') ids.oldSecret = value;
    else if (key === 'encrypt.key-secret') keySecretId = value;
    else if (key === 'encrypt.keyslot') o.keyslot = numberOption(file, key, value, true);
    else if (key === 'encrypt.iter-time') o.iterTimeMs = numberOption(file, key, value, false);
    else if (CREATE_ONLY.has(key)) throw optionError(file, `Invalid parameter '${key}' (this option is only supported for image creation)`);
    else throw optionError(file, `Invalid parameter '${key}'`);
  }
  if (state === undefined) throw optionError(file, "Parameter 'state' is missing");
  if (state !== 'active' && state !== 'inactive') throw optionError(file, "Parameter 'state' does not accept that value (active or inactive)");
  const read = async (id: string | undefined, option: string): Promise<Secret | undefined> => {
    if (id === undefined) return undefined;
    const s = await secretById(objects, id, `-o ${option}`);
    secrets.push(s);
    return s;
  };
  o.newSecret = await read(ids.newSecret, 'encrypt.new-secret');
  o.oldSecret = await read(ids.oldSecret, 'encrypt.old-secret');
  return { opts: { ...o, state }, keySecretId };
}

export const amendCommand: CommandSpec = {
  name: 'amend',
  summary: 'change an image\'s compat level, lazy refcounts or LUKS key slots in place, as qemu-img amend',
  usage: [
    '[-q] [-f qcow2] -o OPTIONS FILE',
    '--object secret,id=ID,… [--force] -o encrypt.state=active|inactive,… (FILE | --image-opts driver=qcow2,file.filename=FILE,encrypt.key-secret=ID)',
  ],
  options: [
    {
      short: 'o', value: 'OPTIONS', repeatable: true,
      help: 'compat=0.10|1.1, lazy_refcounts=on|off (refcount_bits: its current value only); or LUKS key slots: encrypt.state=active,encrypt.new-secret=ID[,encrypt.keyslot=N][,encrypt.iter-time=MS] '
        + '| encrypt.state=inactive,(encrypt.old-secret=ID | encrypt.keyslot=N), with the image\'s key as encrypt.key-secret=ID (here or in --image-opts)',
    },
    { short: 'f', value: 'qcow2', choices: ['qcow2'], help: 'image format' },
    { short: 'p', help: 'accepted as qemu-img takes it (the change is a few synced writes)' },
    { long: 'force', help: 'as qemu-img amend --force: overwrite an active key slot, or erase the last one (the data becomes unreadable, irreversibly)' },
    { ...IMAGE_OPTS, help: 'FILE is an option list, as qemu-img takes it: driver=qcow2,file.filename=PATH,encrypt.key-secret=ID' },
    QUIET,
  ],
  operands: { names: ['FILE'] },
  async run(args) {
    const lists = args.strings('o');
    if (!lists.length) throw new UsageError('-o OPTIONS is required');
    const entries = optionEntries(lists);
    const enc = entries.filter(e => e.key.startsWith('encrypt.'));
    const operand = await imageOperand(args, args.operands[0]);
    const secrets: Secret[] = [];
    try {
      if (!enc.length) {
        if (args.has('force')) throw new UsageError('--force only applies to encrypt.* options');
        await amendQcow2(operand.path, entries);
        return 0;
      }
      if (enc.length !== entries.length) {
        throw optionError(operand.path, 'amending key slots together with other options is not supported; run amend once for each');
      }
      const { opts, keySecretId } = await encryptOptions(operand.path, enc, args.objects, secrets);
      let key = operand.keys?.({ path: operand.path, depth: 0 });
      if (keySecretId !== undefined) {
        if (key) throw new UsageError('encrypt.key-secret given both in -o and in --image-opts');
        key = await secretById(args.objects, keySecretId, '-o encrypt.key-secret');
        secrets.push(key);
      }
      await amendEncryption(operand.path, key, { ...opts, force: args.has('force') });
      return 0;
    } finally {
      for (const s of secrets) s.wipe();
      operand.dispose();
    }
  },
};
