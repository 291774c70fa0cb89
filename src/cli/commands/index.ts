/**
 * The CLI's commands, in the order `qcow2-lens --help` lists them. Each is one file here exporting
 * a CommandSpec (../command.ts); adding a command is adding its file and one line below.
 */
import type { CommandSpec } from '../command';
import { checkCommand } from './check';
import { compactCommand } from './compact';
import { infoCommand } from './info';
import { mapCommand } from './map';
import { readCommand } from './read';
import { snapshotCommand } from './snapshot';

export const commands: readonly CommandSpec[] = [
  infoCommand,
  mapCommand,
  checkCommand,
  snapshotCommand,
  compactCommand,
  readCommand,
];
