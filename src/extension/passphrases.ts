/**
 * "Add Passphrase…" and "Remove Passphrase…": the key slots of a LUKS-encrypted image, as
 * `qemu-img amend -o encrypt.state=active,encrypt.new-secret=…[,encrypt.keyslot=N]` /
 * `encrypt.state=inactive,encrypt.keyslot=N` (or `encrypt.old-secret=…`) change them (engine:
 * ops/amendEncryption.ts, crash-safe order).
 *
 * Add offers the free key slots when there are several (the first free one first, the default),
 * needs a passphrase the image already has (the session's, when the image is unlocked; else asked),
 * then the new one twice, then a modal confirmation; the new slot gets QEMU's default PBKDF2 time
 * (2 s). Remove lists the active key slots (PBKDF2 iterations and hash; the one this session's
 * passphrase opens marked), opens the image with the session's passphrase (else one asked, of any
 * slot), and erases the slot chosen only after a modal confirmation — the 40-pass erase cannot be
 * undone. The picker's last item, and the `passphrase` option, erase instead every slot a given
 * passphrase opens, as old-secret does. Removing the last active slot is refused: the data would be
 * unreadable forever. When the session's passphrase no longer opens any slot, it is forgotten
 * (memory and SecretStorage).
 *
 * Passphrases live in engine Secrets only (password input boxes; never logged or echoed).
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { Secret } from '../engine/crypto/secret';
import { Qcow2Error } from '../engine/errors';
import { EncryptInfo, readEncryptInfo } from '../engine/image/encryption';
import { Qcow2Image } from '../engine/image/image';
import type { EncryptionAmendResult } from '../engine/ops/amendEncryption';
import { confirm, refuseLocked, Services, targetUri, UserError } from './commandSupport';
import { amendEncryptionAt } from './engineApi';
import { inputBox, pickOne } from './prompts';
import { openingSlot, WrongPassphrase } from './unlockImage';

export interface AddPassphraseOptions {
  /** For tests and other extensions: a passphrase the image has (instead of the session's or the input box). */
  existing?: string;
  /** The passphrase to add (instead of the two input boxes). */
  newPassphrase?: string;
  /** The key slot to put it in (encrypt.keyslot; default the first free one, no picker). */
  slot?: number;
  /** false: no modal confirmation (tests). */
  confirm?: boolean;
  /** PBKDF2 milliseconds for the new slot (QEMU's default 2000). */
  iterTimeMs?: number;
}

export interface RemovePassphraseOptions {
  /**
   * The passphrase to remove (instead of the picker and the input box): every key slot it opens is
   * erased (encrypt.old-secret); with `slot`, that slot only, which must hold it. The image opens with it.
   */
  passphrase?: string;
  /** The key slot to erase (encrypt.keyslot), instead of the picker. */
  slot?: number;
  /** With `slot` alone: a passphrase the image has, to open it (encrypt.key-secret), instead of the session's or the input box. */
  existing?: string;
  /** false: no modal confirmation (tests). */
  confirm?: boolean;
}

type Slots = NonNullable<EncryptInfo['slots']>;

function askPassphrase(title: string, prompt: string, validate?: (v: string) => string | undefined): Promise<string | undefined> {
  return inputBox({ title, prompt, password: true, ignoreFocusOut: true, validateInput: v => (!v ? 'Enter the passphrase' : validate?.(v)) });
}

/** The image's LUKS facts (key slots, hash), or a UserError when it has no key slots to manage. */
async function luksInfo(uri: vscode.Uri): Promise<EncryptInfo & { slots: Slots }> {
  const img = await Qcow2Image.open(uri.fsPath, { openBacking: false, openDataFile: false });
  let info: EncryptInfo | undefined;
  try {
    info = await readEncryptInfo(img.file, img.header);
  } finally {
    await img.close();
  }
  if (!info?.slots) throw new UserError(`${path.basename(uri.fsPath)} is not LUKS-encrypted: it has no key slots (legacy AES images have one fixed key; convert to LUKS first).`);
  return { ...info, slots: info.slots };
}

