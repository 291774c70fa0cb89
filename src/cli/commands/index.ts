/**
 * The CLI's commands, in the order `qcow2-lens --help` lists them. Each is one file here exporting
 * a CommandSpec (../command.ts); adding a command is adding its file and one line below.
 *
 * Each command is loaded when it runs (a dynamic import: the build splits the CLI into one chunk per
 * command plus the shared engine chunks), so `qcow2-lens info` does not load the compactor, the
 * guest file systems or the crypto code. Only the full `--help` loads every command.
 */
import type { CommandSpec } from '../command';

export interface CommandEntry {
  readonly name: string;
  load(): Promise<CommandSpec>;
}

export const commands: readonly CommandEntry[] = [
  { name: 'info', load: async () => (await import('./info')).infoCommand },
  { name: 'map', load: async () => (await import('./map')).mapCommand },
  { name: 'check', load: async () => (await import('./check')).checkCommand },
  { name: 'snapshot', load: async () => (await import('./snapshot')).snapshotCommand },
  { name: 'compact', load: async () => (await import('./compact')).compactCommand },
  { name: 'convert', load: async () => (await import('./convert')).convertCommand },
  { name: 'sparsify', load: async () => (await import('./sparsify')).sparsifyCommand },
  { name: 'create', load: async () => (await import('./create')).createCommand },
  { name: 'resize', load: async () => (await import('./resize')).resizeCommand },
  { name: 'measure', load: async () => (await import('./measure')).measureCommand },
  { name: 'amend', load: async () => (await import('./amend')).amendCommand },
  { name: 'bitmap', load: async () => (await import('./bitmap')).bitmapCommand },
  { name: 'commit', load: async () => (await import('./commit')).commitCommand },
  { name: 'rebase', load: async () => (await import('./rebase')).rebaseCommand },
  { name: 'compare', load: async () => (await import('./compare')).compareCommand },
  { name: 'read', load: async () => (await import('./read')).readCommand },
  { name: 'partitions', load: async () => (await import('./partitions')).partitionsCommand },
  { name: 'ls', load: async () => (await import('./ls')).lsCommand },
  { name: 'cat', load: async () => (await import('./cat')).catCommand },
  { name: 'cp', load: async () => (await import('./cp')).cpCommand },
  { name: 'whose', load: async () => (await import('./whose')).whoseCommand },
  { name: 'space', load: async () => (await import('./space')).spaceCommand },
];

/** Every command's spec, in order (for `--help` and the tests). */
export function loadCommands(): Promise<CommandSpec[]> {
  return Promise.all(commands.map(c => c.load()));
}
