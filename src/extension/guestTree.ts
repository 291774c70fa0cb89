/**
 * The structure tree's Guest section (no `vscode` import): partitions → file system → folders →
 * files, each level read when it is first expanded (the partition table and superblocks when the
 * section opens, one directory per expansion; never file data). File nodes show their size and
 * carry `guestFile`, which the webview turns into "open in a tab" (the qcow2-guest file system);
 * kinds we cannot browse (NTFS, XFS, swap, LUKS, …) show their kind and size.
 *
 * Its node ids have their own small codec, apart from nodeId.ts's qcow2 structures:
 *   `guest`                      the section
 *   `g:<partition>`              a partition (its children: the file system's root folder)
 *   `g:<partition>:<path>`       a folder, the path percent-encoded (encodeURIComponent)
 *   `gp:<partition>:<s>:<e>:<path>`  children [s, e) of a folder with more than TREE_PAGE_SIZE entries
 */
import type { GuestStat } from '../guest/fs';
import { joinGuestPath } from '../guest/fs';
import type { Guest, GuestPartition } from '../guest/guest';
import { isoTime, modeString } from '../guest/format';
import { formatBytes } from '../engine/units';
import type { NodeId, TreeNode } from '../protocol';
import { pageRanges } from './nodeId';

export const GUEST_SECTION_ID: NodeId = 'guest';

export type GuestNodeRef =
  | { kind: 'section' }
  | { kind: 'dir'; partition: number; path: string; page?: { s: number; e: number } };

export function guestNodeId(r: GuestNodeRef): NodeId {
  if (r.kind === 'section') return GUEST_SECTION_ID;
  const p = r.path === '/' ? '' : encodeURIComponent(r.path);
  if (r.page) return `gp:${r.partition}:${r.page.s}:${r.page.e}:${p}`;
  return r.path === '/' ? `g:${r.partition}` : `g:${r.partition}:${p}`;
}

/** The guest node an id names, or undefined for any other id (the qcow2 structure ids). */
export function parseGuestNodeId(id: NodeId): GuestNodeRef | undefined {
  if (id === GUEST_SECTION_ID) return { kind: 'section' };
  let m = /^g:(\d+)(?::(.*))?$/.exec(id);
  const path = (enc: string | undefined): string | undefined => {
    if (!enc) return '/';
    try { return decodeURIComponent(enc); } catch { return undefined; }
  };
  if (m) {
    const p = path(m[2]);
    return p === undefined ? undefined : { kind: 'dir', partition: Number(m[1]), path: p };
  }
  m = /^gp:(\d+):(\d+):(\d+):(.*)$/.exec(id);
  if (m) {
    const p = path(m[4]);
    return p === undefined ? undefined : { kind: 'dir', partition: Number(m[1]), path: p, page: { s: Number(m[2]), e: Number(m[3]) } };
  }
  return undefined;
}

/** The id of a guest entry's node: a folder's (guestNodeId), or a file's, symlink's or special file's `gf:` id. */
export function guestEntryNodeId(partition: number, path: string, type: GuestStat['type']): NodeId {
  return type === 'dir' ? guestNodeId({ kind: 'dir', partition, path }) : `gf:${partition}:${encodeURIComponent(path)}`;
}

export function isGuestNodeId(id: NodeId): boolean {
  return parseGuestNodeId(id) !== undefined;
}

/** The section's node at the tree's top level; nothing is read until it is expanded. */
export function guestSectionNode(): TreeNode {
  return { id: GUEST_SECTION_ID, kind: 'guest', label: 'Guest', description: 'partitions and files inside the disk', hasChildren: true };
}

function partitionName(p: GuestPartition): string {
  return p.number === 0 ? 'whole disk' : `partition ${p.number}`;
}

