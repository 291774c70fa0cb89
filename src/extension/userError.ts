/**
 * Errors the user must act on, and the refusal every write path shares: an image QEMU holds open is
 * never written. Kept apart from commandSupport.ts so the document (which refuses too) need not
 * import the command layer that imports it.
 */
import * as vscode from 'vscode';
import { isLockedByQemu } from '../engine/io/lock';

/** Thrown for conditions the user must fix; shown as a plain error message. */
export class UserError extends Error {}

/** Writes are refused while QEMU (a VM, qemu-nbd, qemu-img) holds the image. */
export function refuseLocked(uri: vscode.Uri): void {
  if (isLockedByQemu(uri.fsPath)) {
    throw new UserError(`${vscode.workspace.asRelativePath(uri)} is in use by QEMU (a running VM or qemu-nbd holds a lock on it). Shut it down first; writing now would corrupt the image.`);
  }
}
