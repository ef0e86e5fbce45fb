/**
 * The start-up library probe main calls next to `checkPrivileges()` (src/ never imports ffi/):
 * can libnetfilter_queue.so.1 and the libraries it needs be loaded here?
 */
import { probeNetfilterQueue } from "./native.ts";

/**
 * Returns undefined when libnetfilter_queue.so.1 (and libmnl, libc) load, else the problem with
 * its fix, e.g. "Cannot load libnetfilter_queue.so.1: install the libnetfilter-queue1 package (…)".
 */
export function probeLibrary(): string | undefined {
  try {
    probeNetfilterQueue();
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}
