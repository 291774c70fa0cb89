/**
 * Progress for long work, on stderr (stdout carries the command's output, JSON included):
 *   - stderr is a terminal: a bar redrawn in place, erased when the work ends;
 *   - not a terminal: nothing, unless -p asked for it: then qemu-img's `    (42.00/100%)` form, one
 *     line per whole percent (a log file gets lines, not carriage returns);
 *   - -q: nothing.
 */

export interface Progress {
  /** Reports how much of the work is done; cheap to call often. */
  update(done: number, total: number): void;
  /** Ends the display (erases the bar); safe to call more than once. */
  end(): void;
}

export interface ProgressOptions {
  /** What is being done, e.g. "checking a.qcow2". */
  label: string;
  quiet?: boolean;
  /** -p: show progress even when the stream is not a terminal. */
  force?: boolean;
  stream?: Pick<NodeJS.WriteStream, 'write'> & { isTTY?: boolean; columns?: number };
}

const SILENT: Progress = { update() {}, end() {} };

export function createProgress(opts: ProgressOptions): Progress {
  const stream = opts.stream ?? process.stderr;
  if (opts.quiet) return SILENT;
  const p = stream.isTTY ? new TerminalBar(stream, opts.label) : opts.force ? new PercentLines(stream) : SILENT;
  // shown from the start, as qemu-img does: the work may take a while to report its first step
  p.update(0, 1);
  return p;
}

function fraction(done: number, total: number): number {
  return total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
}

/** Redrawn when the shown permille changes: a few hundred writes for the whole job at most. */
class TerminalBar implements Progress {
  private shown = -1;
  private drawn = false;

  constructor(private readonly stream: Pick<NodeJS.WriteStream, 'write'> & { columns?: number }, private readonly label: string) {}

  update(done: number, total: number): void {
    const permille = Math.floor(fraction(done, total) * 1000);
    if (permille === this.shown) return;
    this.shown = permille;
    const pct = `${(permille / 10).toFixed(1)}%`.padStart(6);
    const columns = this.stream.columns || 80; // 0 on a terminal that does not say
    const label = this.label.length > columns / 2 ? `…${this.label.slice(-Math.floor(columns / 2) + 1)}` : this.label;
    const barWidth = Math.max(10, columns - label.length - pct.length - 5);
    const filled = Math.round((barWidth * permille) / 1000);
    this.stream.write(`\r${label} [${'#'.repeat(filled)}${'-'.repeat(barWidth - filled)}] ${pct}`);
    this.drawn = true;
  }

  end(): void {
    if (this.drawn) this.stream.write('\r\x1b[K');
    this.drawn = false;
  }
}

class PercentLines implements Progress {
  private shown = -1;

  constructor(private readonly stream: Pick<NodeJS.WriteStream, 'write'>) {}

  update(done: number, total: number): void {
    const pct = Math.floor(fraction(done, total) * 100);
    if (pct <= this.shown) return;
    this.shown = pct;
    this.stream.write(`    (${pct.toFixed(2)}/100%)\n`);
  }

  end(): void {}
}
