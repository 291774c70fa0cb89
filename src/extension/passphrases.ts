/**
 * "Add Passphrase…" and "Remove Passphrase…": the key slots of a LUKS-encrypted image, as
 * `qemu-img amend -o encrypt.state=active,encrypt.new-secret=…` / `encrypt.state=inactive,
 * encrypt.old-secret=…` change them (engine: ops/amendEncryption.ts, crash-safe order).
 *
 * Add needs a passphrase the image already has (the session's, when the image is unlocked; else
 * asked), then the new one twice, then a modal confirmation; the new slot gets QEMU's default
 * PBKDF2 time (2 s). Remove asks for the passphrase to remove (every slot it opens is erased, as
 * old-secret does) and refuses removing the last one — that would make the data unreadable forever.
 * A removed passphrase the session held is forgotten (memory and SecretStorage).
 *
 * Passphrases live in engine Secrets only (password input boxes; never logged or echoed).
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { Secret } from '../engine/crypto/secret';
import { Qcow2Error } from '../engine/errors';
import { readEncryptInfo } from '../engine/image/encryption';
import { Qcow2Image } from '../engine/image/image';
import type { EncryptionAmendResult } from '../engine/ops/amendEncryption';
import { confirm, refuseLocked, Services, targetUri, UserError } from './commandSupport';
import { amendEncryptionAt } from './engineApi';

export interface AddPassphraseOptions {
  /** For tests and other extensions: a passphrase the image has (instead of the session's or the input box). */
  existing?: string;
  /** The passphrase to add (instead of the two input boxes). */
  newPassphrase?: string;
  /** false: no modal confirmation (tests). */
  confirm?: boolean;
  /** PBKDF2 milliseconds for the new slot (QEMU's default 2000). */
  iterTimeMs?: number;
}

export interface RemovePassphraseOptions {
  /** The passphrase to remove (instead of the input box). */
  passphrase?: string;
  confirm?: boolean;
}

function askPassphrase(title: string, prompt: string, validate?: (v: string) => string | undefined): Thenable<string | undefined> {
  return vscode.window.showInputBox({ title, prompt, password: true, ignoreFocusOut: true, validateInput: v => (!v ? 'Enter the passphrase' : validate?.(v)) });
}

/** The image's key slots, or a UserError when it has none to manage. */
async function luksSlots(uri: vscode.Uri): Promise<boolean[]> {
  const img = await Qcow2Image.open(uri.fsPath, { openBacking: false, openDataFile: false });
  let slots: boolean[] | undefined;
  try {
    slots = (await readEncryptInfo(img.file, img.header))?.slots?.map(x => x.active);
  } finally {
    await img.close();
  }
  if (!slots) throw new UserError(`${path.basename(uri.fsPath)} is not LUKS-encrypted: it has no key slots (legacy AES images have one fixed key; convert to LUKS first).`);
  return slots;
}

/** Engine refusals a user can act on, worded for them; the rest unchanged. */
function userFacing(e: unknown, name: string): unknown {
  if (!(e instanceof Qcow2Error)) return e;
  if (e.code === 'bad-passphrase') return new UserError(`Wrong passphrase for ${name}: no active key slot opens with it.`);
  if (/All the active keyslots match|the only active keyslot/.test(e.detail)) {
    return new UserError(`That is the only passphrase of ${name}: removing it would make the image's data unreadable forever. Add another passphrase first.`);
  }
  if (/all keyslots are in use/.test(e.detail)) return new UserError(`${name} has no free key slot (all 8 are in use). Remove a passphrase first.`);
  return e;
}

async function run(uri: vscode.Uri, title: string, key: Secret, o: Parameters<typeof amendEncryptionAt>[2]): Promise<EncryptionAmendResult> {
  try {
    return await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title }, () => amendEncryptionAt(uri.fsPath, key, o));
  } catch (e) {
    throw userFacing(e, path.basename(uri.fsPath));
  }
}

