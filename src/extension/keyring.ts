/**
 * Passphrases of encrypted images, by image path: in memory for the session once the user unlocks an
 * image, and in VS Code's SecretStorage (the OS keychain) only when they ask to remember it for that
 * image. Held as engine Secrets (they print as "[secret]"), wiped on Lock and when the extension
 * stops. Never written to a log, an error message, a setting or a file. Beside each, the LUKS key
 * slot it opened when the user unlocked the image (not secret: Remove Passphrase… marks that slot).
 */
import type * as vscode from 'vscode';
import { Secret } from '../engine/crypto/secret';
import type { KeyLookup } from '../engine/image/encryption';

const STORAGE_PREFIX = 'qcow2Lens.passphrase:';

export class Keyring {
  private readonly keys = new Map<string, Secret>();
  private readonly slots = new Map<string, number>();

  constructor(private readonly storage: vscode.SecretStorage) {}

  /** The engine's lookup: every encrypted layer of a chain finds its own image's passphrase. */
  readonly lookup: KeyLookup = ({ path }) => {
    const k = this.keys.get(path);
    return k && !k.wiped ? k : undefined;
  };

  has(path: string): boolean {
    return this.lookup({ path, depth: 0 }) !== undefined;
  }

  /** Loads a remembered passphrase into the session (once per path); true when there was one. */
  async restore(path: string): Promise<boolean> {
    if (this.has(path)) return true;
    const stored = await this.storage.get(STORAGE_PREFIX + path);
    if (stored === undefined) return false;
    this.keys.set(path, Secret.fromString(stored));
    return true;
  }

  /**
   * Keeps the passphrase for the session (taking the Secret over), and in SecretStorage when asked;
   * `slot`: the LUKS key slot it opened (kept while the passphrase is the same Secret).
   */
  async set(path: string, secret: Secret, remember: boolean, slot?: number): Promise<void> {
    const old = this.keys.get(path);
    if (old && old !== secret) old.wipe();
    if (slot !== undefined) this.slots.set(path, slot);
    else if (old !== secret) this.slots.delete(path);
    this.keys.set(path, secret);
    if (remember) await this.storage.store(STORAGE_PREFIX + path, secret.bytes().toString('utf8'));
  }

  /** The key slot the session's passphrase opened, when known (a passphrase restored from SecretStorage has not been tried yet). */
  slotOf(path: string): number | undefined {
    return this.has(path) ? this.slots.get(path) : undefined;
  }

  /** Records the key slot the session's passphrase opens (found again after the slots changed). */
  setSlot(path: string, slot: number): void {
    if (this.has(path)) this.slots.set(path, slot);
  }

  /** Whether SecretStorage holds a passphrase for the image. */
  async remembered(path: string): Promise<boolean> {
    return (await this.storage.get(STORAGE_PREFIX + path)) !== undefined;
  }

  /** Forgets the image's passphrase: wiped from memory and deleted from SecretStorage. */
  async forget(path: string): Promise<void> {
    this.keys.get(path)?.wipe();
    this.keys.delete(path);
    this.slots.delete(path);
    await this.storage.delete(STORAGE_PREFIX + path);
  }

  /** Wipes every passphrase held in memory (SecretStorage kept): what a new VS Code session starts with. */
  dropSession(): void {
    for (const k of this.keys.values()) k.wipe();
    this.keys.clear();
    this.slots.clear();
  }

  dispose(): void {
    this.dropSession();
  }
}
