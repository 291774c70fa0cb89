/**
 * The editor's webview: a structure tree, a cluster map, a hex view with a data inspector and the
 * integrity check panel. Everything shown is pulled lazily from the host through the typed
 * protocol (src/protocol.ts); UI state is kept with the webview API's getState/setState so it
 * survives the tab being hidden and shown again. Bundled as an IIFE to media/webview.js; no inline
 * scripts or style attributes, so it runs under the editor's strict CSP.
 */
import type { CheckFinding, CheckSummary, FirstScreenDataMessage, FromWebviewMessage, ImageSummary, NodeId, Severity, ToWebviewMessage, TreeNode, WebviewCommand, WebviewSettings } from '../src/protocol';
import { FIRST_EXPANDED, MessageRequester, RequestError } from '../src/protocol';
import { CheckPanel } from './checkPanel';
import { ClusterMap } from './clusterMap';
import { formatBytes } from '../src/engine/units';
import { button, clear, decodeBase64, el, errorText, hex } from './dom';
import { HexView, Space } from './hexView';
import { DataInspector } from './inspector';
import { StructureTree } from './tree';
import { GuestMap } from './guestMap';
import { BackingChain } from './chain';
import { Splitter } from './split';
import { SpaceBar } from './spaceBar';
import { DiskUsagePanel } from './diskUsage';

