/**
 * The decoding Worker of `decode_pool.ts`: receives a raw message and the decode request, answers
 * with the facts (and fingerprint), or with an error text. Pure: no I/O, no state, no logging.
 *
 * @module
 */
import { decodeHere, type DecodeRequest } from "./decode_pool.ts";

const scope = self as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(m: unknown): void;
};

scope.onmessage = async (e: MessageEvent) => {
  const { id, ...req } = e.data as DecodeRequest & { id: number };
  try {
    const d = await decodeHere(req);
    scope.postMessage({ id, facts: d.facts, fingerprint: d.fingerprint });
  } catch (err) {
    scope.postMessage({ id, error: err instanceof Error ? err.message : String(err) });
  }
};
