/**
 * The part of npm `dns-packet`'s API the resolver uses, typed here: `@types/dns-packet` pulls in
 * a whole `@types/node` that clashes with Deno's own Node types.
 */
import type { Buffer } from "node:buffer";

/** A question. */
export interface Question {
  type: string;
  name: string;
  class?: string;
}

/** A resource record (only the fields the resolver reads). */
export interface Answer {
  type: string;
  name: string;
  ttl?: number;
  class?: string;
  // deno-lint-ignore no-explicit-any
  data: any;
}

/** A decoded or to-be-encoded message. */
export interface Packet {
  type?: "query" | "response";
  id?: number;
  flags?: number;
  rcode?: string;
  questions?: Question[];
  answers?: Answer[];
  authorities?: Answer[];
  additionals?: Answer[];
}

/** RD flag. */
export const RECURSION_DESIRED: number;
/** TC flag. */
export const TRUNCATED_RESPONSE: number;
/** Encodes a message. */
export function encode(packet: Packet): Buffer;
/** Decodes a message; throws on malformed input. */
export function decode(buf: Uint8Array): Packet;

declare const _default: {
  RECURSION_DESIRED: number;
  TRUNCATED_RESPONSE: number;
  encode: typeof encode;
  decode: typeof decode;
};
export default _default;