/** Engine refusals a user can act on, worded for them; the rest unchanged. */
function userFacing(e: unknown, uri: vscode.Uri): unknown {
  if (!(e instanceof Qcow2Error)) return e;
  const name = path.basename(uri.fsPath);
  let m: RegExpMatchArray | null;
  if ((m = /Given keyslot (\d+) doesn't contain/.exec(e.detail))) return new UserError(`That passphrase does not open key slot ${m[1]} of ${name}; nothing was changed.`);
  if ((m = /Given keyslot (\d+) is already erased/.exec(e.detail))) return new UserError(`Key slot ${m[1]} of ${name} is not in use: there is nothing to remove.`);
  if ((m = /Refusing to overwrite active keyslot (\d+)/.exec(e.detail))) return new UserError(`Key slot ${m[1]} of ${name} is in use: choose a free one, or remove its passphrase first.`);
  if (e.code === 'bad-passphrase') return new WrongPassphrase(uri.fsPath);
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
    throw userFacing(e, uri);
  }
}

/** How a key slot is listed: its PBKDF2 work (the hash is the header's, one for every slot). */
const slotWork = (info: EncryptInfo, i: number) => `${(info.slots?.[i]?.iters ?? 0).toLocaleString('en-US')} PBKDF2 iterations, ${info['hash-alg'] ?? 'sha256'}`;

/**
 * The active key slot the session's passphrase opens (LUKS tries the slots in order: the first),
 * or undefined when the session holds none. Known from Unlock; else (a passphrase restored from
 * SecretStorage, or the slot gone) found by trying it, with progress, and recorded.
 */
async function sessionSlot(s: Services, uri: vscode.Uri, slots: Slots): Promise<number | undefined> {
  const held = s.keyring.lookup({ path: uri.fsPath, depth: 0 });
  if (!held) return undefined;
  const known = s.keyring.slotOf(uri.fsPath);
  if (known !== undefined && slots[known]?.active) return known;
  const found = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Finding the key slot this session's passphrase opens…` },
    () => openingSlot(uri.fsPath, held)).then(x => x, (e: unknown) => { if (e instanceof WrongPassphrase) return undefined; throw e; });
  if (found !== undefined) s.keyring.setSlot(uri.fsPath, found);
  return found;
}

/**
 * After key slots were erased: the session's passphrase is tried again when the slot it opened is
 * gone (it may open another); when it opens none it is forgotten. True when it was forgotten.
 */
async function settleSession(s: Services, uri: vscode.Uri, erased: number[], removed?: Secret): Promise<boolean> {
  const held = s.keyring.lookup({ path: uri.fsPath, depth: 0 });
  if (!held) return false;
  const at = s.keyring.slotOf(uri.fsPath);
  // old-secret erased every slot the removed passphrase opens: if the session held it, it opens none now
  const gone = removed !== undefined && held.equals(removed);
  if (!gone) {
    if (at !== undefined && !erased.includes(at)) return false;
    try {
      const slot = await openingSlot(uri.fsPath, held);
      if (slot !== undefined) s.keyring.setSlot(uri.fsPath, slot);
      return false;
    } catch (e) {
      if (!(e instanceof WrongPassphrase)) throw e;
    }
  }
  await s.keyring.forget(uri.fsPath);
  return true;
}

export async function addPassphrase(s: Services, uriArg?: unknown, opts: AddPassphraseOptions = {}): Promise<EncryptionAmendResult | undefined> {
  const uri = targetUri(s, uriArg);
  const name = vscode.workspace.asRelativePath(uri);
  const info = await luksInfo(uri);
  const free = info.slots.flatMap((sl, i) => (sl.active ? [] : [i]));
  if (free.length === 0) throw new UserError(`${name} has no free key slot (all 8 are in use). Remove a passphrase first.`);
  refuseLocked(uri);
  let slot = opts.slot ?? free[0];
  if (opts.slot === undefined && opts.newPassphrase === undefined && free.length > 1) {
    const pick = await pickOne(free.map((i, n) => ({ label: `key slot ${i}`, description: n === 0 ? 'the first free slot (default)' : 'free', slot: i })),
      { title: `Add a passphrase to ${name}: which key slot?`, placeHolder: `${info.slots.length - free.length} of ${info.slots.length} key slots are in use` });
    if (!pick) return undefined;
    slot = pick.slot;
  }
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
    if (opts.confirm !== false && !await confirm(`Add a passphrase to ${name}?`,
      `Key slot ${slot} will hold the new passphrase; the existing ones keep working. The image's encryption header is written in place (key material first, then the header).`, 'Add Passphrase')) return undefined;
    const r = await run(uri, `Adding a passphrase to ${name}… (deriving the slot key)`, key, { state: 'active', newSecret, keyslot: slot, iterTimeMs: opts.iterTimeMs });
    s.provider.document(uri)?.fileChanged();
    void vscode.window.showInformationMessage(`Added a passphrase to ${name} (key slot ${r.slots.join(', ')}); ${r.active.filter(Boolean).length} of 8 key slots are in use.`);
    return r;
  } finally {
    for (const k of owned) k.wipe();
  }
}

