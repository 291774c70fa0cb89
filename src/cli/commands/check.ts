import { CheckResult, checkExitCode, checkImage, formatCheckJson, openForCheck } from '../../engine/check';
import { Qcow2Error } from '../../engine/errors';
import { Qcow2Image } from '../../engine/image';
import { repairImage } from '../../engine/repair';
import { assertNotLocked } from '../../engine/writable';
import { parseArgs, UsageError } from '../args';
import type { Command } from './index';

/** qemu-img check's human summary (dump_human_image_check), preceded by our findings. */
function human(r: CheckResult, fixed?: { leaks: number; corruptions: number }): string {
  const out: string[] = [];
  for (const f of r.findings) {
    const tag = f.severity === 'error' ? 'ERROR' : f.severity === 'warning' ? 'Warning' : 'Note';
    out.push(`${tag} [${f.kind}] ${f.structure}: ${f.message}`, `    ${f.explanation}`);
  }
  if (fixed && (fixed.leaks || fixed.corruptions)) {
    out.push('The following inconsistencies were found and repaired:', '', `    ${fixed.leaks} leaked clusters`, `    ${fixed.corruptions} corruptions`, '', 'Double checking the fixed image now...');
  }
  const corruptions = r.corruptions ?? 0, leaks = r.leaks ?? 0, errors = r['check-errors'];
  if (!corruptions && !leaks && !errors) out.push('No errors were found on the image.');
  else {
    if (corruptions) out.push('', `${corruptions} errors were found on the image.`, 'Data may be corrupted, or further writes to the image may corrupt it.');
    if (leaks) out.push('', `${leaks} leaked clusters were found on the image.`, 'This means waste of disk space, but no harm to data.');
    if (errors) out.push('', `${errors} internal errors have occurred during the check.`);
  }
  const total = r['total-clusters'] ?? 0, alloc = r['allocated-clusters'] ?? 0;
  if (total && alloc) {
    out.push(`${alloc}/${total} = ${(alloc * 100 / total).toFixed(2)}% allocated, ${((r['fragmented-clusters'] ?? 0) * 100 / alloc).toFixed(2)}% fragmented, ${((r['compressed-clusters'] ?? 0) * 100 / alloc).toFixed(2)}% compressed clusters`);
  }
  if (r['image-end-offset']) out.push(`Image end offset: ${r['image-end-offset']}`);
  return out.join('\n') + '\n';
}

export const checkCommand: Command = {
  usage: 'IMAGE [--json] [--repair leaks|all] [-U]  integrity check and repair (as qemu-img check [-r]); exit 0 clean, 1 not completed, 2 corruptions, 3 leaks, 63 not qcow2',
  async run(argv) {
    const args = parseArgs(argv, ['--output', '--repair', '-r']);
    const [path] = args.positionals;
    if (!path) throw new UsageError('IMAGE is required');
    const output = args.flags.get('--output');
    if (output !== undefined && output !== 'json' && output !== 'human') throw new UsageError(`--output must be json or human, not "${String(output)}"`);
    const json = args.flags.has('--json') || output === 'json';
    const repair = args.flags.get('--repair') ?? args.flags.get('-r');
    if (repair !== undefined && repair !== 'leaks' && repair !== 'all') throw new UsageError('--repair must be "leaks" or "all"');
    let r: CheckResult;
    let fixed: { leaks: number; corruptions: number } | undefined;
    if (repair) {
      assertNotLocked(path);
      const res = await repairImage(path, repair);
      r = res.after;
      fixed = { leaks: res.leaksFixed, corruptions: res.corruptionsFixed };
      if (!json) for (const a of res.actions) process.stderr.write(`Repaired: ${a}\n`);
    } else {
      // like qemu-img check without -U: a running VM's image changes under us, so its refcounts
      // would look wrong; -U / --force-share checks it anyway
      if (!args.flags.has('-U') && !args.flags.has('--force-share')) assertNotLocked(path);
      let img: Qcow2Image;
      try {
        img = await openForCheck(path);
      } catch (e) {
        // qemu-img check exits 63 when the format has no check (the file is not qcow2)
        if (e instanceof Qcow2Error && e.code === 'not-qcow2') {
          process.stderr.write(`qcow2-lens: ${e.message}; only qcow2 images can be checked\n`);
          return 63;
        }
        throw e;
      }
      try {
        r = await checkImage(img);
      } finally {
        await img.close();
      }
    }
    process.stdout.write(json ? formatCheckJson(r) : human(r, fixed));
    const code = checkExitCode(r);
    if (code === 1) process.stderr.write('qcow2-lens: Check failed\n');
    return code;
  },
};
