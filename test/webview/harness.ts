/**
 * Browser harness for the webview: a tiny HTTP server serving a page that loads the real bundle
 * (media/webview.js + media/webview.css) under a strict CSP like the editor's, with an
 * `acquireVsCodeApi` shim that forwards every postMessage to this Node process, where the REAL
 * ViewModel answers (no mocks). Host → webview messages are pushed with `window.postMessage`.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { FromWebviewMessage } from '../../src/protocol';
import { ViewModel } from '../../src/extension/viewModel';
import { Qcow2Error } from '../../src/engine/errors';
import { ROOT } from '../helpers/qemu';

export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
];

const NONCE = 'test-nonce-0123456789';

function page(key: string): string {
  // The shim is the only inline script, allowed by its nonce, exactly as the editor's CSP allows its script.
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'self'; script-src 'nonce-${NONCE}'; connect-src 'self'; img-src 'self' data:;">
<link rel="stylesheet" href="/webview.css">
<title>QCOW2 Lens webview test</title></head>
<body><div id="app"></div>
<script nonce="${NONCE}">
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
window.__posted = [];
window.acquireVsCodeApi = () => ({
  postMessage(m) {
    window.__posted.push(m);
    fetch('/msg?img=${encodeURIComponent(key)}', { method: 'POST', body: JSON.stringify(m) })
      .then(r => r.json())
      .then(reply => { if (reply) window.postMessage(reply, '*'); });
  },
  getState() { const s = sessionStorage.getItem('state-${key}'); return s ? JSON.parse(s) : undefined; },
  setState(s) { sessionStorage.setItem('state-${key}', JSON.stringify(s)); },
});
</script>
<script nonce="${NONCE}" src="/webview.js"></script>
</body></html>`;
}

export class WebviewHarness {
  private server!: http.Server;
  readonly models = new Map<string, ViewModel>();
  /** Every message the webview posted, per image key (runCommand, selectionChanged…). */
  readonly received = new Map<string, FromWebviewMessage[]>();
  requests = 0;
  readonly pageErrors: string[] = [];
  maxReadLength = 0;
  /** Delays getSummary replies (to test messages that arrive before the webview has started). */
  summaryDelayMs = 0;
  /** Delays findBytes replies (so a test can cancel a search between its windows). */
  findDelayMs = 0;
  /** While set, every reply waits for it (what the webview shows meanwhile came from pushed messages). */
  replyGate: Promise<void> | undefined;
  url = '';
  browser?: Browser;
  context?: BrowserContext;
  private userDataDir = '';

  /** Why an image did not open, per key: requests are answered with it, as the editor provider does. */
  readonly openErrors = new Map<string, { message: string; structure?: string; hostOffset?: number; code?: string }>();

  /** A file the engine refuses to open (not qcow2, truncated): returns the engine's error. */
  async addUnopenable(key: string, imagePath: string): Promise<Qcow2Error> {
    try {
      const vm = await ViewModel.open(imagePath);
      await vm.close();
    } catch (e) {
      if (!(e instanceof Qcow2Error)) throw e;
      this.openErrors.set(key, { message: e.message, structure: e.structure, hostOffset: e.hostOffset, code: e.code });
      return e;
    }
    throw new Error(`${imagePath} opened; the test wants a file the engine refuses`);
  }

  async addImage(key: string, imagePath: string): Promise<ViewModel> {
    const vm = await ViewModel.open(imagePath);
    this.models.set(key, vm);
    return vm;
  }

  async start(): Promise<void> {
    const js = path.join(ROOT, 'media', 'webview.js');
    const css = path.join(ROOT, 'media', 'webview.css');
    if (!fs.existsSync(js)) throw new Error('media/webview.js is missing: run node build.mjs');
    this.server = http.createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://x');
      if (req.method === 'GET' && u.pathname === '/') {
        res.writeHead(200, { 'content-type': 'text/html' }).end(page(u.searchParams.get('img') ?? 'main'));
      } else if (u.pathname === '/webview.js') {
        res.writeHead(200, { 'content-type': 'text/javascript' }).end(fs.readFileSync(js));
      } else if (u.pathname === '/webview.css') {
        res.writeHead(200, { 'content-type': 'text/css' }).end(fs.readFileSync(css));
      } else if (req.method === 'POST' && u.pathname === '/msg') {
        const key = u.searchParams.get('img') ?? 'main';
        const chunks: Buffer[] = [];
        req.on('data', c => chunks.push(c));
        req.on('end', () => {
          // a failure here is recorded as a page error (the tests assert there are none), not thrown
          // into the server's event handler where nobody would catch it
          this.reply(key, Buffer.concat(chunks), res).catch((e: unknown) => {
            this.pageErrors.push(`${key}: harness: ${e instanceof Error ? e.message : String(e)}`);
            res.writeHead(500).end();
          });
        });
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>(r => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    const { chromium } = await import('playwright-core');
    this.userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-chromium-'));
    this.context = await chromium.launchPersistentContext(this.userDataDir, {
      executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 860 },
    });
  }

  private async reply(key: string, body: Buffer, res: http.ServerResponse): Promise<void> {
    const msg = JSON.parse(body.toString()) as FromWebviewMessage;
    const list = this.received.get(key) ?? [];
    list.push(msg);
    this.received.set(key, list);
    this.requests++;
    if (msg.type === 'readHost' || msg.type === 'readGuest') this.maxReadLength = Math.max(this.maxReadLength, msg.length);
    if (msg.type === 'getSummary' && this.summaryDelayMs) await new Promise(r => setTimeout(r, this.summaryDelayMs));
    if (msg.type === 'findBytes' && this.findDelayMs) await new Promise(r => setTimeout(r, this.findDelayMs));
    if (this.replyGate) await this.replyGate;
    const vm = this.models.get(key);
    const requestId = (msg as { requestId?: number }).requestId;
    const reply = vm ? await vm.handle(msg) : requestId === undefined ? null : { type: 'error', requestId, ...(this.openErrors.get(key) ?? { message: `no image ${key}` }) };
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(reply ?? null));
  }

  async open(key: string, opts: { waitReady?: boolean } = {}): Promise<Page> {
    const p = await this.context!.newPage();
    p.on('pageerror', e => this.pageErrors.push(`${key}: ${e.message}`));
    await p.goto(`${this.url}/?img=${encodeURIComponent(key)}`);
    if (opts.waitReady !== false) await p.waitForSelector('body[data-ready]', { timeout: 15000 });
    return p;
  }

  /** Pushes a host → webview message, as the extension's webview.postMessage does. */
  async push(p: Page, msg: unknown): Promise<void> {
    await p.evaluate(m => window.postMessage(m, '*'), msg);
  }

  /**
   * Ends the harness: `shot` saves the page as test-out/<shot>.png first (what the suite last showed,
   * to look at when it fails); `dir`, the suite's scratch folder, is removed after.
   */
  async stop(last: { page?: Page; shot?: string; dir?: string } = {}): Promise<void> {
    if (last.page && last.shot) {
      fs.mkdirSync(path.join(ROOT, 'test-out'), { recursive: true });
      await last.page.screenshot({ path: path.join(ROOT, 'test-out', `${last.shot}.png`) }).catch(() => undefined);
    }
    await this.context?.close().catch(() => undefined);
    await new Promise<void>(r => (this.server ? this.server.close(() => r()) : r()));
    for (const vm of this.models.values()) await vm.close().catch(() => undefined);
    if (this.userDataDir) fs.rmSync(this.userDataDir, { recursive: true, force: true });
    if (last.dir) fs.rmSync(last.dir, { recursive: true, force: true });
  }
}
