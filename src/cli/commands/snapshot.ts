import { applySnapshot, createSnapshot, deleteSnapshot, listSnapshots } from '../../engine/ops/snapshot';
import { SnapshotInfo } from '../../engine/qcow2/snapshot';
import { UsageError } from '../args';
import { JSON_FLAG, OUTPUT, QUIET, type CommandSpec } from '../command';

/** qemu-img's size_to_str: "0 B", "1.5 MiB" (three significant digits). */
function sizeToStr(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let i = 0, v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  if (i === 0) return `${n} B`;
  return `${Number(v.toPrecision(3))} ${units[i]}`;
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

/** One line of `qemu-img snapshot -l` (QEMU's bdrv_snapshot_dump layout, local time). */
export function snapshotLine(sn: SnapshotInfo): string {
  const d = new Date(sn.dateSec * 1000);
  const date = `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  const ms = Math.floor(sn.vmClockNsec / 1e6);
  const clock = `${pad2(Math.floor(ms / 3600000))}:${pad2(Math.floor(ms / 60000) % 60)}:${pad2(Math.floor(ms / 1000) % 60)}.${String(ms % 1000).padStart(3, '0')}`;
  return `${sn.id.padEnd(9)} ${sn.name.padEnd(16)} ${sizeToStr(sn.vmStateSize).padStart(8)}${date.padStart(20)}${clock.padStart(13)}${(sn.icount === undefined ? '' : String(sn.icount)).padStart(11)}`;
}

export const snapshotCommand: CommandSpec = {
  name: 'snapshot',
  summary: 'list, create, apply or delete internal snapshots, as qemu-img snapshot',
  usage: ['[-q] -l [--output=human|json] IMAGE', '[-q] -c NAME | -a NAME | -d NAME IMAGE'],
  options: [
    { short: 'l', help: 'list the snapshots' },
    { short: 'c', value: 'NAME', help: 'create a snapshot of the current disk state' },
    { short: 'a', value: 'NAME', help: 'apply (revert the disk to) a snapshot, by name or id' },
    { short: 'd', value: 'NAME', help: 'delete a snapshot, by name' },
    OUTPUT, JSON_FLAG,
    { ...QUIET, help: 'quiet (qemu-img\'s -q; these operations print nothing anyway)' },
  ],
  operands: { names: ['IMAGE'] },
  async run(args) {
    const [path] = args.operands;
    const ops = (['l', 'c', 'a', 'd'] as const).filter(f => args.has(f));
    if (ops.length !== 1) throw new UsageError('exactly one of -l, -c, -a, -d is needed');
    const op = ops[0];
    if (op === 'l') {
      const list = await listSnapshots(path);
      if (args.json) {
        process.stdout.write(JSON.stringify(list, null, 2) + '\n');
      } else if (list.length) {
        process.stdout.write('Snapshot list:\n' + `${'ID'.padEnd(10)}${'TAG'.padEnd(17)}${'VM SIZE'.padStart(8)}${'DATE'.padStart(20)}${'VM CLOCK'.padStart(13)}${'ICOUNT'.padStart(11)}\n`);
        for (const sn of list) process.stdout.write(snapshotLine(sn) + '\n');
      }
      return 0;
    }
    const name = args.string(op);
    if (!name) throw new UsageError(`-${op} needs a snapshot name`);
    if (op === 'c') await createSnapshot(path, name);
    else if (op === 'a') await applySnapshot(path, name);
    else await deleteSnapshot(path, name, { match: 'name' });
    return 0;
  },
};
