import { Qcow2Image, MAX_GUEST_READ } from '../../engine/image/image';
import { Qcow2Error } from '../../engine/errors';
import { FORMAT, type CommandSpec } from '../command';
import { IMAGE_OPTS, withImageOperands } from '../imageOpts';

function writeOut(buf: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    if (process.stdout.write(buf, e => (e ? reject(e) : undefined))) resolve();
    else process.stdout.once('drain', resolve);
  });
}

export const readCommand: CommandSpec = {
  name: 'read',
  summary: 'guest bytes on stdout, through the backing chain (as qemu-img convert -O raw, or a part of it)',
  usage: ['[-f qcow2] [--offset N] [--length N] IMAGE', '[--object secret,id=ID,file=PATH] --image-opts driver=qcow2,file.filename=PATH,encrypt.key-secret=ID'],
  options: [
    { long: 'offset', value: 'N', help: 'first guest byte (default 0; K/M/G/T suffixes, 0x for hex)' },
    { long: 'length', value: 'N', help: 'bytes to read (default: to the end of the disk)' },
    FORMAT, IMAGE_OPTS,
  ],
  operands: { names: ['IMAGE'] },
  async run(args) {
    return withImageOperands(args, args.operands, async ([{ path, keys }]) => {
      const img = await Qcow2Image.open(path, { keys });
      try {
        const offset = args.size('offset', 0);
        const length = args.size('length', Math.max(0, img.virtualSize - offset));
        if (offset + length > img.virtualSize) {
          throw new Qcow2Error(path, 'guest read', offset, `range of ${length} bytes is outside the ${img.virtualSize}-byte disk`);
        }
        const chunk = Math.min(MAX_GUEST_READ, 8 * 1024 * 1024);
        for (let pos = offset; pos < offset + length; pos += chunk) {
          await writeOut(await img.readGuest(pos, Math.min(chunk, offset + length - pos)));
        }
        return 0;
      } finally {
        await img.close();
      }
    });
  },
};
