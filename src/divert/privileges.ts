/**
 * Start-up check: SSG refuses to start, with a message that says what to do, when it cannot
 * divert packets — without CAP_NET_ADMIN (binding an NFQUEUE and changing firewall rules need it)
 * or without libnetfilter_queue.
 *
 * `src/` never imports `ffi/`: the library probe lives in `ffi/native.ts`
 * (`probeNetfilterQueue`) and main passes it in.
 */

/** Linux capability number of CAP_NET_ADMIN (linux/capability.h). */
export const CAP_NET_ADMIN = 12;

/** SSG lacks what packet diversion needs. */
export class PrivilegeError extends Error {
  /** The error class name, "PrivilegeError". */
  override name = "PrivilegeError";
  /** Creates the error; `message` says what to do, `options.cause` is kept as `cause`. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The effective capability set from the text of /proc/self/status ("CapEff:\t000001ffffffffff"). */
export function parseCapEff(status: string): bigint | undefined {
  const m = /^CapEff:\s*([0-9a-fA-F]{1,16})\s*$/m.exec(status);
  return m ? BigInt("0x" + m[1]) : undefined;
}

/** Whether capability number `cap` is in the effective set described by `status`. */
export function hasCapability(status: string, cap: number): boolean {
  const eff = parseCapEff(status);
  return eff !== undefined && ((eff >> BigInt(cap)) & 1n) === 1n;
}

/** Options of checkPrivileges. */
export interface PrivilegeCheckOptions {
  /** Loads libnetfilter_queue; throws when it cannot (main passes ffi's `probeNetfilterQueue`). */
  probeLibrary?: () => void;
  /** The text of /proc/self/status (default: read it). */
  status?: string;
}

/**
 * Checks what packet diversion needs. Returns undefined when all is well, else the problem as one
 * sentence that says what to do (main prints it and exits non-zero). See `assertPrivileges` for
 * the throwing form.
 */
export function checkPrivileges(opts: PrivilegeCheckOptions = {}): string | undefined {
  try {
    assertPrivileges(opts);
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/** Throws PrivilegeError when CAP_NET_ADMIN is missing or the library cannot be loaded. */
export function assertPrivileges(opts: PrivilegeCheckOptions = {}): void {
  let status = opts.status;
  if (status === undefined) {
    try {
      status = Deno.readTextFileSync("/proc/self/status");
    } catch (e) {
      throw new PrivilegeError(
        "Cannot read /proc/self/status to check for CAP_NET_ADMIN: SSG runs on Linux with /proc mounted",
        { cause: e },
      );
    }
  }
  if (!hasCapability(status, CAP_NET_ADMIN)) {
    throw new PrivilegeError(
      "SSG needs CAP_NET_ADMIN to divert packets: run it as root or grant cap_net_admin " +
        "(e.g. setcap cap_net_admin+ep, or AmbientCapabilities=CAP_NET_ADMIN in a systemd unit)",
    );
  }
  if (opts.probeLibrary) {
    try {
      opts.probeLibrary();
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      throw new PrivilegeError(
        why.startsWith("Cannot load") ? why : `Cannot load libnetfilter_queue.so.1: ${why}`,
        { cause: e },
      );
    }
  }
}
