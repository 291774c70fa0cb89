/**
 * The host side of the editor's guest lens (no `vscode` import): the space summary (the engine's
 * space report over the tab's open image, the figures `qcow2-lens space --json` prints), the
 * guest's disk usage (src/guest/space/usage.ts), a guest file's host clusters (file → guest ranges
 * → the active L1/L2 mapping → host clusters of this file) and which guest file owns a byte (host
 * offset → the L2 entry that maps its cluster → guest offset → whose). Answers are cached per open
 * image: a reload (the file changed) opens a new image and so starts afresh.
 */
import type { Qcow2Image } from '../engine/image/image';
import { mapImage } from '../engine/image/map';
import type { Whose } from '../guest/fs';
import type { Guest } from '../guest/guest';
import { spaceReportOf, type SpacePart } from '../guest/space/report';
import { diskUsage, type UsageNode } from '../guest/space/usage';
import {
  type ClusterDescription, type DiskUsageNode, type DiskUsageReply, type GuestFileMapReply, MAX_HIGHLIGHT_CLUSTERS, MAX_HIGHLIGHT_RANGES,
  type OwnerReply, type SpaceInfo, type SpacePartInfo, type SpaceReply, type SpaceReportReply, type SpaceRequest,
} from '../protocol';
import { GUEST_SECTION_ID, guestEntryNodeId } from './guestTree';
import { DEFAULT_SETTINGS, MAX_LARGEST_ENTRIES } from './settings';

/** What the guest lens needs of a tab's view model. */
export interface SpaceModel {
  readonly img: Qcow2Image;
  guest(): Promise<Guest>;
  describeCluster(hostCluster: number): Promise<ClusterDescription>;
  /** Fires when the view closes: the walks below stop at their next pause instead of running on. */
  readonly closing?: AbortSignal;
}

/** Children kept per folder in the disk-usage tree when the webview does not say (it sends qcow2Lens.space.largestEntries). */
export const DEFAULT_USAGE_TOP = DEFAULT_SETTINGS.spaceLargestEntries;
const MAX_USAGE_TOP = MAX_LARGEST_ENTRIES;

const reports = new WeakMap<Qcow2Image, Promise<Omit<SpaceReportReply, 'type' | 'requestId'>>>();
const usages = new WeakMap<Qcow2Image, Map<number, Promise<Omit<DiskUsageReply, 'type' | 'requestId'>>>>();

export async function handleSpaceRequest(vm: SpaceModel, msg: SpaceRequest): Promise<SpaceReply> {
  switch (msg.type) {
    case 'getSpaceReport':
      return { type: 'spaceReport', requestId: msg.requestId, ...(await spaceSummary(vm)) };
    case 'getDiskUsage':
      return { type: 'diskUsage', requestId: msg.requestId, ...(await guestUsage(vm, msg.top)) };
    case 'getGuestFileMap':
      return { type: 'guestFileMap', requestId: msg.requestId, ...(await guestFileMap(vm, msg.partition, msg.path)) };
    case 'describeOwner':
      return { type: 'owner', requestId: msg.requestId, ...(await describeOwner(vm, msg.hostOffset, msg.guestOffset)) };
  }
}

function lockedReason(img: Qcow2Image): string | undefined {
  return img.encrypted && img.cipher === null ? 'The image is encrypted and locked: unlock it (Unlock…) to see where its space goes.' : undefined;
}

// ---- the space summary ------------------------------------------------------------------------

function spaceSummary(vm: SpaceModel): Promise<Omit<SpaceReportReply, 'type' | 'requestId'>> {
  const img = vm.img;
  let p = reports.get(img);
  if (!p) {
    p = computeSummary(img, vm.closing).catch(e => {
      reports.delete(img);
      return { unavailable: `The space report could not be computed: ${(e as Error).message}` };
    });
    reports.set(img, p);
  }
  return p;
}

async function computeSummary(img: Qcow2Image, signal?: AbortSignal): Promise<Omit<SpaceReportReply, 'type' | 'requestId'>> {
  const locked = lockedReason(img);
  if (locked) return { unavailable: locked };
  const r = await spaceReportOf(img, { signal });
  const part = (x: SpacePart): SpacePartInfo => ({
    name: x.name, bytes: x.bytes, compact: x.compact, sparsify: x.sparsify,
    ...(x.parts ? { parts: x.parts.map(part) } : {}),
  });
  const report: SpaceInfo = {
    fileSize: r.fileSize, allocatedBytes: r.allocatedBytes, virtualSize: r.virtualSize, clusterSize: r.clusterSize,
    parts: r.parts.map(part), reclaim: r.reclaim,
    guestBrowsable: r.guest.fileSystems.length > 0, guestFreeBytes: r.guest.freeBytes, notes: r.notes,
  };
  return { report };
}

// ---- disk usage -------------------------------------------------------------------------------

function guestUsage(vm: SpaceModel, top: number | undefined): Promise<Omit<DiskUsageReply, 'type' | 'requestId'>> {
  const n = Math.max(1, Math.min(MAX_USAGE_TOP, Math.floor(top ?? DEFAULT_USAGE_TOP) || DEFAULT_USAGE_TOP));
  const img = vm.img;
  let byTop = usages.get(img);
  if (!byTop) usages.set(img, (byTop = new Map()));
  let p = byTop.get(n);
  if (!p) {
    p = computeUsage(vm, n).catch(e => {
      byTop.delete(n);
      return { fileSystems: [], unavailable: `The guest could not be read: ${(e as Error).message}` };
    });
    byTop.set(n, p);
  }
  return p;
}

