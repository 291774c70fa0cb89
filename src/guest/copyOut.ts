/**
 * Copy Out: a guest file or folder to the host, recursively; mode (permission bits) and times kept,
 * symlinks recreated (never followed). Nothing is written outside DEST: guest names that are not
 * plain names ("..", "/" inside, NUL) are refused, files are created with O_EXCL (which also refuses
 * to follow a symlink at the destination), and an existing destination folder is entered only if it
 * is a real folder, not a symlink to one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { GuestFileSystem, GuestStat } from './fs';
import { joinGuestPath, splitGuestPath } from './fs';

export interface CopyResult {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  /** Entries not copied (device nodes, sockets, FIFOs) and why. */
  skipped: string[];
}

function safeName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0');
}

async function lstatOrNull(p: string): Promise<fs.Stats | null> {
  try {
    return await fs.promises.lstat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/**
 * Copies guest `source` to host `dest` as `cp -r` does: into `dest/<name>` when dest is an
 * existing folder, else to `dest` itself.
 */
export async function copyOut(gfs: GuestFileSystem, source: string, dest: string, signal?: AbortSignal): Promise<CopyResult> {
  const src = '/' + splitGuestPath(source).join('/');
  const st = await gfs.stat(src);
  const result: CopyResult = { files: 0, dirs: 0, symlinks: 0, bytes: 0, skipped: [] };
  const existing = await lstatOrNull(dest);
  let target = path.resolve(dest);
  if (existing?.isDirectory()) {
    const name = src === '/' ? '' : src.slice(src.lastIndexOf('/') + 1);
    if (name && !safeName(name)) throw new Error(`refusing guest name ${JSON.stringify(name)}`);
    if (name) target = path.join(target, name);
  }
  const root = target;
  const within = (p: string): void => {
    const rel = path.relative(root, p);
    if (rel.startsWith('..') || path.isAbsolute(rel)) throw new Error(`refusing to write ${p}, outside ${root}`);
  };

  const copyEntry = async (guestPath: string, e: GuestStat, hostPath: string): Promise<void> => {
    signal?.throwIfAborted();
    within(hostPath);
    switch (e.type) {
      case 'file': {
        const out = await fs.promises.open(hostPath, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
        try {
          for await (const chunk of await gfs.createReadStream(guestPath)) {
            signal?.throwIfAborted();
            const b = chunk as Buffer;
            for (let at = 0; at < b.length;) at += (await out.write(b, at, b.length - at)).bytesWritten;
          }
          await out.chmod(e.mode & 0o777);
          await out.utimes(e.atime ?? e.mtime, e.mtime);
        } finally {
          await out.close();
        }
        result.files++;
        result.bytes += e.size;
        return;
      }
      case 'symlink':
        await fs.promises.symlink(e.target ?? '', hostPath);
        await fs.promises.lutimes(hostPath, e.atime ?? e.mtime, e.mtime).catch(() => undefined);
        result.symlinks++;
        return;
      case 'dir': {
        const have = await lstatOrNull(hostPath);
        if (have && !have.isDirectory()) throw new Error(`${hostPath} exists and is not a folder (a symlink is not entered)`);
        if (!have) await fs.promises.mkdir(hostPath, { mode: 0o700 });
        result.dirs++;
        for (const child of await gfs.readdir(guestPath)) {
          if (!safeName(child.name)) {
            result.skipped.push(`${joinGuestPath(guestPath, child.name)}: not a plain file name`);
            continue;
          }
          await copyEntry(joinGuestPath(guestPath, child.name), child, path.join(hostPath, child.name));
        }
        await fs.promises.chmod(hostPath, e.mode & 0o777);
        await fs.promises.utimes(hostPath, e.atime ?? e.mtime, e.mtime);
        return;
      }
      default:
        result.skipped.push(`${guestPath}: ${modeKind(e.mode)} not copied`);
    }
  };
  await copyEntry(src, st, target);
  return result;
}

function modeKind(mode: number): string {
  switch (mode & 0o170000) {
    case 0o020000: return 'character device';
    case 0o060000: return 'block device';
    case 0o010000: return 'FIFO';
    case 0o140000: return 'socket';
    default: return 'special file';
  }
}
