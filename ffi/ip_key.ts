/**
 * The map key for a client address in the worker, the flow mirror and the block list: the
 * canonical address text of `src/packet/ip_address.ts` (one implementation for the whole gateway).
 */
export { canonicalIp } from "../src/packet/ip_address.ts";
