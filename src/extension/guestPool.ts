/**
 * The guest views the extension keeps open (no `vscode` import): one opened image (qcow2 with its
 * backing chain, read-only) per image file, shared by the `qcow2-guest` file system, Copy Out and
 * the quick pick. An entry is reopened when the file changed (size, mtime or inode differ: a
 * sparsify or compaction renamed a new file over it, a VM wrote to it) and closed after it has been
 * idle for a while, so an image is not held open for the whole session.
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { GuestPathError } from '../guest/errors';
import { splitGuestPath, type GuestFileSystem, type GuestStat } from '../guest/fs';
import type { Guest } from '../guest/guest';
import { openGuestImage, type GuestImage } from '../guest/image';

interface Entry {
  stamp: string;
  opening: Promise<GuestImage>;
  users: number;
  stale: boolean;
  timer?: NodeJS.Timeout;
}

function stampOf(st: fs.Stats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
}

export class GuestPool {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly idleMs = 30_000) {}

  /** Runs fn with the guest of `imagePath` open (opened now, or reused while the file is unchanged). */
  async use<T>(imagePath: string, fn: (g: Guest) => Promise<T>): Promise<T> {
    const key = nodePath.resolve(imagePath);
    const stamp = stampOf(await fs.promises.stat(key));
    let e = this.entries.get(key);
    if (e && e.stamp !== stamp) {
      this.retire(key, e);
      e = undefined;
    }
    if (!e) {
      const opening = openGuestImage(key, { strict: false });
      e = { stamp, opening, users: 0, stale: false };
      this.entries.set(key, e);
      const mine = e;
      opening.catch(() => { if (this.entries.get(key) === mine) this.entries.delete(key); });
    }
    clearTimeout(e.timer);
    e.users++;
    try {
      const img = await e.opening;
      return await fn(img.guest);
    } finally {
      e.users--;
      this.settle(key, e);
    }
  }

  /** Forgets the open view of one image (or all): the next use reopens it. */
  invalidate(imagePath?: string): void {
    for (const [k, e] of [...this.entries]) {
      if (imagePath === undefined || k === nodePath.resolve(imagePath)) this.retire(k, e);
    }
  }

  /** Number of images held open now (for tests). */
  get size(): number {
    return this.entries.size;
  }

  dispose(): void {
    this.invalidate();
  }

  private retire(key: string, e: Entry): void {
    if (this.entries.get(key) === e) this.entries.delete(key);
    e.stale = true;
    this.settle(key, e);
  }

  private settle(key: string, e: Entry): void {
    if (e.users > 0) return;
    clearTimeout(e.timer);
    const close = () => {
      if (this.entries.get(key) === e) this.entries.delete(key);
      void e.opening.then(img => img.close(), () => undefined).catch(() => undefined);
    };
    if (e.stale) close();
    else {
      e.timer = setTimeout(close, this.idleMs);
      e.timer.unref?.();
    }
  }
}

/** How many symbolic links one lookup follows before it gives up (as Linux's MAXSYMLINKS). */
export const MAX_LINK_HOPS = 40;

/**
 * Follows `path` through symbolic links inside the guest file system (a target is a guest path:
 * absolute ones from this file system's root, relative ones from the link's folder). Returns the
 * final path and its stat; a dangling link gives `dangling: true` with the link's own stat.
 */
export async function resolveGuestLinks(gfs: GuestFileSystem, path: string): Promise<{ path: string; stat: GuestStat; dangling?: boolean }> {
  let p = '/' + splitGuestPath(path).join('/');
  let st = await gfs.stat(p);
  const first = st;
  for (let hops = 0; st.type === 'symlink'; hops++) {
    if (hops >= MAX_LINK_HOPS) throw new GuestPathError('ELOOP', path, 'too many levels of symbolic links');
    const target = st.target ?? '';
    const dir = p.slice(0, p.lastIndexOf('/')) || '/';
    const next = '/' + splitGuestPath(target.startsWith('/') ? target : `${dir}/${target}`).join('/');
    try {
      st = await gfs.stat(next);
    } catch (e) {
      if (e instanceof GuestPathError && (e.code === 'ENOENT' || e.code === 'ENOTDIR')) return { path: p, stat: first, dangling: true };
      throw e;
    }
    p = next;
  }
  return { path: p, stat: st };
}
