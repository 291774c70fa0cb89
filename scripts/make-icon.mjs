// Draws media/icon.png (128×128): a cluster map in the editor's role colours on a dark tile.
// Run: node scripts/make-icon.mjs  (the PNG is committed; this documents where it came from)
import fs from 'node:fs';
import zlib from 'node:zlib';

const W = 128, H = 128;
const px = Buffer.alloc(W * H * 4);
const set = (x, y, [r, g, b, a = 255]) => { const i = (y * W + x) * 4; px[i] = r; px[i + 1] = g; px[i + 2] = b; px[i + 3] = a; };
const rounded = (x, y, x0, y0, x1, y1, rad) => {
  const cx = Math.min(Math.max(x, x0 + rad), x1 - rad), cy = Math.min(Math.max(y, y0 + rad), y1 - rad);
  return (x - cx) ** 2 + (y - cy) ** 2 <= rad * rad;
};
const roles = { h: [155, 89, 182], l: [230, 126, 34], m: [241, 196, 15], r: [39, 174, 96], d: [52, 152, 219], f: [60, 66, 82], k: [231, 76, 60] };
const map = ['hllrrd', 'mddddd', 'dddfdd', 'ddmddd', 'dfdddk', 'dddddd'];
for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
  if (!rounded(x, y, 0, 0, W - 1, H - 1, 22)) continue;
  set(x, y, [30, 33, 41]);
  const gx = Math.floor((x - 16) / 16), gy = Math.floor((y - 16) / 16);
  if (gx >= 0 && gx < 6 && gy >= 0 && gy < 6 && (x - 16) % 16 < 13 && (y - 16) % 16 < 13) set(x, y, roles[map[gy][gx]]);
}
const crcTable = Array.from({ length: 256 }, (_, n) => { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; return c >>> 0; });
const crc32 = buf => { let c = 0xffffffff; for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; };
const chunk = (type, data) => {
  const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
};
const ihdr = Buffer.alloc(13); ihdr.writeUInt32BE(W, 0); ihdr.writeUInt32BE(H, 4); ihdr[8] = 8; ihdr[9] = 6;
const raw = Buffer.concat(Array.from({ length: H }, (_, y) => Buffer.concat([Buffer.from([0]), px.subarray(y * W * 4, (y + 1) * W * 4)])));
const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw, { level: 9 })), chunk('IEND', Buffer.alloc(0))]);
fs.writeFileSync(new URL('../media/icon.png', import.meta.url), png);
console.log(`media/icon.png: ${png.length} bytes`);
