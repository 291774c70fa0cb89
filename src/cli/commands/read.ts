import { Qcow2Image, MAX_GUEST_READ } from '../../engine/image';
import { Qcow2Error } from '../../engine/errors';
import { numberFlag, parseArgs, UsageError } from '../args';
import type { Command } from './index';

function writeOut(buf: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    if (process.stdout.write(buf, e => (e ? reject(e) : undefined))) resolve();
    else process.stdout.once('drain', resolve);
  });
}

export const readCommand: Command = {
  usage: 'IMAGE [--offset N] [--length N]   guest bytes on stdout, through the backing chain',
  async run(argv) {
    const args = parseArgs(argv, ['--offset', '--length']);
    const [path] = args.positionals;
    if (!path) throw new UsageError('IMAGE is required');
    const img = await Qcow2Image.open(path);
    try {
      const offset = numberFlag(args, '--offset', 0);
      const length = numberFlag(args, '--length', Math.max(0, img.virtualSize - offset));
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
  },
};