function partitionNode(p: GuestPartition): TreeNode {
  const fs = p.fileSystem;
  const bits = [p.fs ?? 'unknown contents', formatBytes(p.size)];
  if (fs?.label) bits.splice(1, 0, `"${fs.label}"`);
  if (p.extended) bits[0] = 'extended partition (holds the logical ones)';
  else if (!fs) bits.push(p.error ? 'cannot be opened' : 'not browsable');
  const tips = [`${partitionName(p)}: guest bytes ${p.start} … ${p.start + p.size - 1}`];
  if (p.name) tips.push(`name "${p.name}"`);
  if (fs?.warnings.length) tips.push(...fs.warnings);
  if (p.error) tips.push(p.error);
  return {
    id: guestNodeId({ kind: 'dir', partition: p.number, path: '/' }), kind: 'guestPartition', label: partitionName(p), description: bits.join(' · '),
    tooltip: tips.join('\n'), hasChildren: !!fs, guestOffset: p.start, guestLength: p.size, guestEntry: fs ? { partition: p.number, path: '/' } : undefined,
    severity: p.error ? 'error' : fs?.warnings.length ? 'warning' : undefined,
  };
}

function entryNode(partition: number, dir: string, e: GuestStat): TreeNode {
  const path = joinGuestPath(dir, e.name);
  const id = guestEntryNodeId(partition, path, e.type);
  const tooltip = `${modeString(e.mode)} ${e.uid}:${e.gid} · modified ${isoTime(e.mtime)}${e.target !== undefined ? ` · → ${e.target}` : ''}`;
  switch (e.type) {
    case 'dir':
      return { id, kind: 'guestDir', label: e.name, hasChildren: true, tooltip, guestEntry: { partition, path } };
    case 'file':
      return { id, kind: 'guestFile', label: e.name, description: formatBytes(e.size), hasChildren: false, tooltip, guestFile: { partition, path }, guestEntry: { partition, path } };
    case 'symlink':
      return { id, kind: 'guestFile', label: e.name, description: `→ ${e.target ?? '?'}`, hasChildren: false, tooltip, guestFile: { partition, path }, guestEntry: { partition, path } };
    default:
      return { id, kind: 'info', label: e.name, description: modeString(e.mode)[0] === 'c' || modeString(e.mode)[0] === 'b' ? 'device' : 'special file', hasChildren: false, tooltip };
  }
}

/** Folders first, then the rest, each by name (the file system's own order is by name). */
function order(entries: GuestStat[]): GuestStat[] {
  return [...entries.filter(e => e.type === 'dir'), ...entries.filter(e => e.type !== 'dir')];
}

export async function guestTreeChildren(openGuest: () => Promise<Guest>, id: NodeId, pageSize?: number): Promise<TreeNode[]> {
  const ref = parseGuestNodeId(id);
  if (!ref) return [];
  const guest = await openGuest();
  if (ref.kind === 'section') {
    const out: TreeNode[] = [];
    const table = guest.table.table === 'none' ? 'no partition table' : `${guest.table.table.toUpperCase()} partition table`;
    out.push({ id: 'gi:table', kind: 'info', label: table, description: `${guest.partitions.filter(p => !p.extended).length} partition(s), disk ${formatBytes(guest.disk.size)}`, hasChildren: false, tooltip: guest.warnings.join('\n') || undefined, severity: guest.warnings.length ? 'warning' : undefined });
    out.push(...guest.partitions.map(partitionNode));
    return out;
  }
  const fs = guest.fileSystem(ref.partition);
  const entries = order(await fs.readdir(ref.path));
  const range = ref.page ?? { s: 0, e: entries.length };
  const pages = pageSize === undefined ? pageRanges(range.s, range.e) : pageRangesOf(range.s, range.e, pageSize);
  if (pages) {
    return pages.map(p => ({ id: guestNodeId({ kind: 'dir', partition: ref.partition, path: ref.path, page: p }), kind: 'page' as const, label: `[${p.s} … ${p.e - 1}]`, description: `${entries[p.s]?.name ?? ''} … ${entries[p.e - 1]?.name ?? ''}`, hasChildren: true }));
  }
  return entries.slice(range.s, range.e).map(e => entryNode(ref.partition, ref.path, e));
}

/** pageRanges with another page size (tests). */
function pageRangesOf(s: number, e: number, size: number): Array<{ s: number; e: number }> | null {
  if (e - s <= size) return null;
  let span = size;
  while (Math.ceil((e - s) / span) > size) span *= size;
  const out: Array<{ s: number; e: number }> = [];
  for (let a = s; a < e; a += span) out.push({ s: a, e: Math.min(e, a + span) });
  return out;
}
