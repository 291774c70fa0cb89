/** Opens an image file (qcow2 with its backing chain, or raw) straight to its guest view. */
import { openDiskImage } from './qcow2Disk';
import { Guest, openGuest, OpenGuestOptions } from './guest';

export interface GuestImage {
  guest: Guest;
  format: 'qcow2' | 'raw';
  close(): Promise<void>;
}

export async function openGuestImage(path: string, opts: OpenGuestOptions = {}): Promise<GuestImage> {
  const d = await openDiskImage(path);
  try {
    const guest = await openGuest(d.disk, opts);
    return { guest, format: d.format, close: async () => { await guest.close(); await d.close(); } };
  } catch (e) {
    await d.close();
    throw e;
  }
}

/** Runs fn with the image's guest open, and closes it whatever happens. */
export async function withGuestImage<T>(path: string, fn: (g: Guest) => Promise<T>, opts: OpenGuestOptions = {}): Promise<T> {
  const img = await openGuestImage(path, opts);
  try {
    return await fn(img.guest);
  } finally {
    await img.close();
  }
}
