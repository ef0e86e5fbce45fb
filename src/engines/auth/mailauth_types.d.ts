/**
 * The few mailauth functions SSG calls, typed loosely (results are read defensively in
 * `mail_authenticator.ts`). mailauth's own index.d.ts references Node's types
 * (`/// <reference types="node" />`), which, once any npm `@types/node` is in the lock file,
 * replaces Deno's built-in Node types and breaks type checking elsewhere (web streams); so SSG
 * imports mailauth with these declarations instead (`// @ts-types`).
 */

/** Node's dns.promises.resolve shape. */
export type Resolver = (name: string, type: string) => Promise<unknown[]>;

/** DKIM verification of a whole message (also collects the headers ARC and DMARC need). */
export function dkimVerify(input: Uint8Array, options: Record<string, unknown>): Promise<unknown>;
/** SPF for an envelope. */
export function spf(options: Record<string, unknown>): Promise<unknown>;
/** ARC chain validation from dkimVerify's `arc` data. */
export function arc(data: unknown, options: Record<string, unknown>): Promise<unknown>;
/** DKIM signing (tests). */
export function dkimSign(input: Uint8Array | string, options: Record<string, unknown>): Promise<
  { signatures: string; errors: unknown[] }
>;
/** ARC sealing (tests). */
export function sealMessage(input: Uint8Array | string, seal: Record<string, unknown>): Promise<
  Uint8Array
>;
