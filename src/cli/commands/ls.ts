import { withGuestImage } from '../../guest/image';
import { parsePartitionPath } from '../../guest/guest';
import { listPath } from '../../guest/list';
import { isoTime, longLine } from '../../guest/format';
import { parseArgs, UsageError } from '../args';
import type { Command } from './index';

export const lsCommand: Command = {
  usage: '[--json] [-l] [-R] IMAGE [PARTITION:]PATH   list a guest directory (PARTITION as in /dev/vdaN)',
  async run(argv) {
    const args = parseArgs(argv, []);
    const [image, spec = '/'] = args.positionals;
    if (!image) throw new UsageError('IMAGE is required');
    const json = args.flags.has('--json'), long = args.flags.has('-l'), recursive = args.flags.has('-R') || args.flags.has('-lR') || args.flags.has('-Rl');
    const { partition, path } = parsePartitionPath(spec);
    return withGuestImage(image, async g => {
      const fs = g.fileSystem(partition);
      for (const w of fs.warnings) process.stderr.write(`warning: ${w}\n`);
      const entries = [];
      for await (const e of listPath(fs, path, { recursive })) {
        if (json) {
          const o: Record<string, unknown> = { name: e.name, size: e.size, type: e.type };
          if (e.target !== undefined) o.target = e.target;
          Object.assign(o, { mode: e.mode, mtime: isoTime(e.mtime), uid: e.uid, gid: e.gid });
          if (e.inode !== undefined) o.inode = e.inode;
          if (recursive) o.path = e.path;
          entries.push(o);
        } else {
          const name = recursive ? e.path : e.name;
          process.stdout.write((long || args.flags.has('-lR') || args.flags.has('-Rl') ? longLine(e, name) : name) + '\n');
        }
      }
      if (json) process.stdout.write(JSON.stringify({ entries }, null, 2) + '\n');
      return 0;
    });
  },
};
