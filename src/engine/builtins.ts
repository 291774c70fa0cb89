/**
 * node:crypto and node:zlib, loaded on first use. Most commands on most images need neither (an
 * image that is not encrypted and has no compressed cluster), and loading both at start costs
 * every CLI run ~8 ms (profiled: `info` of a small image, Node 20).
 */
import type * as Crypto from 'node:crypto';
import type * as Zlib from 'node:zlib';

let crypto: typeof Crypto | undefined;
let zlib: typeof Zlib | undefined;

/* eslint-disable @typescript-eslint/no-require-imports */
export function nodeCrypto(): typeof Crypto {
  return (crypto ??= require('node:crypto') as typeof Crypto);
}

export function nodeZlib(): typeof Zlib {
  return (zlib ??= require('node:zlib') as typeof Zlib);
}
