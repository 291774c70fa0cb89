/** The data inspector: the selected byte(s) decoded as integers and floats of every width, both byte orders, as UTF-8, with the selection's length. */
import { utf8Preview } from './copyFormat';
import { clear, el, hex } from './dom';

export class DataInspector {
  readonly element: HTMLElement;
  private readonly body: HTMLTableSectionElement;
  private readonly caption: HTMLElement;

  constructor() {
    this.caption = el('div', { className: 'pane-title', text: 'Inspector' });
    this.body = el('tbody');
    this.element = el('div', { className: 'inspector', attrs: { role: 'region', 'aria-label': 'Data inspector' } },
      this.caption,
      el('table', { className: 'inspector-table' }, el('thead', {}, el('tr', {}, el('th', { text: 'Type' }), el('th', { text: 'Little-endian' }), el('th', { text: 'Big-endian' }))), this.body));
    this.show(undefined, new Uint8Array());
  }

  show(offset: number | undefined, bytes: Uint8Array, space = 'host', length = 1): void {
    clear(this.body);
    this.caption.textContent = offset === undefined ? 'Inspector' : `Inspector · ${space} ${hex(offset)}${length > 1 ? ` · ${length} bytes selected` : ''}`;
    if (offset === undefined || bytes.length === 0) {
      this.body.append(el('tr', {}, el('td', { className: 'empty', text: 'Select a byte to decode it.', attrs: { colspan: '3' } })));
      return;
    }
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const row = (type: string, le: string, be: string) => {
      const tr = el('tr', {}, el('th', { text: type, attrs: { scope: 'row' } }), el('td', { text: le }), el('td', { text: be }));
      tr.dataset.type = type;
      this.body.append(tr);
    };
    const u8 = bytes[0];
    row('u8', String(u8), '');
    row('i8', String((u8 << 24) >> 24), '');
    row('bits', `0x${u8.toString(16).padStart(2, '0')}`, `0b${u8.toString(2).padStart(8, '0')}`);
    const n = bytes.length;
    const na = '—';
    row('u16', n >= 2 ? String(dv.getUint16(0, true)) : na, n >= 2 ? String(dv.getUint16(0, false)) : na);
    row('i16', n >= 2 ? String(dv.getInt16(0, true)) : na, n >= 2 ? String(dv.getInt16(0, false)) : na);
    row('u32', n >= 4 ? String(dv.getUint32(0, true)) : na, n >= 4 ? String(dv.getUint32(0, false)) : na);
    row('i32', n >= 4 ? String(dv.getInt32(0, true)) : na, n >= 4 ? String(dv.getInt32(0, false)) : na);
    row('u64', n >= 8 ? dv.getBigUint64(0, true).toString() : na, n >= 8 ? dv.getBigUint64(0, false).toString() : na);
    row('i64', n >= 8 ? dv.getBigInt64(0, true).toString() : na, n >= 8 ? dv.getBigInt64(0, false).toString() : na);
    row('u64 hex', n >= 8 ? '0x' + dv.getBigUint64(0, true).toString(16) : na, n >= 8 ? '0x' + dv.getBigUint64(0, false).toString(16) : na);
    row('f32', n >= 4 ? String(dv.getFloat32(0, true)) : na, n >= 4 ? String(dv.getFloat32(0, false)) : na);
    row('f64', n >= 8 ? String(dv.getFloat64(0, true)) : na, n >= 8 ? String(dv.getFloat64(0, false)) : na);
    row('UTF-8', utf8Preview(bytes, length), '');
    row('selection', length === 1 ? '1 byte' : `${length} bytes (${hex(length)})`, offset !== undefined ? `${hex(offset)} … ${hex(offset + length - 1)}` : '');
  }
}
