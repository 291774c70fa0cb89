/**
 * The `qcow2-guest` FileSystemProvider: the files inside a VM disk, read-only, in ordinary VS Code
 * tabs and Explorer folders (URI shape: guestUri.ts). It reads through the guest layer
 * (src/guest/: partition table, ext2/3/4 by libext2fs, FAT) over the image opened read-only with its
 * backing chain; every write is refused with NoPermissions. Symbolic links are followed inside the
 * guest file system (never onto the host).
 */
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { GuestPathError } from '../guest/errors';
import type { GuestFileSystem, GuestStat } from '../guest/fs';
import type { Guest } from '../guest/guest';
import { GuestPool, resolveGuestLinks } from './guestPool';
import { GUEST_SCHEME, guestUriPath, parseGuestUriPath, type GuestLocation } from './guestUri';

export { GUEST_SCHEME } from './guestUri';

/** The largest guest file readFile hands VS Code in one buffer (Node's own Buffer limit is near 4 GiB). */
export const MAX_GUEST_READ_FILE = 2 ** 31 - 1;

export function guestUri(loc: GuestLocation): vscode.Uri {
  return vscode.Uri.from({ scheme: GUEST_SCHEME, path: guestUriPath(loc) });
}

export function parseGuestUri(uri: vscode.Uri): GuestLocation {
  const loc = uri.scheme === GUEST_SCHEME ? parseGuestUriPath(uri.path) : undefined;
  if (!loc) throw vscode.FileSystemError.FileNotFound(uri);
  return loc;
}

function fileType(st: GuestStat): vscode.FileType {
  switch (st.type) {
    case 'file': return vscode.FileType.File;
    case 'dir': return vscode.FileType.Directory;
    case 'symlink': return vscode.FileType.SymbolicLink;
    default: return vscode.FileType.Unknown;
  }
}

