/**
 * Errors are values carrying the file, the on-disk structure path and the host offset
 * (STYLE.md principle 4), so every message reads "file: structure at 0x…: what is wrong".
 */
export class Qcow2Error extends Error {
  constructor(
    readonly file: string,
    readonly structure: string,
    readonly hostOffset: number | undefined,
    readonly detail: string,
    readonly code: Qcow2ErrorCode = 'corrupt',
  ) {
    super(`${file}: ${structure}${hostOffset === undefined ? '' : ` at 0x${hostOffset.toString(16)}`}: ${detail}`);
    this.name = 'Qcow2Error';
  }
}

/** What happened, for callers that act on the kind of failure rather than print it. */
export type Qcow2ErrorCode =
  | 'corrupt' // the image's metadata is inconsistent or out of bounds
  | 'unsupported' // a valid image using something we do not handle
  | 'not-qcow2' // the file is not a qcow2 image at all
  | 'not-found' // the file, or a thing named inside the image (a snapshot), does not exist
  | 'permission-denied' // the operating system refused to open the file with the access asked for
  | 'io' // the operating system refused a read or write for another reason
  | 'encrypted' // guest data is encrypted and no key handling exists
  | 'missing-backing' // a backing file named by the header cannot be opened
  | 'locked' // a running QEMU holds the image
  | 'changed-on-disk' // the file changed under us while an operation ran; nothing was replaced
  | 'bad-passphrase' // no active key slot opens with the passphrase given (or QEMU would refuse the passphrase itself)
  | 'cancelled'; // the caller's AbortSignal fired before the operation committed

export function hex(n: number | bigint): string {
  return '0x' + n.toString(16);
}
