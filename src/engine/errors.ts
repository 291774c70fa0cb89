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

export type Qcow2ErrorCode =
  | 'corrupt' // the image's metadata is inconsistent or out of bounds
  | 'unsupported' // a valid image using something we do not handle
  | 'not-qcow2' // the file is not a qcow2 image at all
  | 'io' // the operating system refused a read or write
  | 'encrypted' // guest data is encrypted and no key handling exists
  | 'missing-backing' // a backing file named by the header cannot be opened
  | 'locked' // a running QEMU holds the image
  | 'bad-passphrase' // no active key slot opens with the passphrase given (or QEMU would refuse the passphrase itself)
  | 'cancelled';

export function hex(n: number | bigint): string {
  return '0x' + n.toString(16);
}
