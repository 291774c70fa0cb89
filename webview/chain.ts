/**
 * The backing chain drawn as a chain: this image, then its backing file, then that file's, each
 * link with its name, format, virtual size and depth, and a button that opens that image in QCOW2
 * Lens (the host's 'openBacking' command → vscode.openWith). A layer that could not be opened is a
 * broken link with the reason; a backing file the settings say not to follow is shown as such.
 * Hidden for an image without a backing file.
 */
import type { BackingLayerInfo, ImageSummary } from '../src/protocol';
import { formatBytes } from '../src/engine/units';
import { clear, el } from './dom';

export interface ChainHost {
  open(path: string): void;
}

function baseName(p: string): string {
  return p.split(/[\\/]/).pop() || p;
}

export class BackingChain {
  readonly element: HTMLElement;
  private readonly list: HTMLOListElement;

  constructor(private readonly host: ChainHost) {
    this.list = el('ol', { className: 'chain-links', attrs: { 'aria-label': 'Backing chain, this image first' } });
    this.element = el('nav', { className: 'backing-chain', attrs: { 'aria-label': 'Backing chain' } },
      el('span', { className: 'pane-title', text: 'Backing chain' }), this.list);
    this.element.hidden = true;
  }

  show(summary: ImageSummary): void {
    clear(this.list);
    const chain = summary.backingChain;
    const notFollowed = summary.backingNotFollowed;
    this.element.hidden = chain.length <= 1 && !notFollowed;
    if (this.element.hidden) return;
    chain.forEach((layer, i) => {
      if (i > 0) this.list.append(el('li', { className: 'chain-arrow', text: '→', attrs: { 'aria-hidden': 'true' } }));
      this.list.append(this.link(layer));
    });
    if (notFollowed) {
      this.list.append(el('li', { className: 'chain-arrow', text: '→', attrs: { 'aria-hidden': 'true' } }),
        el('li', { className: 'chain-link chain-unfollowed', title: notFollowed }, el('span', { className: 'chain-name', text: 'backing file not followed' }), el('span', { className: 'chain-meta', text: notFollowed })));
    }
  }

  private link(layer: BackingLayerInfo): HTMLLIElement {
    const name = baseName(layer.path);
    if (layer.error) {
      const li = el('li', { className: 'chain-link chain-broken', title: layer.error },
        el('span', { className: 'chain-name', text: `✖ ${name || 'backing file'}` }),
        el('span', { className: 'chain-meta', text: `depth ${layer.depth} · broken: ${layer.error}` }));
      li.dataset.depth = String(layer.depth);
      li.setAttribute('aria-label', `Depth ${layer.depth}: ${name}, broken link: ${layer.error}`);
      return li;
    }
    const meta = `${layer.format} · ${formatBytes(layer.virtualSize)} · depth ${layer.depth}${layer.depth === 0 ? ' (this image)' : ''}`;
    const b = el('button', { className: `chain-link-button chain-depth-${Math.min(4, layer.depth)}`, title: `Open ${layer.path} in QCOW2 Lens`, attrs: { type: 'button', 'aria-label': `Open ${name} (${meta}) in QCOW2 Lens` } },
      el('span', { className: 'chain-swatch', attrs: { 'aria-hidden': 'true' } }),
      el('span', { className: 'chain-name', text: name }),
      el('span', { className: 'chain-meta', text: meta }));
    if (layer.depth === 0) b.setAttribute('aria-current', 'true');
    b.addEventListener('click', () => this.host.open(layer.path));
    const li = el('li', { className: 'chain-link' }, b);
    li.dataset.depth = String(layer.depth);
    return li;
  }
}
