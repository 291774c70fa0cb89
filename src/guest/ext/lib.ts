/**
 * libext2fs (npm `ext2fs`: e2fsprogs built to WebAssembly, with balena's C glue) mounted read-only
 * over a GuestDisk. We call the glue's functions directly (see ext2fs.d.ts for why not its fs.js).
 *
 * - The glue mounts with EXT2_FLAG_RW; the disk we hand it refuses every write, and files are
 *   opened with O_NOATIME (a plain read would update i_atime, i.e. write the inode).
 * - The Emscripten runtime installs process-wide uncaughtException/unhandledRejection handlers
 *   that rethrow; in VS Code's extension host that would turn any stray rejection into a crash,
 *   so they are removed right after the module loads.
 * - The glue reports every failed disk read as EIO; the wrapper keeps the real error (file,
 *   structure, offset) and rethrows that instead.
 * - All calls go through the module's one queue: libext2fs is not reentrant.
 */
import type { GuestDisk } from '../disk';

export const O_RDONLY = 0;
export const O_NOATIME = 0o1000000;
export const O_NOFOLLOW = 0o400000;

interface Lib {
  Module: typeof import('ext2fs/lib/libext2fs');
  util: typeof import('ext2fs/lib/util');
  binding: typeof import('ext2fs/lib/binding');
  ready: Promise<void>;
}
let loaded: Lib | undefined;

function loadLib(): Lib {
  if (loaded) return loaded;
  const events = ['uncaughtException', 'unhandledRejection'];
  const proc = process as unknown as NodeJS.EventEmitter;
  const before = events.map(e => new Set(proc.listeners(e)));
  /* eslint-disable @typescript-eslint/no-require-imports */
  const Module = require('ext2fs/lib/libext2fs') as Lib['Module'];
  const util = require('ext2fs/lib/util') as Lib['util'];
  const binding = require('ext2fs/lib/binding') as Lib['binding'];
  /* eslint-enable @typescript-eslint/no-require-imports */
  events.forEach((e, i) => {
    for (const l of proc.listeners(e)) if (!before[i].has(l)) proc.removeListener(e, l as (...a: unknown[]) => void);
  });
  const ready = Module.calledRun ? Promise.resolve() : new Promise<void>(resolve => { Module.onRuntimeInitialized = resolve; });
  loaded = { Module, util, binding, ready };
  return loaded;
}

/** The io the glue calls: reads from the partition, refuses writes. */
class ReadOnlyDisk {
  lastError: Error | undefined;
  constructor(private readonly disk: GuestDisk, private readonly start: number, private readonly size: number) {}
  async read(buffer: Buffer, bufferOffset: number, length: number, fileOffset: number): Promise<{ bytesRead: number; buffer: Buffer }> {
    try {
      // A block past the end of a partition that is not a whole number of blocks reads as zeros.
      const n = Math.max(0, Math.min(length, this.size - fileOffset));
      if (n > 0) (await this.disk.read(this.start + fileOffset, n)).copy(buffer, bufferOffset);
      if (n < length) buffer.fill(0, bufferOffset + Math.max(0, n), bufferOffset + length);
      return { bytesRead: length, buffer };
    } catch (e) {
      this.lastError = e instanceof Error ? e : new Error(String(e));
      throw e;
    }
  }
  async write(): Promise<never> {
    this.lastError = new Error('the guest lens is read-only');
    throw this.lastError;
  }
  async flush(): Promise<void> {}
  async discard(): Promise<never> {
    throw new Error('the guest lens is read-only');
  }
}

export interface ExtLibStat {
  ino: number;
  mode: number;
  links: number;
  uid: number;
  gid: number;
  size: number;
  atime: number;
  mtime: number;
  ctime: number;
}

export interface MountedExt {
  readdir(path: string): Promise<string[]>;
  lstat(path: string): Promise<ExtLibStat>;
  readlink(path: string): Promise<string>;
  open(path: string, flags: number): Promise<number>;
  read(fd: number, flags: number, length: number, position: number): Promise<Buffer>;
  closeFile(fd: number): Promise<void>;
  close(): Promise<void>;
}

export async function mountExt(disk: GuestDisk, start: number, size: number): Promise<MountedExt> {
  const { Module, util, binding, ready } = loadLib();
  await ready;
  const ro = new ReadOnlyDisk(disk, start, size);
  const call = <A extends unknown[], R>(fn: (...a: A) => Promise<R>) => {
    const hooked = util.withHooks(fn);
    return async (...a: A): Promise<R> => {
      ro.lastError = undefined;
      try {
        return await hooked(...a);
      } catch (e) {
        // read after the await: the disk callback may have set it meanwhile
        const last = ro.lastError as Error | undefined;
        if (last && (e as { code?: string }).code === 'EIO') throw last;
        throw e;
      }
    };
  };
  const diskId = Module.setObject(ro);
  let fsPointer: number;
  try {
    fsPointer = await call(() => util.ccallThrowAsync('node_ext2fs_mount', 'number', ['number'], [diskId]))();
  } catch (e) {
    Module.deleteObject(diskId);
    throw e;
  }
  const fstat = async (fd: number): Promise<ExtLibStat> => ({
    ino: await binding.stat_ino(fd),
    mode: await binding.stat_i_mode(fd),
    links: await binding.stat_i_links_count(fd),
    uid: await binding.stat_i_uid(fd),
    gid: await binding.stat_i_gid(fd),
    size: await binding.stat_i_size(fd),
    atime: await binding.stat_i_atime(fd),
    mtime: await binding.stat_i_mtime(fd),
    ctime: await binding.stat_i_ctime(fd),
  });
  const open = call(async (path: string, flags: number) => binding.open(fsPointer, await util.usePath(path), flags, 0));
  return {
    readdir: call(async (path: string) => {
      const [entries, id] = await util.useObject<Buffer[]>([]);
      await binding.readdir(fsPointer, await util.usePath(path), id);
      return entries.map(b => b.toString('utf8'));
    }),
    lstat: call(async (path: string) => {
      const fd = await binding.open(fsPointer, await util.usePath(path), O_RDONLY | O_NOFOLLOW | O_NOATIME, 0);
      try {
        return await fstat(fd);
      } finally {
        await binding.close(fd);
      }
    }),
    readlink: call(async (path: string) => {
      const [out, id] = await util.useObject<Buffer[]>([]);
      await binding.readlink(fsPointer, await util.usePath(path), id);
      return (out[0] ?? Buffer.alloc(0)).toString('utf8');
    }),
    open,
    read: call(async (fd: number, flags: number, length: number, position: number) => {
      const [, pointer] = await util.useBuffer(length);
      const n = await binding.read(fd, flags, pointer, length, position);
      // Re-take the view after the call: the wasm heap may have grown (and moved) meanwhile.
      return Buffer.from(Module.getBuffer(pointer, n));
    }),
    closeFile: call(async (fd: number) => { await binding.close(fd); }),
    close: async () => {
      try {
        await util.ccallThrowAsync('node_ext2fs_umount', 'number', ['number'], [fsPointer]);
      } catch {
        // umount only flushes what was changed, and nothing was: an error here has nothing to lose
      } finally {
        Module.deleteObject(diskId);
      }
    },
  };
}
