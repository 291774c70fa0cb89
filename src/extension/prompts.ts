/**
 * Scripted answers to the prompts commands show, for extension-host tests: a modal dialog is drawn
 * by the workbench and cannot be clicked from the extension host, so a test queues the answers
 * (qcow2Lens.internal.scriptPrompts) and the command's own confirm() / pickOne() / inputBox() take
 * them instead of showing the prompt, recording what they would have shown (title, text, the items
 * offered; never an input's value, which may be a passphrase). With nothing queued — always,
 * outside tests — every prompt is VS Code's own.
 */
import * as vscode from 'vscode';

/**
 * The next prompt's answer: the modal's action button (true) or Cancel/Escape (false); the label of
 * the quick pick item chosen, or undefined for Escape; the text entered in an input box (it must
 * pass the box's validation), or undefined for Escape.
 */
export type ScriptedAnswer = { confirm: boolean } | { pick: string | undefined } | { input: string | undefined };

export interface ShownPrompt {
  kind: 'confirm' | 'pick' | 'input';
  message: string;
  detail?: string;
  items?: { label: string; description?: string; detail?: string }[];
}

const answers: ScriptedAnswer[] = [];
const shown: ShownPrompt[] = [];

/**
 * Queues the answers for the next prompts (replacing any left over) when given, and returns the
 * prompts scripted answers went to since the last call.
 */
export function scriptPrompts(next?: ScriptedAnswer[]): ShownPrompt[] {
  const seen = shown.splice(0, shown.length);
  if (next) answers.splice(0, answers.length, ...next);
  return seen;
}

/** The queued answer for this prompt, or undefined when none is queued (then the real one is shown). */
function scripted(p: ShownPrompt): ScriptedAnswer | undefined {
  const a = answers.shift();
  if (a === undefined) return undefined;
  shown.push(p);
  if (!(p.kind in a)) throw new Error(`scripted prompts: a ${p.kind} came ("${p.message}") where the script has ${JSON.stringify(a)}`);
  return a;
}

/** The scripted answer of a modal confirmation, or undefined when the real modal is to be shown. */
export function scriptedConfirm(message: string, detail: string): boolean | undefined {
  const a = scripted({ kind: 'confirm', message, detail });
  return a && 'confirm' in a ? a.confirm : undefined;
}

/** A quick pick of one item (undefined: Escape). */
export async function pickOne<T extends vscode.QuickPickItem>(items: T[], options: vscode.QuickPickOptions & { title: string }): Promise<T | undefined> {
  const a = scripted({ kind: 'pick', message: options.title, items: items.map(i => ({ label: i.label, description: i.description, detail: i.detail })) });
  if (a && 'pick' in a) {
    if (a.pick === undefined) return undefined;
    const item = items.find(i => i.label === a.pick);
    if (!item) throw new Error(`scripted prompts: "${options.title}" offers no item "${a.pick}"`);
    return item;
  }
  return vscode.window.showQuickPick(items, options);
}

/** An input box (undefined: Escape). */
export async function inputBox(options: vscode.InputBoxOptions & { title: string }): Promise<string | undefined> {
  const a = scripted({ kind: 'input', message: options.title, detail: options.prompt });
  if (a && 'input' in a) {
    if (a.input === undefined) return undefined;
    const refused = await options.validateInput?.(a.input);
    if (refused) throw new Error(`scripted prompts: "${options.title}" refuses the input: ${typeof refused === 'string' ? refused : refused.message}`);
    return a.input;
  }
  return vscode.window.showInputBox(options);
}
