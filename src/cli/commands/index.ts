/** The CLI's command table: one file per command, registered here. */
import { checkCommand } from './check';
import { compactCommand } from './compact';
import { infoCommand } from './info';
import { mapCommand } from './map';
import { readCommand } from './read';
import { snapshotCommand } from './snapshot';

export interface Command {
  usage: string;
  run(argv: string[]): Promise<number>;
}

export const commands: Record<string, Command> = {
  check: checkCommand,
  compact: compactCommand,
  info: infoCommand,
  map: mapCommand,
  read: readCommand,
  snapshot: snapshotCommand,
};
