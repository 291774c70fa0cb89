/**
 * The extension's settings (`contributes.configuration` in package.json, `qcow2Lens.*`), parsed and
 * validated here without `vscode`, so the rules are tested with Node alone. VS Code passes through
 * whatever a settings.json holds (a string where a number belongs, a value outside the enum): every
 * setting falls back to its default then, with a problem line saying which and why, never a throw.
 *
 * Read live: configuration.ts reads them at each use and tells open editors when they change; the
 * webview gets its part (WebviewSettings) through the protocol.
 */
import type { WebviewSettings } from '../protocol';
import { formatBytes } from '../engine/units';

export const SECTION = 'qcow2Lens';

export const CHECK_ON_OPEN = ['always', 'never', 'belowLimit'] as const;
export type CheckOnOpen = (typeof CHECK_ON_OPEN)[number];
export const COMPACT_COMPRESSION = ['none', 'zlib', 'zstd'] as const;
export type CompactCompression = (typeof COMPACT_COMPRESSION)[number];
export const HEX_BYTES_PER_ROW = [8, 16, 32] as const;
export type HexBytesPerRow = (typeof HEX_BYTES_PER_ROW)[number];

/** The cluster map's role table costs about 12 bytes per host cluster (engine/check/inspect.ts). */
export const MAX_CLUSTER_MAP_CLUSTERS = 64 * 1024 * 1024;
/** The disk-usage tree's entries per folder, at most (the host's bound too: spaceReport.ts). */
export const MAX_LARGEST_ENTRIES = 100;
/** 1 PiB in MiB: beyond any file, and exact as a double. */
const MAX_SIZE_LIMIT_MIB = 1024 * 1024 * 1024;

export interface Settings {
  /** Whether the integrity check runs by itself when an image opens (and when its file changes). */
  checkOnOpen: CheckOnOpen;
  /** With checkOnOpen 'belowLimit': files up to this many MiB are checked on open. */
  checkOnOpenSizeLimitMiB: number;
  /** The cluster map is built for files of at most this many host clusters. */
  clusterMapMaxClusters: number;
  /** What Compact Image offers first, and uses when a caller names no compression. */
  compactCompression: CompactCompression;
  /** The editor opens the backing chain (guest bytes read through it) or the file alone. */
  followBackingFiles: boolean;
  hexBytesPerRow: HexBytesPerRow;
  /** Entries listed per folder in the guest disk-usage tree. */
  spaceLargestEntries: number;
}

export const DEFAULT_SETTINGS: Readonly<Settings> = Object.freeze({
  checkOnOpen: 'belowLimit',
  checkOnOpenSizeLimitMiB: 16384,
  clusterMapMaxClusters: 16 * 1024 * 1024,
  compactCompression: 'none',
  followBackingFiles: true,
  hexBytesPerRow: 16,
  spaceLargestEntries: 10,
});

/** Each setting: its key under `qcow2Lens.` and how a raw value becomes a valid one (or undefined: not valid, and why). */
type Parser<T> = (raw: unknown) => { value: T } | { why: string };
interface SettingSpec<K extends keyof Settings> { key: string; parse: Parser<Settings[K]> }

const oneOf = <T extends string | number>(choices: readonly T[]): Parser<T> => raw =>
  (choices as readonly unknown[]).includes(raw) ? { value: raw as T } : { why: `must be one of ${choices.map(c => JSON.stringify(c)).join(', ')}` };

const integer = (min: number, max: number): Parser<number> => raw => {
  if (typeof raw !== 'number' || !Number.isFinite(raw)) return { why: 'must be a number' };
  if (!Number.isInteger(raw)) return { why: 'must be a whole number' };
  if (raw < min || raw > max) return { why: `must be between ${min} and ${max}` };
  return { value: raw };
};

const boolean: Parser<boolean> = raw => (typeof raw === 'boolean' ? { value: raw } : { why: 'must be true or false' });

export const SETTING_SPECS: { [K in keyof Settings]: SettingSpec<K> } = {
  checkOnOpen: { key: 'checkOnOpen', parse: oneOf(CHECK_ON_OPEN) },
  checkOnOpenSizeLimitMiB: { key: 'checkOnOpenSizeLimitMiB', parse: integer(0, MAX_SIZE_LIMIT_MIB) },
  clusterMapMaxClusters: { key: 'clusterMap.maxClusters', parse: integer(1, MAX_CLUSTER_MAP_CLUSTERS) },
  compactCompression: { key: 'compact.compression', parse: oneOf(COMPACT_COMPRESSION) },
  followBackingFiles: { key: 'followBackingFiles', parse: boolean },
  hexBytesPerRow: { key: 'hexView.bytesPerRow', parse: oneOf(HEX_BYTES_PER_ROW) },
  spaceLargestEntries: { key: 'space.largestEntries', parse: integer(1, MAX_LARGEST_ENTRIES) },
};

/** The full name a person types in settings.json, e.g. `qcow2Lens.hexView.bytesPerRow`. */
export function settingName(k: keyof Settings): string {
  return `${SECTION}.${SETTING_SPECS[k].key}`;
}

/**
 * Reads every setting through `get` (the key under `qcow2Lens.`; undefined when unset). An invalid
 * value gives the default and one line in `problems`; the value itself is not quoted (it may be
 * anything, of any length).
 */
export function parseSettings(get: (key: string) => unknown): { settings: Settings; problems: string[] } {
  const settings: Settings = { ...DEFAULT_SETTINGS };
  const problems: string[] = [];
  for (const k of Object.keys(SETTING_SPECS) as (keyof Settings)[]) {
    let raw: unknown;
    try {
      raw = get(SETTING_SPECS[k].key);
    } catch {
      raw = undefined; // a configuration that cannot be read counts as unset
    }
    if (raw === undefined || raw === null) continue;
    const r = (SETTING_SPECS[k].parse as Parser<unknown>)(raw);
    if ('value' in r) (settings as unknown as Record<string, unknown>)[k] = r.value;
    else problems.push(`${settingName(k)} ${r.why}; using the default, ${JSON.stringify(DEFAULT_SETTINGS[k])}.`);
  }
  return { settings, problems };
}

/** Whether an image of `fileSize` bytes is checked when it opens; when not, a sentence saying why and what to do. */
export function checkOnOpen(s: Pick<Settings, 'checkOnOpen' | 'checkOnOpenSizeLimitMiB'>, fileSize: number): { check: true } | { check: false; note: string } {
  if (s.checkOnOpen === 'always') return { check: true };
  if (s.checkOnOpen === 'never') return { check: false, note: `Not checked on open (${settingName('checkOnOpen')} is "never"). Run check to check it.` };
  const limit = s.checkOnOpenSizeLimitMiB * 1024 * 1024;
  if (fileSize <= limit) return { check: true };
  return { check: false, note: `Not checked on open: the file is ${formatBytes(fileSize)}, above ${settingName('checkOnOpenSizeLimitMiB')} (${s.checkOnOpenSizeLimitMiB} MiB). Run check to check it.` };
}

/** What the webview of one tab needs. */
export function webviewSettings(s: Settings, checkNote?: string): WebviewSettings {
  return { hexBytesPerRow: s.hexBytesPerRow, clusterMapMaxClusters: s.clusterMapMaxClusters, diskUsageTop: s.spaceLargestEntries, ...(checkNote ? { checkNote } : {}) };
}
