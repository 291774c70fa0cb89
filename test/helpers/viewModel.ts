/** Talking to the extension's ViewModel as the webview does: a request with its id, the reply. */
import * as assert from 'node:assert/strict';
import type { ViewModel } from '../../src/extension/viewModel';
import type { FromWebviewMessage, ToWebviewMessage } from '../../src/protocol';

let id = 1;

/** Sends request `m` (its requestId added) and returns the reply; an error reply throws its message. */
export async function ask<T extends ToWebviewMessage>(vm: ViewModel, m: Record<string, unknown>): Promise<T> {
  const r = await vm.handle({ ...m, requestId: id++ } as unknown as FromWebviewMessage);
  assert.ok(r, `no reply to ${String(m.type)}`);
  if (r.type === 'error') throw new Error(`error reply: ${r.message}`);
  return r as T;
}
