/**
 * mailauth's DMARC evaluation (lib/dmarc/index.js), typed loosely for the reason given in
 * `mailauth_types.d.ts`.
 */

/** Evaluates DMARC from the From domain and the SPF/DKIM results. */
export function evaluateDmarc(options: Record<string, unknown>): Promise<unknown>;
