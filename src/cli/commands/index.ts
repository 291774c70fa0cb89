/** The CLI's command table: one file per command, registered here. */
import { catCommand } from './cat';
import { checkCommand } from './check';
import { compactCommand } from './compact';
import { cpCommand } from './cp';
import { infoCommand } from './info';
import { lsCommand } from './ls';
import { mapCommand } from './map';
import { partitionsCommand } from './partitions';
import { readCommand } from './read';
import { snapshotCommand } from './snapshot';
import { whoseCommand } from './whose';

export interface Command {
  usage: string;
  run(argv: string[]): Promise<number>;
}

export const commands: Record<string, Command> = {
  cat: catCommand,
  check: checkCommand,
  compact: compactCommand,
  cp: cpCommand,
  info: infoCommand,
  ls: lsCommand,
  map: mapCommand,
  partitions: partitionsCommand,
  read: readCommand,
  snapshot: snapshotCommand,
  whose: whoseCommand,
};
