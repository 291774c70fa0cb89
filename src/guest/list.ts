/** Listing for `ls` (and the editor's tree): one path, a directory's entries, or a whole subtree, streamed. */
import type { GuestFileSystem, GuestStat } from './fs';
import { joinGuestPath, splitGuestPath } from './fs';

export interface ListedEntry extends GuestStat {
  /** Full path from the file system's root. */
  path: string;
}

export interface ListOptions {
  recursive?: boolean;
  /** Depth limit for recursion (default: unlimited; a directory loop is impossible as each is entered once by inode). */
  maxDepth?: number;
}

/**
 * Lists `path`: a directory's entries (recursively with `recursive`, parents before children,
 * each directory once), or the file itself.
 */
export async function* listPath(fs: GuestFileSystem, path: string, opts: ListOptions = {}): AsyncGenerator<ListedEntry> {
  const normal = '/' + splitGuestPath(path).join('/');
  const st = await fs.stat(normal);
  if (st.type !== 'dir') {
    yield { ...st, path: normal };
    return;
  }
  const seen = new Set<number>();
  if (st.inode !== undefined) seen.add(st.inode);
  const stack: Array<[string, number]> = [[normal, 0]];
  while (stack.length) {
    const [dir, depth] = stack.shift()!;
    const entries = await fs.readdir(dir);
    const subdirs: Array<[string, number]> = [];
    for (const e of entries) {
      const p = joinGuestPath(dir, e.name);
      yield { ...e, path: p };
      if (opts.recursive && e.type === 'dir' && (opts.maxDepth === undefined || depth + 1 < opts.maxDepth)) {
        if (e.inode !== undefined && e.inode !== 0) {
          if (seen.has(e.inode)) continue;
          seen.add(e.inode);
        }
        subdirs.push([p, depth + 1]);
      }
    }
    stack.unshift(...subdirs);
  }
}
