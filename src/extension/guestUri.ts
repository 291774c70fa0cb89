/**
 * The `qcow2-guest` URI shape, in one place (no `vscode` import, so it is tested in Node):
 *
 *     qcow2-guest:/<image>/<partition>/<path inside the file system>
 *
 * - <image> is the image file's absolute host path as ONE path segment, percent-encoded
 *   (encodeURIComponent): `/vm/disk.qcow2` → `%2Fvm%2Fdisk.qcow2`. The encoding is part of the
 *   URI's (decoded) path, so `Uri.toString()` shows it as `%252F…` and parses back unchanged.
 * - <partition> is the partition number as Linux gives it (`/dev/vda1` → `1`, logical MBR
 *   partitions 5, 6, …), or `0` for a disk without a partition table (the file system fills it).
 * - the rest is the guest path, `/etc/fstab`.
 *
 * `qcow2-guest:/<image>/` is the image's root: a folder holding one folder per browsable file
 * system (named by partition number), so the whole disk can be added to the workspace too.
 */

export const GUEST_SCHEME = 'qcow2-guest';

export interface GuestLocation {
  /** The image file's host path. */
  image: string;
  /** Absent: the image root (the list of partitions). */
  partition?: number;
  /** Absolute guest path inside the partition's file system ('/' for its root). */
  path: string;
}

/** The URI path (decoded form, as vscode.Uri.path holds it) of a guest location. */
export function guestUriPath(loc: GuestLocation): string {
  const img = '/' + encodeURIComponent(loc.image);
  if (loc.partition === undefined) return img + '/';
  const inner = loc.path.split('/').filter(p => p !== '' && p !== '.').join('/');
  return `${img}/${loc.partition}/${inner}`;
}

/** Reads a URI path back; undefined when it is not one this codec made. */
export function parseGuestUriPath(uriPath: string): GuestLocation | undefined {
  const m = /^\/([^/]+)(?:\/(.*))?$/.exec(uriPath);
  if (!m) return undefined;
  let image: string;
  try {
    image = decodeURIComponent(m[1]);
  } catch {
    return undefined;
  }
  if (!image.startsWith('/')) return undefined;
  const rest = (m[2] ?? '').split('/').filter(p => p !== '');
  if (rest.length === 0) return { image, path: '/' };
  if (!/^\d{1,4}$/.test(rest[0])) return undefined;
  const parts: string[] = [];
  for (const p of rest.slice(1)) {
    if (p === '.') continue;
    if (p === '..') parts.pop();
    else parts.push(p);
  }
  return { image, partition: Number(rest[0]), path: '/' + parts.join('/') };
}

/** What a tab or the Explorer shows for a guest location, e.g. "disk.qcow2 · partition 1". */
export function guestLocationLabel(loc: GuestLocation): string {
  const base = loc.image.slice(loc.image.lastIndexOf('/') + 1);
  if (loc.partition === undefined) return `${base} (guest)`;
  const part = loc.partition === 0 ? 'whole disk' : `partition ${loc.partition}`;
  return loc.path === '/' ? `${base} · ${part}` : `${base} · ${part}:${loc.path}`;
}
