/**
 * Structure paths as values: where in an image a finding, an error or a view node lives, as a list of
 * steps from the top ("snapshot[0] "s1" → L1[3] → L2[0x1f] → data"). One formatter and one parser, so
 * the CLI, the Problems panel and the webview print the same text and read back the same value.
 *
 * Numbering: table entries a person counts (L1, refcount table, snapshots, bitmaps, extensions) are
 * decimal; entries inside a cluster-sized table (L2, refcount block, bitmap table) are hex, as their
 * index is an offset within the cluster and is read next to hex dumps.
 */

/** The named on-disk structures a path can step through, with how each one's index is written. */
export const STEP_RADIX = {
  'header': 10,
  'extension': 10,
  'snapshot table': 10,
  'snapshot': 10,
  'L1': 10,
  'L1 table': 10,
  'L2': 16,
  'L2 table': 16,
  'refcount table': 10,
  'refcount block': 16,
  'bitmap directory': 10,
  'bitmap': 10,
  'bitmap table': 10,
  'data': 10,
  'compressed data': 10,
  'file': 10,
  'LUKS header': 10,
  'encryption header': 10,
  'key slot': 10,
} as const;
export type StepName = keyof typeof STEP_RADIX;

export interface PathStep {
  readonly name: StepName;
  /** Entry index within the structure: `L1[3]`. */
  readonly index?: number;
  /** A name the structure carries on disk (a snapshot's or a bitmap's): `snapshot[0] "s1"`. */
  readonly label?: string;
  /** A field of the structure: `header.l1_size`. */
  readonly field?: string;
}
export type StructurePath = readonly PathStep[];

export function step(name: StepName, index?: number, more: { label?: string; field?: string } = {}): PathStep {
  return { name, ...(index === undefined ? {} : { index }), ...more };
}

/** `a → b`: a path continuing another (a snapshot's L1, an L2 under an L1 entry). */
export function join(...parts: (StructurePath | PathStep)[]): StructurePath {
  return parts.flatMap(p => (Array.isArray(p) ? p : [p as PathStep]));
}

function formatIndex(name: StepName, index: number): string {
  return STEP_RADIX[name] === 16 ? `0x${index.toString(16)}` : String(index);
}

export function formatStep(s: PathStep): string {
  let out: string = s.name;
  if (s.index !== undefined) out += `[${formatIndex(s.name, s.index)}]`;
  if (s.label !== undefined) out += ` "${s.label}"`;
  if (s.field !== undefined) out += `.${s.field}`;
  return out;
}

export const PATH_SEPARATOR = ' → ';

export function formatPath(p: StructurePath): string {
  return p.map(formatStep).join(PATH_SEPARATOR);
}

const NAMES = (Object.keys(STEP_RADIX) as StepName[]).sort((a, b) => b.length - a.length);

function parseStep(text: string): PathStep | undefined {
  const name = NAMES.find(n => text === n || text.startsWith(n + '[') || text.startsWith(n + ' "') || text.startsWith(n + '.'));
  if (!name) return undefined;
  let rest = text.slice(name.length);
  let index: number | undefined, label: string | undefined, field: string | undefined;
  const ix = /^\[(0x[0-9a-f]+|\d+)\]/i.exec(rest);
  if (ix) {
    index = Number(ix[1]);
    if (!Number.isSafeInteger(index)) return undefined;
    rest = rest.slice(ix[0].length);
  }
  if (rest.startsWith(' "')) {
    const end = rest.lastIndexOf('"');
    if (end < 2) return undefined;
    label = rest.slice(2, end);
    rest = rest.slice(end + 1);
  }
  if (rest.startsWith('.')) {
    field = rest.slice(1);
    if (!/^[a-z0-9_]+$/i.test(field)) return undefined;
    rest = '';
  }
  if (rest !== '') return undefined;
  return { name, ...(index === undefined ? {} : { index }), ...(label === undefined ? {} : { label }), ...(field === undefined ? {} : { field }) };
}

/** The value `formatPath` printed, or undefined when the text is not a structure path. */
export function parsePath(text: string): StructurePath | undefined {
  const parts = text.split(PATH_SEPARATOR);
  const out: PathStep[] = [];
  for (const part of parts) {
    const s = parseStep(part.trim());
    if (!s) return undefined;
    out.push(s);
  }
  return out;
}