interface VsCodeApi {
  postMessage(msg: unknown): void;
  getState(): unknown;
  setState(state: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

interface UiState {
  v: 1;
  expanded: NodeId[];
  selectedNode?: NodeId;
  hex: { space: Space; top: number; selected?: number };
  map: { zoom?: number; scrollTop?: number };
  check?: { summary: CheckSummary; findings: CheckFinding[] };
  /** L1/L2 tables list only their allocated entries. */
  allocatedOnly?: boolean;
  /** The guest-disk map's zoom (bytes per cell) and first byte shown; the tree pane's width (the split). */
  guestMap?: { bucketBytes?: number; start?: number; selected?: number };
  split?: number;
}

class App {
  private readonly vscode: VsCodeApi;
  private readonly requester: MessageRequester;
  private summary: ImageSummary | undefined;
  private readonly root: HTMLElement;
  private readonly header: HTMLElement;
  private readonly tree: StructureTree;
  private readonly map: ClusterMap;
  private readonly hexView: HexView;
  private readonly inspector: DataInspector;
  private readonly check: CheckPanel;
  private readonly details: HTMLElement;
  private readonly banner: HTMLElement;
  /** Where the engine's error goes when the file cannot be opened as an image (instead of the panes). */
  private readonly fatal: HTMLElement;
  private state: UiState;
  private saveTimer: ReturnType<typeof setTimeout> | undefined;
  private started = false;
  /** The host's push of the first screen's answers, for the first start() only. */
  private firstScreenData: Promise<FirstScreenDataMessage> | undefined;
  private gotFirstScreenData: ((m: FirstScreenDataMessage) => void) | undefined;
  /** The last error the host reported on its own (e.g. why the image could not be opened). */
  private lastHostError: string | undefined;
  private pendingReveals: ToWebviewMessage[] = [];
  /** The summary and the tree's first level are loaded: reveals can be applied. */
  private loaded = false;
  /** The host's settings for this tab (qcow2Lens.*), once known. */
  private settings: WebviewSettings | undefined;
  private readonly guestMap: GuestMap;
  private readonly chain: BackingChain;
  private readonly splitter: Splitter;
  /** The Disk view's selection last shown on the disk map. */
  private guestMapSynced: number | undefined;
  /** The space summary and the guest's disk usage (webview/spaceBar.ts, diskUsage.ts), under the header. */
  private readonly spaceBar = new SpaceBar();
  // how many entries per folder: qcow2Lens.space.largestEntries, as the host's settings say (its default until known)
  private readonly diskUsage = new DiskUsagePanel({
    load: () => this.requester.request({ type: 'getDiskUsage', ...(this.settings ? { top: this.settings.diskUsageTop } : {}) }),
    open: (partition, path) => this.runCommand('openGuestFile', { partition, path }),
    reveal: ids => { void this.tree.reveal(ids).then(() => this.tree.focus()); },
  });
  private ownerSeq = 0;
  private highlightSeq = 0;

  constructor() {
    this.vscode = acquireVsCodeApi();
    this.requester = new MessageRequester(m => this.vscode.postMessage(m));
    const saved = this.vscode.getState() as UiState | undefined;
    this.state = saved && saved.v === 1 ? saved : { v: 1, expanded: [...FIRST_EXPANDED], hex: { space: 'host', top: 0 }, map: {} };
    this.firstScreenData = new Promise(resolve => { this.gotFirstScreenData = resolve; });

    this.root = document.getElementById('app') ?? document.body.appendChild(el('div', { attrs: { id: 'app' } }));
    this.header = el('header', { className: 'summary-bar', attrs: { role: 'banner' } });
    this.banner = el('div', { className: 'banner', attrs: { role: 'status', 'aria-live': 'polite' } });
    this.banner.hidden = true;
    this.fatal = el('section', { className: 'fatal', attrs: { 'aria-label': 'Why the image cannot be shown' } });
    this.fatal.hidden = true;

    this.tree = new StructureTree({
      getChildren: async id => (await this.requester.request({ type: 'getTreeChildren', nodeId: id, ...(this.state.allocatedOnly ? { allocatedOnly: true } : {}) })).children,
      onSelect: node => { this.showDetails(node); void this.highlightGuestFile(node); this.post({ type: 'selectionChanged', nodeId: node.id, hostOffset: node.hostOffset, guestOffset: node.guestOffset }); },
      onActivate: node => this.openNode(node),
      onStateChange: () => this.saveState(),
      decorate: node => this.findingSeverity(node),
    });
    this.details = el('div', { className: 'node-details', attrs: { 'aria-live': 'polite' } });

    this.map = new ClusterMap({
      getCells: (startCluster, count, zoom) => this.requester.request({ type: 'getClusterMap', startCluster, count, zoom }),
      describe: async c => (await this.requester.request({ type: 'describeCluster', hostCluster: c })).description,
      onPick: c => {
        const cs = this.summary?.clusterSize ?? 65536;
        this.hexView.reveal(c * cs, 1, 'host');
        void this.revealInTree(undefined, c * cs);
      },
      onStateChange: () => this.saveState(),
    });

    this.guestMap = new GuestMap({
      getRuns: (start, length, buckets) => this.requester.request({ type: 'getGuestRuns', start, length, buckets }),
      onPick: offset => { this.hexView.reveal(offset, 1, 'guest'); void this.describeGuest(offset); },
      onStateChange: () => this.saveState(),
      layerName: depth => this.summary?.backingChain[depth]?.path.split(/[\\/]/).pop(),
    });
    this.chain = new BackingChain({ open: p => this.runCommand('openBacking', { path: p }) });

    this.inspector = new DataInspector();
    this.hexView = new HexView({
      read: async (space, offset, length) => {
        const r = space === 'host'
          ? await this.requester.request({ type: 'readHost', hostOffset: offset, length })
          : await this.requester.request({ type: 'readGuest', guestOffset: offset, length });
        return { offset: r.offset, data: decodeBase64(r.data), sources: r.sources };
      },
      size: space => (space === 'host' ? this.summary?.fileSize : this.summary?.virtualSize) ?? 0,
      clusterSize: () => this.summary?.clusterSize ?? 0,
      imagePath: () => this.summary?.path ?? '',
      find: async (space, pattern, from, direction, window) => this.requester.request({ type: 'findBytes', pattern: encodeBase64(pattern), from, direction, window, space }),
      copy: text => copyText(text),
      findAllocated: (offset, direction) => this.requester.request({ type: 'findAllocated', guestOffset: offset, direction }),
      onGuestJump: offset => void this.describeGuest(offset),
      onSelect: (space, offset, bytes, length) => {
        this.inspector.show(offset, bytes, space === 'host' ? 'file' : 'disk', length);
        // once per offset: the hex view tells again when the bytes arrive, by then the map may have moved on
        if (space === 'guest' && offset !== this.guestMapSynced) { this.guestMapSynced = offset; this.guestMap.select(offset); }
        void this.showOwner(space, offset);
        this.post({ type: 'selectionChanged', ...(space === 'host' ? { hostOffset: offset } : { guestOffset: offset }) });
      },
      onStateChange: () => this.saveState(),
    });

    this.check = new CheckPanel({
      runCheck: () => this.runCommand('check'),
      runRepair: () => this.runCommand('repair'),
      onFinding: f => void this.revealFinding(f),
    });

    const allocated = button('Allocated only', () => {
      this.state.allocatedOnly = !this.state.allocatedOnly;
      allocated.setAttribute('aria-pressed', String(!!this.state.allocatedOnly));
      this.saveState();
      void this.tree.load(this.tree.expandedIds, this.tree.selectedId);
    }, { className: 'allocated-only', title: 'L1 and L2 tables list only the entries that map something', attrs: { 'aria-pressed': String(!!this.state.allocatedOnly) } });
    const treePane = el('section', { className: 'pane tree-pane', attrs: { 'aria-label': 'Structure' } },
      el('div', { className: 'pane-toolbar' }, el('span', { className: 'pane-title', text: 'Structure' }), el('span', { className: 'spacer' }), allocated), this.tree.element, this.details);
    const right = el('div', { className: 'right' },
      el('section', { className: 'pane map-pane', attrs: { 'aria-label': 'Cluster map' } }, this.map.element),
      el('section', { className: 'pane guest-pane', attrs: { 'aria-label': 'Guest disk map' } }, this.chain.element, this.guestMap.element),
      el('section', { className: 'pane hex-pane', attrs: { 'aria-label': 'Bytes' } }, this.hexView.element, this.inspector.element),
      el('section', { className: 'pane check-pane', attrs: { 'aria-label': 'Integrity check' } }, this.check.element));
    clear(this.root);
    this.splitter = new Splitter(treePane, () => this.saveState());
    this.root.append(this.header, el('div', { className: 'space-area' }, this.spaceBar.element, this.diskUsage.element), this.banner, this.fatal, el('main', { className: 'layout' }, treePane, this.splitter.element, right));
    if (this.state.split) this.splitter.set(this.state.split);
    this.header.append(el('span', { className: 'loading', text: 'Opening image…' }));

    window.addEventListener('message', e => this.onMessage(e.data as ToWebviewMessage));
    // the open's milestones (lens:script, lens:summary, lens:badges, lens:tree), which the editor
    // section of npm run bench reads off the webview's performance timeline
    performance.mark('lens:script');
    this.post({ type: 'ready' });
    void this.start();
  }

  private post(m: FromWebviewMessage): void {
    this.vscode.postMessage(m);
  }

  private runCommand(command: WebviewCommand, args?: Record<string, string | number | boolean>): void {
    if (command === 'check') this.check.setRunning(true);
    this.post({ type: 'runCommand', command, args });
  }

  private async start(): Promise<void> {
    // what the host pushed as soon as the image opened (FirstScreenDataMessage) answers the first
    // start's requests when it comes first; a refresh or Retry asks the host only
    const pushed = this.firstScreenData;
    this.firstScreenData = undefined;
    const first = <T>(asked: Promise<T>, pick: (d: FirstScreenDataMessage) => T | undefined): Promise<T> =>
      pushed ? Promise.race([asked, pushed.then(d => pick(d) ?? asked)]) : asked;
    // the settings first (a host that cannot answer leaves the defaults), so the hex view starts at its row width
    const settings = first(this.requester.request({ type: 'getSettings' }).then(r => r.settings), d => d.settings).catch(() => undefined);
    // the first level and the re-expanded nodes: one round trip before the first rows, not one per level
    this.tree.prefetch(this.state.expanded, (id, asked) => first(asked, d => d.children[id]));
    try {
      this.summary = (await first(this.requester.request({ type: 'getSummary' }), d => ({ type: 'summary' as const, requestId: 0, summary: d.summary }))).summary;
      performance.mark('lens:summary');
    } catch (e) {
      this.showFatal(e);
      return;
    }
    this.hideFatal();
    const st = await settings;
    if (st) this.applySettings(st);
    this.started = true;
    this.renderSummary();
    performance.mark('lens:badges');
    const s = this.state;
    this.hexView.restore(s.hex.space, s.hex.top, s.hex.selected);
    this.chain.show(this.summary);
    if (s.check) this.check.show(s.check.summary, s.check.findings);
    await this.tree.load(s.expanded, s.selectedNode);
    performance.mark('lens:tree');
    this.post({ type: 'firstScreen' });
    // the maps after the tree: the cluster map's first request walks every L2 table and refcount block
    // (~0.4 s for a full 1 TiB image) on the host, the disk map's reads every L2 table (~0.2 s), and
    // either would hold the tree's answer back
    this.map.reset(this.summary.hostClusters, s.map.zoom, s.map.scrollTop);
    this.guestMap.reset(this.summary.virtualSize, this.summary.clusterSize, s.guestMap);
    void this.loadSpace(); // after the maps asked: the report walks the metadata too
    if (s.check) void this.markInnerFindings(s.check.findings);
    this.loaded = true;
    for (const m of this.pendingReveals.splice(0)) this.onMessage(m);
    document.body.dataset.ready = 'true';
  }

  /**
   * The file could not be opened as an image (not qcow2, truncated in the header, damaged beyond
   * what the reader takes): the engine's error, naming the structure and offset, in the tab itself
   * (never a modal), with VS Code's "Reopen With…" (text or hex editor) and Retry. The structure,
   * map and bytes panes are hidden; the check panel stays, with what the check could find.
   */
  private showFatal(e: unknown): void {
    const reply = e instanceof RequestError ? e.reply : undefined;
    const message = errorText(e);
    this.spaceBar.element.hidden = this.diskUsage.element.hidden = true;
    clear(this.header);
    this.header.append(el('span', { className: 'file-name', text: this.root.dataset.file ?? '' }), el('span', { className: 'badge badge-error', text: 'cannot be opened' }));
    const where: Array<[string, string]> = [];
    if (reply?.structure) where.push(['Structure', reply.structure]);
    if (reply?.hostOffset !== undefined) where.push(['Offset in the file', `${hex(reply.hostOffset)} (byte ${reply.hostOffset})`]);
    const reopen = button('Reopen With…', () => this.runCommand('reopenWith'), { className: 'primary', title: 'Open this file in another editor: the text editor or a hex editor' });
    clear(this.fatal);
    const parts: Array<HTMLElement | null | false | undefined> = [
      el('div', { attrs: { role: 'alert' } },
        el('h2', { text: reply?.code === 'not-qcow2' ? 'This file is not a qcow2 image' : 'This image cannot be opened' }),
        el('p', { className: 'fatal-message', text: message })),
      where.length > 0 && el('dl', { className: 'fatal-where' }, ...where.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })])),
      !!this.lastHostError && this.lastHostError !== message && el('p', { className: 'fatal-detail', text: this.lastHostError }),
      el('p', { className: 'fatal-hint', text: 'Nothing was written to the file. To see its bytes, reopen it in the text or hex editor; after fixing it, retry. The integrity check below lists what it could find.' }),
      el('div', { className: 'fatal-actions' }, reopen, button('Retry', () => void this.start(), { title: 'Open the image again' }))];
    for (const p of parts) if (p) this.fatal.append(p);
    this.fatal.hidden = false;
    this.root.classList.add('failed');
    document.body.dataset.ready = 'error';
  }

  private hideFatal(): void {
    this.fatal.hidden = true;
    clear(this.fatal);
    this.root.classList.remove('failed');
  }

  private renderSummary(): void {
    const s = this.summary!;
    clear(this.header);
    const badges: Array<[string, string?]> = [
      [`qcow2 v${s.version}`],
      [`${formatBytes(s.virtualSize)} disk`],
      [`${formatBytes(s.fileSize)} file`],
      [`${formatBytes(s.clusterSize)} clusters`],
    ];
    if (s.backingChain.length > 1) badges.push([`backing chain of ${s.backingChain.length}`]);
    if (s.backingChain.some(l => l.error)) badges.push(['backing file missing', 'error']);
    if (s.backingNotFollowed) badges.push(['backing file not followed', 'warning']);
    if (s.snapshots.length) badges.push([`${s.snapshots.length} snapshot(s)`]);
    if (s.bitmaps.length) badges.push([`${s.bitmaps.length} bitmap(s)`]);
    if (s.encryption) badges.push([`encrypted (${s.encryption.format}, ${s.encryption.unlocked ? 'unlocked' : 'locked'})`, s.encryption.unlocked ? undefined : 'warning']);
    if (s.extendedL2) badges.push(['extended L2']);
    if (s.compressionType !== 'zlib') badges.push([`${s.compressionType} compression`]);
    if (s.dataFile) badges.push(['external data file']);
    if (s.dirty) badges.push(['dirty', 'warning']);
    if (s.corrupt) badges.push(['marked corrupt', 'error']);
    if (s.lockedByQemu) badges.push(['in use by QEMU (read-only)', 'warning']);
    else if (s.readOnly) badges.push(['read-only']);
    this.header.append(
      el('span', { className: 'file-name', text: s.fileName, title: s.path }),
      ...badges.map(([t, sev]) => el('span', { className: `badge${sev ? ' badge-' + sev : ''}`, text: t })),
      el('span', { className: 'spacer' }),
      button('Check', () => this.runCommand('check'), { title: 'Run the integrity check' }),
      button('Snapshot…', () => this.runCommand('createSnapshot'), { title: 'Create an internal snapshot' }),
      button('Compact…', () => this.runCommand('compact'), { title: 'Rewrite the image without unused clusters' }),
      ...(!s.encryption ? [] : s.encryption.unlocked
        ? [button('Lock', () => this.runCommand('lock'), { title: 'Forget the passphrase (this session and, if remembered, VS Code\'s secret storage)' })]
        : [button('Unlock…', () => this.runCommand('unlock'), { title: 'Enter the passphrase to read the guest data', className: 'primary' })]),
    );
  }

  private showDetails(node: TreeNode): void {
    clear(this.details);
    this.details.append(el('div', { className: 'details-title', text: node.label + (node.description ? ` — ${node.description}` : '') }));
    const where: string[] = [];
    if (node.hostOffset !== undefined) where.push(`file ${hex(node.hostOffset)}${node.hostLength ? ` (${node.hostLength} bytes)` : ''}`);
    if (node.guestOffset !== undefined) where.push(`disk ${hex(node.guestOffset)}${node.guestLength ? ` … +${formatBytes(node.guestLength)}` : ''}`);
    if (where.length) this.details.append(el('div', { className: 'details-where', text: where.join(' · ') }));
    const actions = el('div', { className: 'details-actions' });
    if (node.hostOffset !== undefined) actions.append(button('Bytes', () => this.openNode(node), { title: 'Show the structure\'s bytes in the file' }));
    if (node.targetHostOffset !== undefined) actions.append(button('Target', () => { this.hexView.reveal(node.targetHostOffset!, 1, 'host'); this.map.select(Math.floor(node.targetHostOffset! / (this.summary?.clusterSize ?? 65536))); }, { title: 'Show what the entry points at' }));
    if (node.guestOffset !== undefined && (this.summary?.virtualSize ?? 0) > node.guestOffset) actions.append(button('Disk bytes', () => this.hexView.reveal(node.guestOffset!, 1, 'guest'), { title: 'Show the guest bytes this entry maps' }));
    const snap = this.summary?.snapshots.find(x => x.nodeId === node.id);
    if (snap) {
      actions.append(
        button('Revert to…', () => this.runCommand('revertSnapshot', { name: snap.name }), { title: `Revert the disk to snapshot "${snap.name}"` }),
        button('Delete…', () => this.runCommand('deleteSnapshot', { name: snap.name }), { title: `Delete snapshot "${snap.name}"` }));
    }
    this.bitmapActions(node, actions);
    if (node.kind === 'encryption' && node.description === 'LUKS') {
      actions.append(
        button('Add Passphrase…', () => this.runCommand('addPassphrase'), { title: 'Put another passphrase in a free key slot (needs one the image has)' }),
        button('Remove Passphrase…', () => this.runCommand('removePassphrase'), { title: 'Erase the key slots a passphrase opens (never the last one)' }));
    }
    const layer = /^layer:(\d+)$/.exec(node.id);
    const layerPath = layer ? this.summary?.backingChain[Number(layer[1])]?.path : undefined;
    if (layerPath) actions.append(button('Open', () => this.runCommand('openBacking', { path: layerPath }), { title: `Open ${layerPath} in QCOW2 Lens` }));
    if (node.guestFile) actions.append(button('Open', () => this.openNode(node), { title: `Open ${node.guestFile.path} in a tab (read-only)` }));
    const gsrc = node.guestEntry && `${node.guestEntry.partition}:${node.guestEntry.path}`;
    if (gsrc) actions.append(button('Copy Out…', () => this.runCommand('copyOutGuest', { source: gsrc }), { title: 'Copy this out of the guest into a host folder' }));
    if (node.kind === 'guest') actions.append(button('Sparsify…', () => this.runCommand('sparsify'), { title: 'Compact, also dropping clusters that lie in guest free space' }));
    if (node.hostOffset !== undefined) actions.append(button('Copy offset', () => this.runCommand('copyOffset', { offset: hex(node.hostOffset!) }), { title: 'Copy the host offset' }));
    if (actions.childElementCount) this.details.append(actions);
  }

  /** The Bitmaps node adds (or merges); a bitmap's node enables or disables, clears, merges into and removes it. The host confirms what loses data. */
  private bitmapActions(node: TreeNode, actions: HTMLElement): void {
    const bitmaps = this.summary?.bitmaps ?? [];
    const v3 = (this.summary?.version ?? 3) >= 3;
    if (node.kind === 'bitmapDirectory' && v3) {
      actions.append(button('Add bitmap…', () => this.runCommand('bitmap', { op: 'add' }), { title: 'Start recording which clusters the guest writes (for incremental backups)' }));
      if (bitmaps.length > 1) actions.append(button('Merge…', () => this.runCommand('bitmap', { op: 'merge' }), { title: 'Add the changes one bitmap recorded to another' }));
      return;
    }
    if (node.kind !== 'bitmap') return;
    const b = bitmaps.find(x => x.name === node.label);
    if (!b) return;
    const run = (op: string) => () => this.runCommand('bitmap', { op, name: b.name });
    actions.append(b.auto
      ? button('Disable', run('disable'), { title: `Stop recording guest writes in "${b.name}"; its content stays` })
      : button('Enable', run('enable'), { title: `Record guest writes in "${b.name}" again` }));
    if (bitmaps.length > 1) actions.append(button('Merge into…', run('merge'), { title: `Add the changes another bitmap recorded to "${b.name}"` }));
    actions.append(
      button('Clear…', run('clear'), { title: `Forget every change "${b.name}" recorded (after a full backup)` }),
      button('Remove…', run('remove'), { title: `Delete bitmap "${b.name}"` }));
  }

  private openNode(node: TreeNode): void {
    if (node.guestFile) return this.runCommand('openGuestFile', { partition: node.guestFile.partition, path: node.guestFile.path });
    if (node.hostOffset === undefined) return;
    this.hexView.reveal(node.hostOffset, Math.min(node.hostLength ?? 1, 4096), 'host');
    if (this.summary) this.map.select(Math.floor(node.hostOffset / this.summary.clusterSize));
  }

  private async revealInTree(structure: string | undefined, hostOffset: number | undefined, nodeId?: NodeId): Promise<void> {
    try {
      const { path } = await this.requester.request({ type: 'locateNode', structure, hostOffset });
      if (path.length) await this.tree.reveal(path);
      else if (nodeId) await this.tree.reveal([nodeId]);
    } catch {
      /* the node cannot be located: the bytes are still shown */
    }
  }

  private innerGeneration = 0;
  /** Counts the findings inside each tree node (from the host's node paths) for the markers on collapsed ancestors. */
  private async markInnerFindings(findings: CheckFinding[]): Promise<void> {
    const gen = ++this.innerGeneration;
    const rank = { info: 1, warning: 2, error: 3 } as const;
    const inner = new Map<NodeId, { count: number; severity: Severity }>();
    for (const f of findings.slice(0, 500)) {
      let path: NodeId[];
      try {
        path = (await this.requester.request({ type: 'locateNode', structure: f.structure, hostOffset: f.hostOffset })).path;
      } catch {
        continue;
      }
      if (gen !== this.innerGeneration) return;
      if (!path.length && f.nodeId) path = [f.nodeId];
      for (const id of path.slice(0, -1)) {
        const cur = inner.get(id);
        if (!cur) inner.set(id, { count: 1, severity: f.severity });
        else { cur.count++; if (rank[f.severity] > rank[cur.severity]) cur.severity = f.severity; }
      }
    }
    this.tree.setInnerFindings(inner);
  }

  /** Says where a guest byte lives (under the hex toolbar), selects its L1/L2 entries and marks its host cluster on the map. */
  private async describeGuest(guestOffset: number): Promise<void> {
    try {
      const { location } = await this.requester.request({ type: 'describeGuest', guestOffset });
      if (this.hexView.space !== 'guest' || this.hexView.selected !== guestOffset) return; // moved on meanwhile
      this.hexView.showWhere(`${hex(guestOffset)}: ${location.text}${location.structure ? ` — ${location.structure}` : ''}`);
      this.guestMap.select(guestOffset);
      if (location.hostOffset !== undefined && location.depth === 0 && this.summary && !this.summary.dataFile) this.map.select(Math.floor(location.hostOffset / this.summary.clusterSize));
      if (location.structure) await this.revealInTree(location.structure, undefined);
    } catch (e) {
      this.hexView.showWhere(`Cannot tell where ${hex(guestOffset)} lives: ${errorText(e)}`);
    }
  }

  private async revealFinding(f: CheckFinding): Promise<void> {
    if (f.hostOffset !== undefined) {
      this.hexView.reveal(f.hostOffset, 1, 'host');
      if (this.summary) this.map.select(Math.floor(f.hostOffset / this.summary.clusterSize));
    } else if (f.guestOffset !== undefined) {
      this.hexView.reveal(f.guestOffset, 1, 'guest');
    }
    await this.revealInTree(f.structure, f.hostOffset, f.nodeId);
  }

  /** The worst severity of the last check's findings that lie in a node's bytes or in the cluster it points at. */
  private findingSeverity(node: TreeNode): Severity | undefined {
    const findings = this.state.check?.findings;
    if (!findings?.length) return undefined;
    const cs = this.summary?.clusterSize ?? 65536;
    let worst: Severity | undefined;
    const rank = { info: 1, warning: 2, error: 3 } as const;
    for (const f of findings) {
      if (f.hostOffset === undefined) continue;
      const inBytes = node.hostOffset !== undefined && f.hostOffset >= node.hostOffset && f.hostOffset < node.hostOffset + Math.max(1, node.hostLength ?? 1);
      const atTarget = node.targetHostOffset !== undefined && Math.floor(node.targetHostOffset / cs) === Math.floor(f.hostOffset / cs);
      if ((inBytes || atTarget) && (!worst || rank[f.severity] > rank[worst])) worst = f.severity;
    }
    return worst;
  }

  private onMessage(m: ToWebviewMessage): void {
    if (!m || typeof m !== 'object' || typeof (m as { type?: unknown }).type !== 'string') return;
    if (this.requester.handle(m)) return;
    if (!this.loaded && (m.type === 'revealHostOffset' || m.type === 'revealGuestOffset' || m.type === 'revealStructure' || m.type === 'revealFinding')) {
      this.pendingReveals.push(m); // sizes and the tree are not known yet: replayed after start()
      return;
    }
    switch (m.type) {
      case 'checkResult':
        this.check.show(m.summary, m.findings);
        this.state.check = { summary: m.summary, findings: m.findings };
        this.tree.redecorate();
        this.saveState();
        void this.markInnerFindings(m.findings);
        break;
      case 'revealFinding':
        this.check.select(m.index);
        void this.revealFinding(m.finding);
        break;
      case 'revealHostOffset':
        this.hexView.reveal(m.hostOffset, m.length ?? 1, 'host');
        if (this.summary) this.map.select(Math.floor(m.hostOffset / this.summary.clusterSize));
        void this.revealInTree(undefined, m.hostOffset);
        break;
      case 'revealGuestOffset':
        this.hexView.reveal(m.guestOffset, m.length ?? 1, 'guest');
        void this.describeGuest(m.guestOffset);
        break;
      case 'revealStructure':
        if (m.hostOffset !== undefined) this.hexView.reveal(m.hostOffset, 1, 'host');
        void this.revealInTree(m.structure, m.hostOffset, m.nodeId);
        break;
      case 'refresh':
        void this.refresh();
        break;
      case 'firstScreenData':
        this.gotFirstScreenData?.(m);
        this.gotFirstScreenData = undefined;
        break;
      case 'settings':
        this.applySettings(m.settings);
        break;
      case 'commandState':
        if (m.command === 'check') this.check.setRunning(m.state === 'running', m.state === 'failed' ? `Check failed: ${m.message ?? ''}` : undefined);
        this.showBanner(m.state === 'running' ? `${m.command}: running…` : m.message ?? `${m.command}: ${m.state}`, m.state === 'failed' ? 'error' : undefined, m.state !== 'running');
        break;
      case 'error':
        this.lastHostError = m.message;
        this.showBanner(m.message, 'error', false);
        break;
      default:
        break;
    }
  }

  private bannerTimer: ReturnType<typeof setTimeout> | undefined;
  private showBanner(text: string, kind?: 'error', autoHide = true): void {
    this.banner.hidden = false;
    this.banner.className = `banner${kind ? ' banner-' + kind : ''}`;
    clear(this.banner);
    this.banner.append(el('span', { text }), button('×', () => { this.banner.hidden = true; }, { className: 'banner-close', attrs: { 'aria-label': 'Dismiss' } }));
    if (this.bannerTimer) clearTimeout(this.bannerTimer);
    if (autoHide) this.bannerTimer = setTimeout(() => { this.banner.hidden = true; }, 6000);
  }

  private async refresh(): Promise<void> {
    this.requester.cancelAll('refresh');
    if (!this.started) { await this.start(); return; }
    try {
      this.summary = (await this.requester.request({ type: 'getSummary' })).summary;
    } catch (e) {
      this.showFatal(e);
      return;
    }
    this.hideFatal();
    this.renderSummary();
    this.hexView.invalidate();
    this.map.reset(this.summary.hostClusters, this.map.zoom, this.map.scrollTop);
    this.chain.show(this.summary);
    this.guestMap.reset(this.summary.virtualSize, this.summary.clusterSize, { bucketBytes: this.guestMap.bucketBytes, start: this.guestMap.start, selected: this.guestMap.selected });
    await this.tree.load(this.tree.expandedIds, this.tree.selectedId);
    void this.loadSpace();
    this.diskUsage.reset();
  }

  /** The space summary: loading, then the report or why it cannot be computed. */
  private async loadSpace(): Promise<void> {
    this.diskUsage.element.hidden = false;
    this.spaceBar.setLoading();
    try {
      const r = await this.requester.request({ type: 'getSpaceReport' });
      if (r.report) this.spaceBar.show(r.report);
      else this.spaceBar.showUnavailable(r.unavailable ?? 'not available');
    } catch (e) {
      if (e instanceof RequestError && e.reply.code === 'cancelled') return;
      this.spaceBar.showUnavailable(errorText(e));
    }
  }

  /**
   * A guest file selected in the tree: its host clusters outlined on the cluster map, and its guest
   * ranges announced for the guest-disk map (qcow2lens:highlightGuest). Any other selection clears both.
   */
  private async highlightGuestFile(node: TreeNode): Promise<void> {
    const seq = ++this.highlightSeq;
    const file = node.kind === 'guestFile' ? node.guestEntry ?? node.guestFile : undefined;
    const announce = (ranges: { start: number; length: number }[], label: string) =>
      document.dispatchEvent(new CustomEvent('qcow2lens:highlightGuest', { detail: { ranges, label } }));
    this.map.highlight([]);
    if (!file) { announce([], ''); return; }
    try {
      const r = await this.requester.request({ type: 'getGuestFileMap', partition: file.partition, path: file.path });
      if (seq !== this.highlightSeq) return;
      this.map.highlight(r.hostClusters);
      announce(r.ranges, r.truncated ? `${r.label} (only its first ${r.ranges.length} pieces are outlined)` : r.label);
    } catch {
      if (seq === this.highlightSeq) announce([], '');
    }
  }

  /** Which guest file owns the selected byte (File or Disk space), on the hex view's owner line. */
  private async showOwner(space: Space, offset: number): Promise<void> {
    const seq = ++this.ownerSeq;
    // whose may scan inodes: ask once the selection rests (arrow keys move it byte by byte)
    await new Promise(r => setTimeout(r, 120));
    if (seq !== this.ownerSeq) return;
    try {
      const r = await this.requester.request({ type: 'describeOwner', ...(space === 'host' ? { hostOffset: offset } : { guestOffset: offset }) });
      if (seq === this.ownerSeq) this.hexView.showOwner(r.text);
    } catch {
      if (seq === this.ownerSeq) this.hexView.showOwner(undefined);
    }
  }

  /** Applies the settings live: the hex view's row width, the cluster map's limit (a change re-requests the map), why the check did not run, the disk-usage tree's entries per folder. */
  private applySettings(next: WebviewSettings): void {
    const before = this.settings;
    this.settings = next;
    this.hexView.setBytesPerRow(next.hexBytesPerRow);
    if (before && before.clusterMapMaxClusters !== next.clusterMapMaxClusters && this.summary) this.map.reset(this.summary.hostClusters, this.map.zoom, this.map.scrollTop);
    if (next.checkNote && !this.state.check && !this.check.summary) this.check.showNote(next.checkNote);
    if (before && before.diskUsageTop !== next.diskUsageTop) this.diskUsage.reset(); // an open tree is added up again
  }

  private saveState(): void {
    if (this.saveTimer) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = undefined;
      this.state = {
        ...this.state,
        expanded: this.tree.expandedIds,
        selectedNode: this.tree.selectedId,
        hex: { space: this.hexView.space, top: this.hexView.topRow * this.hexView.bytesPerRow, selected: this.hexView.selected },
        map: { zoom: this.map.zoom, scrollTop: this.map.scrollTop },
        guestMap: { bucketBytes: this.guestMap.bucketBytes, start: this.guestMap.start, selected: this.guestMap.selected },
        split: this.splitter.width,
      };
      this.vscode.setState(this.state);
    }, 100);
  }
}

function encodeBase64(bytes: Uint8Array): string {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** The clipboard API, or the older copy command where a webview does not grant it. */
async function copyText(text: string): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
    return;
  } catch {
    const ta = el('textarea', { className: 'offscreen' });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    const ok = document.execCommand('copy');
    ta.remove();
    if (!ok) throw new Error('the clipboard is not available');
  }
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => new App());
else new App();
