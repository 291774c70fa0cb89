import { Qcow2Error } from '../../engine/errors';
import { holeSeeker } from '../../engine/io/holes';
import { Qcow2Image } from '../../engine/image/image';
import { MapEntry, mapImage, writeMapJson } from '../../engine/image/map';
import { FORCE_SHARE, FORMAT, JSON_FLAG, OUTPUT, type CommandSpec } from '../command';
import { IMAGE_OPTS, withImageOperands } from '../imageOpts';

/**
 * Says on stderr when qemu-img's map certainly differs from ours: QEMU detects "metadata
 * preallocation" in a layer and then reports holes of the host file inside data clusters as zero
 * (SEEK_HOLE, which needs the native hole seeker; only when it could not be built or loaded). It certainly finds some when the host file has fewer bytes
 * allocated than the data the layer maps. (README, Known differences.)
 */
async function noteHoles(img: Qcow2Image, dataBytes: Map<number, number>): Promise<void> {
  if (holeSeeker()) return; // we looked at the holes as QEMU does
  const chain = img.chain();
  const layers: string[] = [];
  for (const [depth, bytes] of dataBytes) {
    const layer = chain[depth];
    if (!(layer instanceof Qcow2Image)) continue;
    const host = layer.dataFile ?? layer.file;
    const allocated = (await host.handle.stat()).blocks * 512;
    if (allocated < bytes && await layer.detectMetadataPreallocation().catch(() => false)) layers.push(layer.path);
  }
  if (layers.length) {
    process.stderr.write(`qcow2-lens: note: ${layers.join(', ')}: metadata preallocation with a sparse file; qemu-img map reports the file's holes inside data clusters as "zero": true, which Node cannot see (see README, Known differences)\n`);
  }
}

export const mapCommand: CommandSpec = {
  name: 'map',
  summary: 'guest ranges and where they live in the backing chain, as qemu-img map',
  usage: ['[-f qcow2] [--output=human|json] [-U] [--object OBJDEF] [--image-opts] IMAGE'],
  options: [OUTPUT, JSON_FLAG, FORMAT, { ...FORCE_SHARE, help: 'accepted as qemu-img takes it: map only reads and never refuses an image QEMU holds' }, IMAGE_OPTS],
  operands: { names: ['IMAGE'] },
  async run(args) {
    return withImageOperands(args, args.operands, async ([{ path, keys }]) => {
      const json = args.json;
      const img = await Qcow2Image.open(path, { keys });
      try {
        // Host bytes of data each layer maps (where QEMU could look for file holes).
        const dataBytes = new Map<number, number>();
        const count = (e: MapEntry) => {
          if (e.data && !e.zero && e.offset !== undefined) dataBytes.set(e.depth, (dataBytes.get(e.depth) ?? 0) + e.length);
        };
        if (json) {
          // The walk does not pause for a slow reader (stdout buffers); one drain wait at a time.
          let drain: Promise<void> | null = null;
          await writeMapJson(img, chunk => {
            if (!process.stdout.write(chunk) && !drain) {
              drain = new Promise<void>(resolve => process.stdout.once('drain', () => { drain = null; resolve(); }));
            }
            return drain ?? undefined;
          }, { onEntry: count });
        } else {
          const entries = await mapImage(img);
          const chain = img.chain();
          // qemu-img map's human format: printf("%#-16" PRIx64 …) per data entry, no zero entries
          const col = (n: number) => (n === 0 ? '0' : `0x${n.toString(16)}`).padEnd(16);
          const lines = ['Offset          Length          Mapped to       File'];
          for (const e of entries) {
            count(e);
            if (e.data && e.offset === undefined) {
              throw new Qcow2Error(path, 'map', undefined, 'File contains external, encrypted or compressed clusters (use --json)');
            }
            if (!e.data || e.zero) continue;
            const layer = chain[e.depth];
            const file = layer instanceof Qcow2Image && layer.dataFilePath ? layer.dataFilePath : layer?.path ?? '';
            lines.push(`${col(e.start)}${col(e.length)}${col(e.offset ?? 0)}${file}`);
          }
          process.stdout.write(lines.join('\n') + '\n');
        }
        await noteHoles(img, dataBytes);
        return 0;
      } finally {
        await img.close();
      }
    });
  },
};
