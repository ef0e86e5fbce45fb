/**
 * Loads the native libraries once per thread (the main thread only probes; the queue Worker uses
 * them) and is the one place that turns C return codes and errno into errors.
 *
 * Caution: `Deno.dlopen` handles are per isolate; a Worker loads its own copy. Nothing here is
 * shared between threads.
 */
import { Errno, LibraryLoadError, NfqError } from "./nfq_error.ts";
import { LIBC_SYMBOLS, LIBRARY_FILES, MNL_SYMBOLS, NFQ_SYMBOLS } from "./nfq_symbols.ts";

/** The opened libraries of this thread. */
export interface Native {
  /** libnetfilter_queue's symbols (prototypes in nfq_symbols.ts). */
  readonly nfq: Deno.DynamicLibrary<typeof NFQ_SYMBOLS>["symbols"];
  /** libmnl's symbols (prototypes in nfq_symbols.ts). */
  readonly mnl: Deno.DynamicLibrary<typeof MNL_SYMBOLS>["symbols"];
  /** libc's symbols (prototypes in nfq_symbols.ts). */
  readonly libc: Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];
  /** The calling thread's errno (read right after the failing call, nothing in between). */
  errno(): number;
  /** The C library's text for an errno. */
  strerror(errno: number): string;
  /** Returns `rc` when it is >= 0; otherwise throws an NfqError naming `call` and errno. */
  check(call: string, rc: number | bigint): number;
}

let cached: Native | undefined;

function open<S extends Deno.ForeignLibraryInterface>(
  file: string,
  symbols: S,
  hint: string,
): Deno.DynamicLibrary<S> {
  try {
    return Deno.dlopen(file, symbols);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new LibraryLoadError(
        file,
        `Cannot load ${file}: FFI is not permitted (run with --allow-ffi): ${why}`,
        { cause: e },
      );
    }
    throw new LibraryLoadError(file, `Cannot load ${file}: ${hint} (${why})`, { cause: e });
  }
}

/** Opens (once per thread) libnetfilter_queue, libmnl and libc. Throws LibraryLoadError. */
export function loadNative(): Native {
  if (cached) return cached;
  const nfq = open(LIBRARY_FILES.nfq, NFQ_SYMBOLS, "install the libnetfilter-queue1 package");
  const mnl = open(LIBRARY_FILES.mnl, MNL_SYMBOLS, "install the libmnl0 package");
  const libc = open(LIBRARY_FILES.libc, LIBC_SYMBOLS, "SSG needs glibc");
  const { __errno_location, strerror } = libc.symbols;
  const errno = (): number => {
    const p = __errno_location();
    return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32(0);
  };
  const text = (n: number): string => {
    const p = strerror(n);
    return p === null ? `errno ${n}` : Deno.UnsafePointerView.getCString(p);
  };
  cached = {
    nfq: nfq.symbols,
    mnl: mnl.symbols,
    libc: libc.symbols,
    errno,
    strerror: text,
    check(call: string, rc: number | bigint): number {
      const n = Number(rc);
      if (n >= 0) return n;
      const e = errno();
      throw new NfqError(call, e, text(e));
    },
  };
  return cached;
}

/**
 * Checks that libnetfilter_queue.so.1 (and the libraries it needs) can be loaded, for the start-up
 * privilege check. Throws LibraryLoadError with an actionable message otherwise.
 */
export function probeNetfilterQueue(): void {
  loadNative();
}

export { Errno };
