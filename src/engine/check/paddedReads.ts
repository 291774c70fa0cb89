/**
 * Table reads for the check: bytes past the end of the file read as zero, as QEMU's block layer
 * returns them, so a truncated image is walked (and judged) the way `qemu-img check` judges it.
 */
import { ImageFile, readMany } from '../io/reader';

/** Reads same-sized tables by host offset; bytes past the end of the file read as zero. */
export async function readTablesPadded(file: ImageFile, offsets: number[], size: number, structure: (o: number) => string): Promise<Map<number, Buffer>> {
  const inside: number[] = [];
  const out = new Map<number, Buffer>();
  for (const o of offsets) {
    if (o + size <= file.size) inside.push(o);
    else if (o >= file.size || !Number.isSafeInteger(o)) out.set(o, Buffer.alloc(size));
    else out.set(o, await file.readPadded(o, size, structure(o)));
  }
  if (inside.length) for (const [o, b] of await readMany(file, inside, size, structure)) out.set(o, b);
  return out;
}

/** One table at `offset`, padded like readTablesPadded. */
export async function readTablePadded(file: ImageFile, offset: number, size: number, structure: string): Promise<Buffer> {
  return (await readTablesPadded(file, [offset], size, () => structure)).get(offset)!;
}

/** The bounded table window (io/tableWindow.ts); the check's is padded, its default. */
export { TableWindow } from '../io/tableWindow';
