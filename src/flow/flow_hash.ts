/**
 * The keyed hash of a client address and port, shared by FlowTable and SynCache: Murmur3
 * (32-bit) mixing steps over the address words, all in int32 arithmetic, no allocation.
 *
 * Security: client addresses and ports are chosen by strangers (an IPv6 client controls 64
 * address bits), so every table passes its own random seed; an attacker cannot precompute
 * colliding keys to turn lookups into long probe runs.
 */

function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function finish(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** The big-endian 32-bit word at `b[o..o+4)`, as an int32. */
export function word(b: Uint8Array, o: number): number {
  return (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
}

/** Hash of the client address of `family` at `b[o..]` and `port`, keyed by `seed`. */
export function hashClient(seed: number, family: 4 | 6, b: Uint8Array, o: number, port: number) {
  let h = seed;
  h = mix(h, word(b, o));
  if (family === 6) {
    h = mix(h, word(b, o + 4));
    h = mix(h, word(b, o + 8));
    h = mix(h, word(b, o + 12));
  }
  h = mix(h, port | (family << 16));
  return finish(h);
}

/** A random 32-bit seed for a new table. */
export function randomSeed(): number {
  return crypto.getRandomValues(new Int32Array(1))[0];
}
