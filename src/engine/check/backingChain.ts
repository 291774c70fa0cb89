/**
 * Whether an image's backing chain opens, as QEMU opens it before `qemu-img check` runs: each
 * backing file by its backing format (probed when the header names none), qcow2 layers opened with
 * their own backing files in turn. The check itself never reads the chain; this only says whether
 * QEMU could open it, and, when not, its error in QEMU's words ("Could not open backing file: …",
 * once per level, ending with the file that failed) and the `backing-chain-broken` finding.
 */
import * as fs from 'node:fs';
import { Qcow2Error } from '../errors';
import { resolveBackingPath } from '../image/backing';
import { MAX_CHAIN_DEPTH, Qcow2Image } from '../image/image';
import { EXPLAIN, type Finding } from './findings';

/** The block drivers qemu-img 7.2 knows (its --help list): a backing format outside it is "Unknown driver". */
const QEMU_DRIVERS = new Set(('blkdebug blklogwrites blkverify bochs cloop compress copy-before-write copy-on-read dmg file ftp ftps '
  + 'gluster host_cdrom host_device http https iscsi iser luks nbd nfs null-aio null-co nvme parallels preallocate qcow qcow2 qed '
  + 'quorum raw rbd replication snapshot-access ssh throttle vdi vhdx vmdk vpc vvfat').split(' '));

/** strerror() of the errors opening a file gives, as QEMU prints them. */
const STRERROR: Record<string, string> = {
  ENOENT: 'No such file or directory', EACCES: 'Permission denied', EPERM: 'Operation not permitted',
  ENOTDIR: 'Not a directory', ELOOP: 'Too many levels of symbolic links', ENAMETOOLONG: 'File name too long', EIO: 'Input/output error',
};

export interface BrokenChain {
  /** The image whose backing file failed to open (the top image, or a layer below it). */
  image: string;
  /** The backing file's path as QEMU resolves it (relative to the naming image's directory). */
  backingPath: string;
  /** Where the failing image stores the name. */
  nameOffset: number;
  /** The name as the header stores it. */
  backingName: string;
  /** How many levels below the top the failing backing file is (1 = the top image's own backing file). */
  depth: number;
  /** Why, in QEMU's words for the failing file alone: "Could not open 'b.qcow2': No such file or directory", "Unknown driver 'foo'". */
  reason: string;
  /** QEMU's whole message after "Could not open 'TOP': ": "Could not open backing file: " once per level, then the reason. */
  qemuMessage: string;
}

/** Opens the file to see whether the OS lets QEMU open it; the reason in QEMU's words, or null. */
async function openFails(p: string): Promise<string | null> {
  try {
    const fh = await fs.promises.open(p, 'r');
    await fh.close();
    return null;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    return `Could not open '${p}': ${STRERROR[code] ?? (e as Error).message}`;
  }
}

/** The magic QEMU's probe looks for to pick qcow2 over raw when the header names no backing format. */
async function probeFormat(p: string): Promise<string> {
  const fh = await fs.promises.open(p, 'r');
  try {
    const b = Buffer.alloc(4);
    const { bytesRead } = await fh.read(b, 0, 4, 0);
    return bytesRead === 4 && b.readUInt32BE(0) === 0x514649fb ? 'qcow2' : 'raw';
  } finally {
    await fh.close();
  }
}

/**
 * Walks the chain under `img` (opened without its backing, as the check opens it); null when every
 * layer QEMU would open opens (a layer in a format QEMU has but we do not read ends the walk: it is
 * not judged broken).
 */
export async function findBrokenChain(img: Qcow2Image): Promise<BrokenChain | null> {
  const seen = new Set<string>();
  let at: { path: string; backingFile?: string; backingFormat?: string; backingFileOffset: number } = { ...img.header, path: img.path };
  for (let depth = 1; at.backingFile; depth++) {
    const name = at.backingFile;
    const p = resolveBackingPath(at.path, name);
    const nameOffset = at.backingFileOffset;
    const broken = (reason: string): BrokenChain => ({
      image: at.path, nameOffset, backingPath: p, backingName: name, depth, reason,
      qemuMessage: 'Could not open backing file: '.repeat(depth) + reason,
    });
    try { seen.add(fs.realpathSync(at.path)); } catch { /* judged by its own open */ }
    const fmt = at.backingFormat;
    if (fmt !== undefined && !QEMU_DRIVERS.has(fmt)) return broken(`Unknown driver '${fmt}'`);
    const cannot = await openFails(p);
    if (cannot) return broken(cannot);
    if (depth >= MAX_CHAIN_DEPTH) return broken(`backing chain is deeper than ${MAX_CHAIN_DEPTH}`);
    try {
      if (seen.has(fs.realpathSync(p))) return broken(`backing chain loops back to '${p}'`);
    } catch { /* opened a moment ago */ }
    const format = fmt ?? await probeFormat(p);
    if (format === 'raw' || format === 'file') return null;
    if (format !== 'qcow2') return null; // a format QEMU has and we do not read: not ours to judge
    let layer: Qcow2Image;
    try {
      layer = await Qcow2Image.open(p, { openBacking: false });
    } catch (e) {
      if (!(e instanceof Qcow2Error)) throw e;
      return broken(e.code === 'not-qcow2' ? 'Image is not in qcow2 format' : e.message);
    }
    at = { ...layer.header, path: p };
    await layer.close();
  }
  return null;
}

/** The broken chain as a check finding: the file alone was judged; QEMU would not open the image. */
export function brokenChainFinding(b: BrokenChain): Finding {
  const where = b.depth === 1 ? 'its backing file' : `the backing file of "${b.image}" (${b.depth} levels down the chain)`;
  const named = b.backingName === b.backingPath ? '' : ` (named "${b.backingName}")`;
  return {
    kind: 'backing-chain-broken', severity: 'error', structure: 'backing file', ...(b.depth === 1 ? { hostOffset: b.nameOffset } : {}),
    message: `The image's backing chain is broken: ${where} "${b.backingPath}"${named} cannot be opened: ${b.reason}.`,
    explanation: EXPLAIN['backing-chain-broken'],
  };
}
