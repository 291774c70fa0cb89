/**
 * "Go to Guest Offset…" / "Go to Host Offset…": resolve the offset with the engine (guest → host
 * cluster through L1/L2), then ask the open webviews to reveal it.
 */
import * as vscode from 'vscode';
import { SUBCLUSTER_TYPE_NAMES } from '../engine/qcow2/cluster';
import { Qcow2Image } from '../engine/image/image';
import { formatPath, step } from '../engine/path';
import { parseOffset } from '../engine/units';
import { Qcow2Error } from '../engine/errors';
import { readSettings } from './configuration';
import { describeGuestOffset } from './findGuest';
import { Services, targetUri, UserError } from './commandSupport';

export interface GuestLocation {
  guestOffset: number;
  /** 'data', 'zero', 'unallocated', 'compressed', … (as the L2 entry says). */
  type: string;
  /** The byte's host offset in this image's file (data and reserved clusters). */
  hostOffset?: number;
  structure: string;
  /** Where the byte lives, in words ("unallocated: reads zeros", "from backing file base.qcow2 at depth 1"…). */
  description: string;
  /** Webviews that were asked to reveal it. */
  revealedIn: number;
}

async function askOffset(prompt: string, max: number): Promise<number | undefined> {
  const text = await vscode.window.showInputBox({
    prompt, placeHolder: 'e.g. 0x10000, 65536, 64K, 1M',
    validateInput: v => {
      const n = parseOffset(v);
      return n === undefined ? 'Enter a number: decimal, 0x… hex, or with K/M/G' : n >= max ? `Must be below ${max} (0x${max.toString(16)})` : undefined;
    },
  });
  return text === undefined ? undefined : parseOffset(text);
}

/** An offset argument (number or text); anything else (the editor menu's context object) = none given. */
function givenOffset(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'string') {
    const n = parseOffset(v);
    if (n === undefined) throw new UserError(`"${v}" is not an offset (decimal, 0x… hex, or with K/M/G).`);
    return n;
  }
  return undefined;
}

/** Opens the image with its backing chain (without it when a backing file is missing or is not to be followed). */
async function openForGuest(fsPath: string, follow: boolean): Promise<{ img: Qcow2Image; backingNotOpened: boolean }> {
  if (follow) {
    try {
      return { img: await Qcow2Image.open(fsPath), backingNotOpened: false };
    } catch (e) {
      if (!(e instanceof Qcow2Error && e.code === 'missing-backing')) throw e;
    }
  }
  const img = await Qcow2Image.open(fsPath, { openBacking: false });
  return { img, backingNotOpened: !!img.header.backingFile };
}

export async function goToGuestOffset(s: Services, uriArg?: unknown, offsetArg?: unknown): Promise<GuestLocation | undefined> {
  const uri = targetUri(s, uriArg);
  const follow = readSettings(uri).settings.followBackingFiles;
  const { img, backingNotOpened } = await openForGuest(uri.fsPath, follow);
  try {
    const guestOffset = givenOffset(offsetArg) ?? await askOffset(`Guest offset (disk size ${img.virtualSize} bytes)`, img.virtualSize);
    if (guestOffset === undefined) return undefined;
    if (!(guestOffset >= 0 && guestOffset < img.virtualSize)) throw new UserError(`Guest offset ${guestOffset} is outside the ${img.virtualSize}-byte disk.`);
    let loc: Omit<GuestLocation, 'revealedIn' | 'description'> = { guestOffset, type: 'unallocated', structure: formatPath([step('L1')]) };
    await img.walk(guestOffset, guestOffset + 1, r => {
      const type = SUBCLUSTER_TYPE_NAMES[r.type] ?? String(r.type);
      const structure = formatPath([step('L1', r.l1Index), step('L2', r.l2Index)]);
      loc = { guestOffset, type, structure, hostOffset: r.hostOffset > 0 ? r.hostOffset : r.compressedOffset };
    });
    const where = await describeGuestOffset(img, guestOffset, { backingNotFollowed: backingNotOpened });
    // the webview asks for the same words itself (describeGuest) and selects the L1/L2 entries
    const revealedIn = s.provider.postTo(uri, { type: 'revealGuestOffset', guestOffset });
    if (!revealedIn) void vscode.window.showInformationMessage(`Disk offset 0x${guestOffset.toString(16)}: ${where.text} (${where.structure ?? 'L1'}).`);
    return { ...loc, description: where.text, revealedIn };
  } finally {
    await img.close();
  }
}

export async function goToHostOffset(s: Services, uriArg?: unknown, offsetArg?: unknown): Promise<{ hostOffset: number; hostCluster: number; revealedIn: number } | undefined> {
  const uri = targetUri(s, uriArg);
  const size = (await vscode.workspace.fs.stat(uri)).size;
  const hostOffset = givenOffset(offsetArg) ?? await askOffset(`Host offset in the image file (${size} bytes)`, size);
  if (hostOffset === undefined) return undefined;
  if (!(hostOffset >= 0 && hostOffset < size)) throw new UserError(`Host offset ${hostOffset} is outside the ${size}-byte file.`);
  const img = await Qcow2Image.open(uri.fsPath, { openBacking: false, openDataFile: false });
  const clusterSize = img.clusterSize;
  await img.close();
  const revealedIn = s.provider.postTo(uri, { type: 'revealHostOffset', hostOffset });
  return { hostOffset, hostCluster: Math.floor(hostOffset / clusterSize), revealedIn };
}