export async function addPassphrase(s: Services, uriArg?: unknown, opts: AddPassphraseOptions = {}): Promise<EncryptionAmendResult | undefined> {
  const uri = targetUri(s, uriArg);
  const name = vscode.workspace.asRelativePath(uri);
  const slots = await luksSlots(uri);
  if (slots.every(a => a)) throw new UserError(`${name} has no free key slot (all 8 are in use). Remove a passphrase first.`);
  refuseLocked(uri);
  const owned: Secret[] = [];
  try {
    let key = opts.existing !== undefined ? Secret.fromString(opts.existing) : s.keyring.lookup({ path: uri.fsPath, depth: 0 });
    if (opts.existing !== undefined && key) owned.push(key);
    if (!key) {
      const text = await askPassphrase(`Add a passphrase to ${name} (1/3)`, 'A passphrase the image already has: it unlocks the key the new passphrase will also unlock.');
      if (text === undefined) return undefined;
      key = Secret.fromString(text);
      owned.push(key);
    }
    let text = opts.newPassphrase;
    if (text === undefined) {
      text = await askPassphrase(`Add a passphrase to ${name} (2/3)`, 'The new passphrase.');
      if (text === undefined) return undefined;
      const first = text;
      const again = await askPassphrase(`Add a passphrase to ${name} (3/3)`, 'The new passphrase again.', v => (v === first ? undefined : 'The two entries differ'));
      if (again === undefined) return undefined;
    }
    const newSecret = Secret.fromString(text);
    owned.push(newSecret);
    const free = slots.indexOf(false);
    if (opts.confirm !== false && !await confirm(`Add a passphrase to ${name}?`,
      `Key slot ${free} will hold the new passphrase; the existing ones keep working. The image's encryption header is written in place (key material first, then the header).`, 'Add Passphrase')) return undefined;
    const r = await run(uri, `Adding a passphrase to ${name}… (deriving the slot key)`, key, { state: 'active', newSecret, iterTimeMs: opts.iterTimeMs });
    s.provider.document(uri)?.fileChanged();
    void vscode.window.showInformationMessage(`Added a passphrase to ${name} (key slot ${r.slots.join(', ')}); ${r.active.filter(Boolean).length} of 8 key slots are in use.`);
    return r;
  } finally {
    for (const k of owned) k.wipe();
  }
}

export async function removePassphrase(s: Services, uriArg?: unknown, opts: RemovePassphraseOptions = {}): Promise<EncryptionAmendResult | undefined> {
  const uri = targetUri(s, uriArg);
  const name = vscode.workspace.asRelativePath(uri);
  const slots = await luksSlots(uri);
  const active = slots.filter(Boolean).length;
  if (active <= 1) throw new UserError(`${name} has only one passphrase: removing it would make the image's data unreadable forever. Add another passphrase first.`);
  refuseLocked(uri);
  let text = opts.passphrase;
  if (text === undefined) {
    text = await askPassphrase(`Remove a passphrase from ${name}`, 'The passphrase to remove: every key slot it opens is erased. The other passphrases keep working.');
    if (text === undefined) return undefined;
  }
  const old = Secret.fromString(text);
  try {
    if (opts.confirm !== false && !await confirm(`Remove this passphrase from ${name}?`,
      `Every key slot it opens is erased (${active} of 8 are in use); it will no longer unlock the image. This cannot be undone.`, 'Remove Passphrase')) return undefined;
    // the passphrase being removed opens the image, as qemu-img's key-secret must
    const r = await run(uri, `Removing a passphrase from ${name}… (trying the key slots)`, old, { state: 'inactive', oldSecret: old });
    const held = s.keyring.lookup({ path: uri.fsPath, depth: 0 });
    const forgot = held !== undefined && held.equals(old);
    if (forgot) await s.keyring.forget(uri.fsPath);
    s.provider.document(uri)?.fileChanged();
    void vscode.window.showInformationMessage(`Removed a passphrase from ${name} (key slot ${r.slots.join(', ')} erased)${forgot ? '; the session had unlocked the image with it, so it is locked now' : ''}.`);
    return r;
  } finally {
    old.wipe();
  }
}
