/**
 * The CLI's commands, in the order `qcow2-lens --help` lists them. Each is one file here exporting
 * a CommandSpec (../command.ts); adding a command is adding its file and one line below.
 */
import type { CommandSpec } from '../command';
import { amendCommand } from './amend';
import { bitmapCommand } from './bitmap';
import { catCommand } from './cat';
import { checkCommand } from './check';
import { commitCommand } from './commit';
import { compareCommand } from './compare';
import { compactCommand } from './compact';
import { createCommand } from './create';
import { cpCommand } from './cp';
import { infoCommand } from './info';
import { lsCommand } from './ls';
import { mapCommand } from './map';
import { measureCommand } from './measure';
import { partitionsCommand } from './partitions';
import { readCommand } from './read';
import { rebaseCommand } from './rebase';
import { resizeCommand } from './resize';
import { snapshotCommand } from './snapshot';
import { whoseCommand } from './whose';

export const commands: readonly CommandSpec[] = [
  infoCommand,
  mapCommand,
  checkCommand,
  snapshotCommand,
  compactCommand,
  createCommand,
  resizeCommand,
  measureCommand,
  amendCommand,
  bitmapCommand,
  commitCommand,
  rebaseCommand,
  compareCommand,
  readCommand,
  partitionsCommand,
  lsCommand,
  catCommand,
  cpCommand,
  whoseCommand,
];
