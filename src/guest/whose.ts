/** The text form of a `whose` answer. */
import type { Whose } from './fs';

export function describeWhose(w: Whose): string {
  const at = `0x${w.guestOffset.toString(16)}`;
  const where = w.partition !== undefined ? ` (partition ${w.partition}${w.fs ? `, ${w.fs}` : ''})` : '';
  switch (w.kind) {
    case 'file':
      return `${at}: ${w.path ?? "?"}${w.role && w.role !== 'data' ? ` [${w.role}]` : ''}${w.fileOffset !== undefined ? ` at file offset ${w.fileOffset}` : ''}${where}`;
    case 'free':
      return `${at}: free space${where}`;
    default:
      return `${at}: ${w.kind === 'metadata' ? '' : `${w.kind}: `}${w.metadata ?? w.kind}${where}`;
  }
}