async function computeUsage(vm: SpaceModel, top: number): Promise<Omit<DiskUsageReply, 'type' | 'requestId'>> {
  const locked = lockedReason(vm.img);
  if (locked) return { fileSystems: [], unavailable: locked };
  const g = await vm.guest();
  const out: DiskUsageReply['fileSystems'] = [];
  for (const p of g.partitions) {
    if (!p.fileSystem) continue;
    const u = await diskUsage(p.fileSystem, { top, signal: vm.closing });
    out.push({ partition: p.number, fs: p.fileSystem.kind, size: p.fileSystem.size, root: toNode(u.root, p.number), partial: u.partial, treePath: [GUEST_SECTION_ID] });
  }
  return out.length ? { fileSystems: out } : { fileSystems: [], unavailable: 'No browsable guest file system (ext2/3/4 or FAT) was found.' };
}

function toNode(n: UsageNode, partition: number): DiskUsageNode {
  return {
    name: n.name, path: n.path, type: n.type, bytes: n.bytes, entries: n.entries, nodeId: guestEntryNodeId(partition, n.path, n.type),
    ...(n.children ? { children: n.children.map(c => toNode(c, partition)) } : {}), ...(n.others ? { others: n.others } : {}),
  };
}

// ---- a guest file's clusters ------------------------------------------------------------------

async function guestFileMap(vm: SpaceModel, partition: number, path: string): Promise<Omit<GuestFileMapReply, 'type' | 'requestId'>> {
  const img = vm.img, cs = img.clusterSize;
  const g = await vm.guest();
  // touching extents merged, and at most MAX_HIGHLIGHT_RANGES of them (a badly fragmented file has
  // millions): the work and the reply stay bounded, and `truncated` says the picture is cut
  const ranges: { start: number; length: number }[] = [];
  let truncated = false;
  for (const r of [...(await g.fileSystem(partition).fileRanges(path))].sort((a, b) => a.guestOffset - b.guestOffset)) {
    const last = ranges[ranges.length - 1];
    if (last && last.start + last.length === r.guestOffset) last.length += r.length;
    else if (ranges.length >= MAX_HIGHLIGHT_RANGES) { truncated = true; break; } else ranges.push({ start: r.guestOffset, length: r.length });
  }
  const clusters = new Set<number>();
  // with an external data file the host offsets are in that file, not this one: no clusters to mark
  if (!img.dataFilePath) {
    for (const r of ranges) {
      if (clusters.size >= MAX_HIGHLIGHT_CLUSTERS) break;
      for (const m of await mapImage(img, { start: r.start, end: Math.min(r.start + r.length, img.virtualSize) })) {
        if (m.depth !== 0 || m.offset === undefined || !m.present || m.zero) continue;
        for (let c = Math.floor(m.offset / cs); c * cs < m.offset + m.length; c++) {
          if (clusters.size >= MAX_HIGHLIGHT_CLUSTERS) { truncated = true; break; }
          clusters.add(c);
        }
        if (clusters.size >= MAX_HIGHLIGHT_CLUSTERS) break;
      }
    }
  }
  return { ranges, hostClusters: [...clusters].sort((a, b) => a - b), truncated, label: `${path}, partition ${partition}` };
}

// ---- who owns a byte --------------------------------------------------------------------------

async function describeOwner(vm: SpaceModel, hostOffset: number | undefined, guestOffset: number | undefined): Promise<Omit<OwnerReply, 'type' | 'requestId'>> {
  const img = vm.img;
  if (lockedReason(img)) return {};
  let snapshot: string | undefined;
  if (guestOffset === undefined && hostOffset !== undefined) {
    if (img.dataFilePath) return {};
    const cs = img.clusterSize;
    const d = await vm.describeCluster(Math.floor(hostOffset / cs));
    const o = d.owners[0];
    if (!o || (d.role !== 'data' && d.role !== 'compressed') || o.guestOffset === undefined) return {};
    // a compressed cluster's bytes do not map one to one: its guest cluster's first byte stands for them
    guestOffset = o.guestOffset + (d.role === 'data' ? hostOffset % cs : 0);
    snapshot = o.snapshot;
  }
  if (guestOffset === undefined || !Number.isSafeInteger(guestOffset) || guestOffset < 0 || guestOffset >= img.virtualSize) return {};
  const g = await vm.guest();
  const text = ownerText(await g.whose(guestOffset));
  return { text: snapshot ? `${text} (in snapshot "${snapshot}"; the active disk may hold something else there)` : text };
}

/** "/etc/fstab, partition 1", "guest free space, partition 1", "file-system metadata: inode table, partition 1". */
export function ownerText(w: Whose): string {
  const where = w.partition === undefined ? '' : w.partition === 0 ? ', whole disk' : `, partition ${w.partition}`;
  switch (w.kind) {
    case 'file': return `${w.path ?? '?'}${w.role && w.role !== 'data' ? ` (${w.role})` : ''}${where}`;
    case 'free': return `guest free space${where}`;
    case 'metadata': return `file-system metadata: ${w.metadata ?? 'unknown'}${where}`;
    case 'partition table': return `partition table${w.metadata ? ` (${w.metadata})` : ''}`;
    case 'unpartitioned': return 'outside any partition';
    case 'unused': return `unused${w.metadata ? ` (${w.metadata})` : ''}${where}`;
    case 'not browsable': return `${w.metadata ?? 'not browsable'}${where}`;
  }
}
