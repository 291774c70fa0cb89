import { withGuestImage } from '../../guest/image';
import { parsePartitionPath } from '../../guest/guest';
import { listPath } from '../../guest/list';
import { isoTime, longLine } from '../../guest/format';
import { JSON_FLAG, OUTPUT, type CommandSpec } from '../command';

export const lsCommand: CommandSpec = {
  name: 'ls',
  summary: 'list a guest directory (PARTITION as in /dev/vdaN; default: the only or first browsable file system)',
  usage: ['[--output=human|json] [-l] [-R] IMAGE [PARTITION:]PATH'],
  options: [
    OUTPUT, JSON_FLAG,
    { short: 'l', help: 'long listing: mode, owner, size, time, symlink target' },
    { short: 'R', help: 'recursive: every entry below PATH, with its full path' },
  ],
  operands: { names: ['IMAGE', '[PARTITION:]PATH'], min: 1 },
  async run(args) {
    const [image, spec = '/'] = args.operands;
    const json = args.json, long = args.has('l'), recursive = args.has('R');
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
          process.stdout.write((long ? longLine(e, name) : name) + '\n');
        }
      }
      if (json) process.stdout.write(JSON.stringify({ entries }, null, 2) + '\n');
      return 0;
    });
  },
};
