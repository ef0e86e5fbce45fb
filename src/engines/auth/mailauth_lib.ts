/**
 * The mailauth functions SSG calls, behind one module that `mail_authenticator.ts` imports only
 * when a message is first checked: a gateway without an `auth:` section never loads mailauth
 * (~13 MB of heap, ~40 MB of RSS; issue 9). Typed with SSG's own declarations (see
 * `mailauth_types.d.ts` for why).
 *
 * @module
 */
// @ts-types="./mailauth_types.d.ts"
export { arc as arcVerify, dkimVerify, spf as spfVerify } from "mailauth";
// @ts-types="./mailauth_dmarc_types.d.ts"
export { evaluateDmarc } from "mailauth/lib/dmarc/index.js";
