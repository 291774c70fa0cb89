/**
 * Sector-cipher worker (cipherPool.ts): decrypts or encrypts runs of 512-byte sectors in place, in
 * shared memory the caller owns, with its own SectorCipher. The key comes once, in workerData; it
 * is copied into OpenSSL's contexts and the worker's copy is wiped at once. A request names a
 * shared buffer, a byte range of it and the range's first sector number; the reply says it is done.
 * Nothing is allocated per request beyond SectorCipher's own scratch, so a worker's memory is flat.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { SectorCipher, type SectorCipherSpec } from './sectorCipher';

export interface SectorWorkerInit {
  spec: SectorCipherSpec;
  key: Uint8Array;
}
export interface SectorRequest {
  id: number;
  memory: SharedArrayBuffer;
  byteOffset: number;
  length: number;
  firstSector: number;
  encrypt: boolean;
}
export interface SectorReply {
  id: number;
  error?: string;
}

const init = workerData as SectorWorkerInit;
const key = Buffer.from(init.key.buffer, init.key.byteOffset, init.key.byteLength);
let cipher: SectorCipher;
try {
  cipher = new SectorCipher(init.spec, key);
} finally {
  key.fill(0);
}

parentPort!.on('message', (r: SectorRequest) => {
  const reply: SectorReply = { id: r.id };
  try {
    const buf = Buffer.from(r.memory, r.byteOffset, r.length);
    if (r.encrypt) cipher.encrypt(buf, r.firstSector);
    else cipher.decrypt(buf, r.firstSector);
  } catch (e) {
    // the message of a range or length check; never data or key material
    reply.error = e instanceof Error ? e.message : String(e);
  }
  parentPort!.postMessage(reply);
});
