/**
 * "Unlock Image…" and "Lock Image": an encrypted image's structure shows without a key; its guest data
 * (the Disk hex view, guest maps, guest files) needs the passphrase. Unlock asks for it in a password
 * input box, tries it on the image's key slots (PBKDF2 runs off the extension host's thread, with
 * progress: QEMU's default iteration time makes each slot take a second or two), keeps it for the
 * session and, only when the user says so, in VS Code's SecretStorage for that image. Lock forgets it
 * (memory and SecretStorage). Each open tab of the image is reopened with or without the key.
 *
 * The passphrase never reaches a log, an error message or the output channel: it lives in an engine
 * Secret, and a wrong one is reported as "no key slot opens with it", without echoing it.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { Secret } from '../engine/crypto/secret';
import { Qcow2Error } from '../engine/errors';
import { unlockImage as unlockEncryption } from '../engine/image/encryption';
import { Qcow2Image } from '../engine/image/image';
import { Services, targetUri, UserError } from './commandSupport';

export interface UnlockOptions {
  /** For tests and other extensions: the passphrase, instead of the input box. */
  passphrase?: string;
  /** Remember it in SecretStorage (without asking). */
  remember?: boolean;
}

const REMEMBER = 'Remember for This Image';

/** A passphrase no active key slot opens: the one wording, naming the image, never the passphrase. */
export class WrongPassphrase extends UserError {
  constructor(imagePath: string) {
    super(`Wrong passphrase for ${path.basename(imagePath)}: no active key slot opens with it.`);
  }
}

/**
 * Opens the file alone (no chain) and tries the passphrase on its key slots, in order, as LUKS
 * does: the first slot it opens (undefined for legacy AES, which has none), or a WrongPassphrase. The caller keeps the Secret; the master key found is wiped at once.
 */
export async function openingSlot(imagePath: string, secret: Secret): Promise<number | undefined> {
  const img = await Qcow2Image.open(imagePath, { openBacking: false, openDataFile: false });
  try {
    if (!img.encrypted) throw new UserError(`${path.basename(imagePath)} is not encrypted: there is nothing to unlock.`);
    const u = await unlockEncryption(img.file, imagePath, img.header, secret);
    u.cipher.dispose();
    u.masterKey?.wipe();
    return u.slot;
  } catch (e) {
    throw e instanceof Qcow2Error && e.code === 'bad-passphrase' ? new WrongPassphrase(imagePath) : e;
  } finally {
    await img.close();
  }
}

export async function unlockImage(s: Services, uriArg?: unknown, opts: UnlockOptions = {}): Promise<boolean> {
  const uri = targetUri(s, uriArg);
  const name = vscode.workspace.asRelativePath(uri);
  let text = opts.passphrase;
  if (text === undefined) {
    text = await vscode.window.showInputBox({
      title: `Unlock ${name}`,
      prompt: 'The passphrase of one of the image\'s key slots. It is kept in memory for this session; you can choose to remember it for this image afterwards.',
      password: true,
      ignoreFocusOut: true,
      validateInput: v => (v ? undefined : 'Enter the passphrase'),
    });
    if (text === undefined) return false;
  }
  const secret = Secret.fromString(text);
  let slot: number | undefined;
  try {
    slot = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Unlocking ${name}… (trying its key slots)` }, () => openingSlot(uri.fsPath, secret));
  } catch (e) {
    secret.wipe();
    throw e;
  }
  await s.keyring.set(uri.fsPath, secret, opts.remember === true, slot);
  s.provider.document(uri)?.fileChanged();
  if (opts.remember === undefined && opts.passphrase === undefined) {
    void vscode.window.showInformationMessage(`${name} is unlocked for this session.`, REMEMBER).then(async choice => {
      if (choice === REMEMBER) await s.keyring.set(uri.fsPath, secret, true);
    });
  }
  return true;
}

export async function lockImage(s: Services, uriArg?: unknown): Promise<boolean> {
  const uri = targetUri(s, uriArg);
  const had = s.keyring.has(uri.fsPath) || await s.keyring.remembered(uri.fsPath);
  await s.keyring.forget(uri.fsPath);
  s.provider.document(uri)?.fileChanged();
  void vscode.window.setStatusBarMessage(had ? `${vscode.workspace.asRelativePath(uri)} is locked: its passphrase is forgotten.` : `${vscode.workspace.asRelativePath(uri)} was not unlocked.`, 8000);
  return had;
}
