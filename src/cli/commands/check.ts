import { CheckResult, checkExitCode, checkImage, formatCheckJson, openForCheck } from '../../engine/check/check';
import { Qcow2Error } from '../../engine/errors';
import { Qcow2Image } from '../../engine/image/image';
import { repairImage, type RepairMode } from '../../engine/check/repair';
import { brokenChainFinding, findBrokenChain, type BrokenChain } from '../../engine/check/backingChain';
import { assertNotLocked } from '../../engine/ops/writable';
import { FORCE_SHARE, FORMAT, JSON_FLAG, OUTPUT, PROGRESS, QUIET, type CommandSpec } from '../command';
import { createProgress } from '../progress';

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

/** Whether the chain under PATH opens (the image opened alone, as the check opens it). */
async function chainOf(path: string): Promise<BrokenChain | null> {
  const img = await openForCheck(path);
  try {
    return await findBrokenChain(img);
  } finally {
    await img.close();
  }
}

/** qemu-img check's refusal of an image whose chain does not open, in its words (printed even with -q, as qemu-img does). */
function refuse(path: string, b: BrokenChain): number {
  process.stderr.write(`qcow2-lens: Could not open '${path}': ${b.qemuMessage}\n`);
  process.stderr.write(`qcow2-lens: (--no-backing checks "${path}" alone)\n`);
  return 1;
}

export const checkCommand: CommandSpec = {
  name: 'check',
  summary: 'integrity check and repair, as qemu-img check [-r]: the same counts, JSON and exit codes, plus findings',
  usage: ['[-q] [-p] [-f qcow2] [--output=human|json] [-r leaks|all] [-U] [--no-backing] IMAGE'],
  options: [
    { long: 'repair', short: 'r', value: 'leaks|all', choices: ['leaks', 'all'], help: 'repair in place: leaks, or all (also raises low refcounts, rebuilds the refcount structure, sets COPIED flags)' },
    { long: 'no-backing', help: 'judge the file alone when its backing chain cannot be opened (qemu-img check then exits 1, "Could not open backing file"); the broken chain becomes a backing-chain-broken finding' },
    OUTPUT, JSON_FLAG, FORCE_SHARE, FORMAT, { ...QUIET, help: 'quiet: print nothing (not even the JSON); the exit code is the answer' }, PROGRESS,
  ],
  operands: { names: ['IMAGE'] },
  exitCodes: '0 clean, 1 check not completed, 2 corruptions, 3 leaks only, 63 not a qcow2 image, 64 usage error (as qemu-img check)',
  async run(args) {
    const [path] = args.operands;
    const repair = args.string('repair') as RepairMode | undefined;
    const progress = createProgress({ label: `${repair ? 'repairing' : 'checking'} ${path}`, quiet: args.quiet, force: args.forceProgress });
    let r: CheckResult;
    let fixed: { leaks: number; corruptions: number } | undefined;
    let broken: BrokenChain | null;
    try {
      if (repair) {
        assertNotLocked(path);
        // qemu-img check -r opens the whole chain first, as the check without -r does
        broken = await chainOf(path);
        if (broken && !args.has('no-backing')) return refuse(path, broken);
        const res = await repairImage(path, repair, { onProgress: (d, t) => progress.update(d, t) });
        r = res.after;
        fixed = { leaks: res.leaksFixed, corruptions: res.corruptionsFixed };
        if (!args.json && !args.quiet) for (const a of res.actions) process.stderr.write(`Repaired: ${a}\n`);
      } else {
        // like qemu-img check without -U: a running VM's image changes under us, so its refcounts
        // would look wrong; -U / --force-share checks it anyway
        if (!args.has('force-share')) assertNotLocked(path);
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
          // qemu-img check opens the backing chain (it never reads it): a broken chain is exit 1
          broken = await findBrokenChain(img);
          if (broken && !args.has('no-backing')) return refuse(path, broken);
          r = await checkImage(img, { onProgress: (d, t) => progress.update(d, t) });
        } finally {
          await img.close();
        }
      }
    } finally {
      progress.end();
    }
    if (broken) r.findings.push(brokenChainFinding(broken));
    // -q prints nothing, JSON included, as qemu-img check -q: the exit code is the answer
    if (!args.quiet) process.stdout.write(args.json ? formatCheckJson(r) : human(r, fixed));
    const code = checkExitCode(r);
    if (code === 1) process.stderr.write('qcow2-lens: Check failed\n');
    return code;
  },
};
