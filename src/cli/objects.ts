/**
 * `--object` definitions, as qemu-img takes them, parsed into typed values. Only `secret` objects
 * mean anything to qcow2-lens (passphrases for encrypted images):
 *   secret,id=ID,data=TEXT[,format=raw|base64]
 *   secret,id=ID,file=PATH[,format=raw|base64]
 * Nothing here ever puts a value into an error message: errors name the object type (only when it
 * is one QEMU knows), the property and the id.
 */
import * as fs from 'node:fs/promises';
import { UsageError } from './errors';
import { parseOptionList } from './optlist';

export interface SecretObject {
  type: 'secret';
  id: string;
  /** The secret inline (visible in the process list) or in a file. */
  source: { kind: 'data'; data: string } | { kind: 'file'; path: string };
  format: 'raw' | 'base64';
}

export type QemuObject = SecretObject;

/** QEMU object types (qemu-img --object help): named in an error as unsupported; anything else is not echoed. */
const KNOWN_QOM_TYPES = new Set([
  'authz-list', 'authz-listfile', 'authz-pam', 'authz-simple', 'can-bus', 'colo-compare', 'cryptodev-backend',
  'filter-buffer', 'filter-dump', 'filter-mirror', 'filter-redirector', 'filter-replay', 'filter-rewriter', 'input-barrier',
  'input-linux', 'iothread', 'main-loop', 'memory-backend-epc', 'memory-backend-file', 'memory-backend-memfd',
  'memory-backend-ram', 'pr-manager-helper', 'qtest', 'rng-builtin', 'rng-egd', 'rng-random', 'secret_keyring',
  'sev-guest', 'thread-context', 'throttle-group', 'tls-cipher-suites', 'tls-creds-anon', 'tls-creds-psk', 'tls-creds-x509', 'x-remote-object',
]);

const SECRET_PROPERTIES = new Set(['qom-type', 'id', 'data', 'file', 'format']);

/** Parses one --object value. */
export function parseObject(text: string): QemuObject {
  const entries = parseOptionList(text, '--object', 'qom-type');
  const type = entries[0]?.value ?? '';
  if (type !== 'secret') {
    throw new UsageError(KNOWN_QOM_TYPES.has(type)
      ? `--object: object type ${type} is not supported (only secret)`
      : '--object: unknown object type (only secret is supported)');
  }
  const props = new Map<string, string>();
  for (const { key, value } of entries.slice(1)) {
    if (key === 'keyid' || key === 'iv') throw new UsageError(`--object secret: property ${key} (a secret encrypted with another secret) is not supported`);
    if (!SECRET_PROPERTIES.has(key)) throw new UsageError('--object secret: unknown property (the properties are id, data, file, format)');
    if (props.has(key)) throw new UsageError(`--object secret: property ${key} given twice`);
    props.set(key, value);
  }
  const id = props.get('id');
  if (!id) throw new UsageError('--object secret: id is required');
  if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(id)) throw new UsageError('--object secret: id must start with a letter and contain only letters, digits, "-", "." and "_"');
  const data = props.get('data'), file = props.get('file');
  if (data !== undefined && file !== undefined) throw new UsageError(`--object secret ${id}: data and file are mutually exclusive`);
  if (data === undefined && file === undefined) throw new UsageError(`--object secret ${id}: data or file is required`);
  const format = props.get('format') ?? 'raw';
  if (format !== 'raw' && format !== 'base64') throw new UsageError(`--object secret ${id}: format must be raw or base64`);
  return {
    type: 'secret', id, format,
    source: data !== undefined ? { kind: 'data', data } : { kind: 'file', path: file ?? '' },
  };
}

/** Parses every --object value, in order; ids must be unique, as QEMU requires. */
export function parseObjects(texts: readonly string[]): QemuObject[] {
  const objects = texts.map(parseObject);
  const seen = new Set<string>();
  for (const o of objects) {
    if (seen.has(o.id)) throw new UsageError(`--object: id ${o.id} is defined twice`);
    seen.add(o.id);
  }
  return objects;
}

export function findSecret(objects: readonly QemuObject[], id: string): SecretObject | undefined {
  return objects.find(o => o.type === 'secret' && o.id === id);
}

/** The secret's bytes (base64 decoded when format=base64). Errors name the id, never the content. */
export async function secretBytes(secret: SecretObject): Promise<Buffer> {
  let raw: Buffer;
  if (secret.source.kind === 'data') raw = Buffer.from(secret.source.data, 'utf8');
  else {
    try {
      raw = await fs.readFile(secret.source.path);
    } catch (e) {
      throw new Error(`secret ${secret.id}: cannot read ${secret.source.path} (${(e as NodeJS.ErrnoException).code ?? 'error'})`, { cause: e });
    }
  }
  if (secret.format === 'raw') return raw;
  const text = raw.toString('ascii').trim();
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw new Error(`secret ${secret.id}: not valid base64`);
  return Buffer.from(text, 'base64');
}
