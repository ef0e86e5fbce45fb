/**
 * Errors raised by the FFI layer. Each keeps the C call, the errno and the cause, so that the
 * message a user sees names what failed and what to do about it.
 */

/** Well-known errno values this layer reacts to (Linux, all architectures SSG runs on). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EAGAIN: 11,
  EBUSY: 16,
  EINVAL: 22,
  EMSGSIZE: 90,
  EPROTONOSUPPORT: 93,
  ENOBUFS: 105,
} as const;

/** A libc or netlink call failed; `errno` is the Linux error number. */
export class NfqError extends Error {
  /** The error class name, "NfqError". */
  override name = "NfqError";
  /** The C call or netlink request that failed, e.g. "bind" or "NFQNL_CFG_CMD_BIND". */
  readonly call: string;
  /** The Linux errno (positive). */
  readonly errno: number;
  /** Creates the error; the message is "`call` failed: `detail` (errno `errno`)". */
  constructor(call: string, errno: number, detail: string, options?: { cause?: unknown }) {
    super(`${call} failed: ${detail} (errno ${errno})`, options);
    this.call = call;
    this.errno = errno;
  }
}

/** A shared library could not be loaded (package missing, wrong architecture, no --allow-ffi). */
export class LibraryLoadError extends Error {
  /** The error class name, "LibraryLoadError". */
  override name = "LibraryLoadError";
  /** The library file name, e.g. "libnetfilter_queue.so.1". */
  readonly library: string;
  /** Creates the error for `library` with an actionable `message`. */
  constructor(library: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.library = library;
  }
}