const BY_PASSPHRASE = 'By passphrase…';

export async function removePassphrase(s: Services, uriArg?: unknown, opts: RemovePassphraseOptions = {}): Promise<EncryptionAmendResult | undefined> {
  const uri = targetUri(s, uriArg);
  const name = vscode.workspace.asRelativePath(uri);
  const info = await luksInfo(uri);
  const active = info.slots.flatMap((sl, i) => (sl.active ? [i] : []));
  if (active.length <= 1) throw new UserError(`${name} has only one passphrase: removing it would make the image's data unreadable forever. Add another passphrase first.`);
  refuseLocked(uri);
  let slot = opts.slot;
  let text = opts.passphrase;
  if (slot === undefined && text === undefined) {
    const mine = await sessionSlot(s, uri, info.slots);
    const items = [
      ...active.map(i => ({ label: `key slot ${i}`, description: slotWork(info, i) + (i === mine ? ' — this session\'s passphrase' : ''), slot: i })),
      { label: BY_PASSPHRASE, description: 'type a passphrase: every key slot it opens is erased', slot: undefined },
    ] as { label: string; description: string; slot?: number }[];
    const pick = await pickOne(items, { title: `Remove a passphrase from ${name}: which key slot?`, placeHolder: `${active.length} of ${info.slots.length} key slots are in use; you are asked to confirm` });
    if (!pick) return undefined;
    slot = pick.slot;
    if (slot === undefined) {
      text = await askPassphrase(`Remove a passphrase from ${name}`, 'The passphrase to remove: every key slot it opens is erased. The other passphrases keep working.');
      if (text === undefined) return undefined;
    }
  }
  const owned: Secret[] = [];
  try {
    // the removed passphrase (old-secret), if any: the image opens with it, as qemu-img's key-secret must
    const old = text !== undefined ? Secret.fromString(text) : undefined;
    if (old) owned.push(old);
    let key = old ?? (opts.existing !== undefined ? Secret.fromString(opts.existing) : s.keyring.lookup({ path: uri.fsPath, depth: 0 }));
    if (key && key !== old && opts.existing !== undefined) owned.push(key);
    if (!key) { // erasing a slot by index (no passphrase given): the image opens with any of its passphrases
      const t = await askPassphrase(`Remove key slot ${String(slot)} from ${name}`, 'A passphrase the image has (any key slot\'s, this one\'s included): the image is opened with it before the slot is erased.');
      if (t === undefined) return undefined;
      key = Secret.fromString(t);
      owned.push(key);
    }
    const sessionNote = slot !== undefined && slot === s.keyring.slotOf(uri.fsPath) ? ' It holds the passphrase this session unlocked the image with.' : '';
    const gone = slot !== undefined ? `The passphrase in key slot ${slot} will no longer unlock the image` : 'This passphrase will no longer unlock the image: every key slot it opens is erased';
    if (opts.confirm !== false && !await confirm(slot !== undefined ? `Erase key slot ${slot} of ${name}?` : `Remove this passphrase from ${name}?`,
      `${gone}; the other passphrases keep working (${active.length} of 8 key slots are in use).${sessionNote} ` +
      'The key material is overwritten 40 times with random bytes: this cannot be undone.', slot !== undefined ? 'Erase Key Slot' : 'Remove Passphrase')) return undefined;
    const r = await run(uri, `Removing a passphrase from ${name}… (${slot !== undefined ? 'opening the image' : 'trying the key slots'})`, key, { state: 'inactive', oldSecret: old, keyslot: slot });
    const forgot = await settleSession(s, uri, r.slots, slot === undefined ? old : undefined);
    s.provider.document(uri)?.fileChanged();
    void vscode.window.showInformationMessage(`Removed a passphrase from ${name} (key slot ${r.slots.join(', ')} erased)${forgot ? '; the session had unlocked the image with it, so it is locked now' : ''}.`);
    return r;
  } finally {
    for (const k of owned) k.wipe();
  }
}
