/**
 * Which data clusters read as zero, the way compaction decides it — and what compressed clusters
 * take in its stream. Without a scan only what costs no data read is known: clusters wholly in a
 * hole of the host file (asked with SEEK_DATA/SEEK_HOLE) or past its end are zero, and a
 * compressed cluster's length is its L2 bound cut at the next compressed cluster's start (QEMU
 * packs them byte by byte). With `scan`, every data cluster is read (4 MiB at a time) and
 * compared with zeros, and every compressed cluster's stored stream is measured as compaction
 * measures it: the figures then equal what compaction does.
 *
 * An encrypted image (unlocked): a hole's stored zeros are no guest zeros (they decrypt to noise),
 * so, as compaction does, nothing is known without reading, and the scan decrypts each run (LUKS
 * IVs follow the host offset) before comparing. Locked (or legacy AES), no data cluster is known to be zero.
 */
import { pacer } from '../../engine/cancel';
import type { Qcow2Image } from '../../engine/image/image';
import { forEachHostPiece, holeSeeker } from '../../engine/io/holes';
import { compressedLength } from '../../engine/ops/compact/copy';
import type { SourceTables } from '../../engine/ops/compact/plan';
import { ClusterSet } from '../../engine/ops/compact/places';

const SCAN_BYTES = 4 * 1024 * 1024;

export interface ZeroScan {
  /** Host offsets of the data clusters that read as zero (a bitmap by host cluster: 1.6 M of them in a Set took ~60 MiB). */
  zero: ClusterSet;
  /** The bytes compressed cluster `offset` takes in a compaction's stream. */
  compressedLength(offset: number, bound: number): number;
  /** Data bytes read to decide. */
  bytesRead: number;
}

export async function findZeroClusters(img: Qcow2Image, tables: SourceTables, scan: boolean, signal?: AbortSignal): Promise<ZeroScan> {
  const cs = img.header.clusterSize, file = img.file;
  const zero = new ClusterSet(file.size, cs);
  const sorted = tables.data.sorted(); // ascending already (a bitmap by host cluster)
  const seeker = holeSeeker();
  const zeros = Buffer.alloc(cs);
  let bytesRead = 0;
  const encrypted = img.encrypted;
  // (legacy AES keys its IVs by guest offset, which a host run does not give: not scanned; compact refuses it anyway)
  const scanData = scan && (!encrypted || img.cipher?.ivOffset === 'host');
  const tick = pacer(signal, img.path, 'space');
  for (let i = 0; i < sorted.length;) {
    await tick();
    let j = i + 1;
    while (j < sorted.length && sorted[j] === sorted[j - 1] + cs && (j - i) * cs < SCAN_BYTES) j++;
    const host = sorted[i], len = (j - i) * cs;
    const known = new Set<number>();
    if (!encrypted) for (let c = host; c < host + len; c += cs) if (c >= file.size) known.add(c);
    if (seeker && !encrypted) {
      const avail = Math.max(0, Math.min(len, file.size - host));
      forEachHostPiece(seeker, file.handle.fd, host, avail, (at, n, hole) => {
        if (hole) for (let c = Math.ceil(at / cs) * cs; c + cs <= at + n; c += cs) known.add(c);
      });
    }
    for (const c of known) zero.add(c);
    if (scanData && known.size < j - i) {
      const b = await file.readPadded(host, len, 'data cluster');
      bytesRead += Math.max(0, Math.min(len, file.size - host));
      img.cipher?.decryptRun(b, host);
      for (let k = 0; k < j - i; k++) if (b.subarray(k * cs, (k + 1) * cs).equals(zeros)) zero.add(host + k * cs);
    }
    i = j;
  }
  const starts = [...tables.compressed.keys()].sort((a, b) => a - b);
  const lengths = new Map<number, number>();
  for (let k = 0; k < starts.length; k++) {
    const off = starts[k], bound = tables.compressed.get(off)!;
    if (scan) {
      const stored = await file.readPadded(off, Math.min(bound, 2 * cs + 512), 'compressed cluster');
      bytesRead += stored.length;
      lengths.set(off, Math.min(bound, compressedLength(img.header.compressionType, stored, cs, img.path, off)));
    } else {
      const next = k + 1 < starts.length ? starts[k + 1] : Infinity;
      lengths.set(off, Math.min(bound, next - off));
    }
  }
  return { zero, compressedLength: (off, bound) => lengths.get(off) ?? bound, bytesRead };
}