export class GuestFileSystemProvider implements vscode.FileSystemProvider, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<vscode.FileChangeEvent[]>();
  readonly onDidChangeFile = this.changed.event;

  constructor(readonly pool: GuestPool = new GuestPool()) {}

  static register(context: vscode.ExtensionContext, pool?: GuestPool): GuestFileSystemProvider {
    const p = new GuestFileSystemProvider(pool);
    context.subscriptions.push(p, vscode.workspace.registerFileSystemProvider(GUEST_SCHEME, p, { isReadonly: true, isCaseSensitive: true }));
    return p;
  }

  /** The image changed (a sparsify wrote it): reopen it at the next read and tell open views. */
  imageChanged(imagePath: string): void {
    this.pool.invalidate(imagePath);
    this.changed.fire([{ type: vscode.FileChangeType.Changed, uri: guestUri({ image: imagePath, path: '/' }) }]);
  }

  /** Runs fn on the location's file system, mapping guest-layer errors to FileSystemErrors. */
  private async withFs<T>(uri: vscode.Uri, fn: (gfs: GuestFileSystem, loc: GuestLocation & { partition: number }, guest: Guest) => Promise<T>, atRoot?: (guest: Guest) => Promise<T>): Promise<T> {
    const loc = parseGuestUri(uri);
    try {
      return await this.pool.use(loc.image, async guest => {
        if (loc.partition === undefined) {
          if (atRoot) return atRoot(guest);
          throw vscode.FileSystemError.FileIsADirectory(uri);
        }
        return fn(guest.fileSystem(loc.partition), { ...loc, partition: loc.partition }, guest);
      });
    } catch (e) {
      throw toFsError(e, uri);
    }
  }

  watch(): vscode.Disposable {
    return new vscode.Disposable(() => undefined); // changes are announced by imageChanged()
  }

  async stat(uri: vscode.Uri): Promise<vscode.FileStat> {
    return this.withFs(uri, async (gfs, loc) => {
      const r = await resolveGuestLinks(gfs, loc.path);
      const own = r.dangling ? r.stat : await gfs.stat(loc.path);
      let type = fileType(r.stat);
      if (own.type === 'symlink') type = r.dangling ? vscode.FileType.SymbolicLink : type | vscode.FileType.SymbolicLink;
      return {
        type, size: r.dangling ? own.size : r.stat.size,
        mtime: r.stat.mtime * 1000, ctime: (r.stat.ctime ?? r.stat.mtime) * 1000,
        permissions: vscode.FilePermission.Readonly,
      };
    }, async () => {
      const st = await fs.promises.stat(parseGuestUri(uri).image);
      return { type: vscode.FileType.Directory, size: 0, mtime: st.mtimeMs, ctime: st.ctimeMs, permissions: vscode.FilePermission.Readonly };
    });
  }

  async readDirectory(uri: vscode.Uri): Promise<[string, vscode.FileType][]> {
    return this.withFs(uri, async (gfs, loc) => {
      const dir = await resolveGuestLinks(gfs, loc.path);
      if (dir.stat.type !== 'dir') throw vscode.FileSystemError.FileNotADirectory(uri);
      const out: [string, vscode.FileType][] = [];
      for (const e of await gfs.readdir(dir.path)) {
        let t = fileType(e);
        if (e.type === 'symlink') {
          const r = await resolveGuestLinks(gfs, `${dir.path === '/' ? '' : dir.path}/${e.name}`).catch(() => undefined);
          t = r && !r.dangling ? fileType(r.stat) | vscode.FileType.SymbolicLink : vscode.FileType.SymbolicLink;
        }
        out.push([e.name, t]);
      }
      return out;
    }, async guest => guest.partitions.filter(p => p.fileSystem).map(p => [String(p.number), vscode.FileType.Directory] as [string, vscode.FileType]));
  }

  async readFile(uri: vscode.Uri): Promise<Uint8Array> {
    return this.withFs(uri, async (gfs, loc) => {
      const r = await resolveGuestLinks(gfs, loc.path);
      if (r.dangling) throw vscode.FileSystemError.FileNotFound(uri);
      if (r.stat.type === 'dir') throw vscode.FileSystemError.FileIsADirectory(uri);
      if (r.stat.size > MAX_GUEST_READ_FILE) throw vscode.FileSystemError.Unavailable(`${loc.path} is ${r.stat.size} bytes, too large to open in an editor; use Copy Out…`);
      return gfs.readFile(r.path);
    });
  }

  createDirectory(uri: vscode.Uri): never { throw readOnly(uri); }
  writeFile(uri: vscode.Uri): never { throw readOnly(uri); }
  delete(uri: vscode.Uri): never { throw readOnly(uri); }
  rename(uri: vscode.Uri): never { throw readOnly(uri); }
  copy(_source: vscode.Uri, destination: vscode.Uri): never { throw readOnly(destination); }

  dispose(): void {
    this.pool.dispose();
    this.changed.dispose();
  }
}


function readOnly(uri: vscode.Uri): vscode.FileSystemError {
  return vscode.FileSystemError.NoPermissions(`${uri.path}: guest files are read-only in QCOW2 Lens (use Copy Out… to get a writable copy)`);
}

/** Guest-layer errors as the FileSystemErrors VS Code understands (not found, not a folder, …). */
export function toFsError(e: unknown, uri: vscode.Uri): vscode.FileSystemError {
  if (e instanceof vscode.FileSystemError) return e;
  if (e instanceof GuestPathError) {
    switch (e.code) {
      case 'ENOENT': return vscode.FileSystemError.FileNotFound(uri);
      case 'ENOTDIR': return vscode.FileSystemError.FileNotADirectory(uri);
      case 'EISDIR': return vscode.FileSystemError.FileIsADirectory(uri);
      default: return vscode.FileSystemError.Unavailable(e.message);
    }
  }
  const code = (e as { code?: string } | undefined)?.code;
  if (code === 'ENOENT' || code === 'not-found') return vscode.FileSystemError.FileNotFound(uri); // the image file itself
  if (code === 'EACCES' || code === 'permission-denied') return vscode.FileSystemError.NoPermissions(e instanceof Error ? e.message : String(e));
  return vscode.FileSystemError.Unavailable(e instanceof Error ? e.message : String(e));
}
