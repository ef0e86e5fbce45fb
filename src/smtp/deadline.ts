/**
 * Waiting with a bound: every wait on a peer in `src/smtp/` goes through `raceDeadline`, so that no
 * read, write or connect can hang a session past its timeout or past the shutdown signal.
 *
 * The timer (or coarse-clock entry) and the abort listener are always removed when the race
 * settles, so a finished session leaves nothing scheduled behind it (Deno's test sanitizers
 * check this).
 */

/** How a bounded wait ended when the awaited promise did not win. */
export type WaitFailure = "timeout" | "aborted";

/** The outcome of `raceDeadline`. */
export type RaceResult<T> = { ok: true; value: T } | { ok: false; why: WaitFailure };

/**
 * Waits for `promise` at most `ms` milliseconds and not past `signal`'s abort.
 *
 * `ms` may be `Infinity` (no timer). `ms <= 0` waits one event-loop turn instead of a timer, so an
 * already-settled promise wins and so does a socket read whose bytes are already in the kernel
 * (its op completes in that turn). Why not `setTimeout(0)`: measured on Deno 2.9, a 0 ms timer
 * fires after ~2.2 ms (1 ms timer granularity, rounded up), which made every session greeting
 * (`pregreetMs` 0) that much late; a MessageChannel turn takes ~0.05 ms.
 * The promise must not reject (callers normalise first).
 * Caution: lifetime — the losing promise keeps running; callers either reuse it or close its source.
 */
export function raceDeadline<T>(
  promise: Promise<T>,
  ms: number,
  signal?: AbortSignal,
): Promise<RaceResult<T>> {
  if (signal?.aborted) return Promise.resolve({ ok: false, why: "aborted" });
  return new Promise((resolve) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let coarse: CoarseEntry | undefined;
    const onAbort = () => finish({ ok: false, why: "aborted" });
    const finish = (r: RaceResult<T>) => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      if (coarse !== undefined) removeCoarse(coarse);
      coarse = undefined;
      signal?.removeEventListener("abort", onAbort);
      resolve(r);
    };
    if (ms <= 0) {
      nextTurn().then(() => finish({ ok: false, why: "timeout" }));
    } else if (ms >= COARSE_MIN_MS && Number.isFinite(ms)) {
      coarse = addCoarse(ms, () => finish({ ok: false, why: "timeout" }));
    } else if (Number.isFinite(ms)) {
      timer = setTimeout(() => finish({ ok: false, why: "timeout" }), ms);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    promise.then((value) => finish({ ok: true, value }));
  });
}

/**
 * Waits of at least this long (command, reply and data timeouts: seconds to minutes) share one
 * coarse clock instead of a timer each: a session makes ~20 bounded waits per message, and a
 * timer set and cleared for each cost ~0.1 ms of main-thread time per message under load
 * (issue 9, V8 profile). Such a wait ends at most `COARSE_TICK_MS` late.
 */
export const COARSE_MIN_MS = 1000;
/** Period of the coarse clock while any coarse wait is pending. */
export const COARSE_TICK_MS = 100;

interface CoarseEntry {
  at: number;
  fire: () => void;
}

const coarseWaits = new Set<CoarseEntry>();
let coarseTicker: ReturnType<typeof setInterval> | undefined;

function addCoarse(ms: number, fire: () => void): CoarseEntry {
  const e = { at: performance.now() + ms, fire };
  coarseWaits.add(e);
  // Not unref'd: like the timer it replaces, a pending wait keeps the process alive.
  coarseTicker ??= setInterval(tickCoarse, COARSE_TICK_MS);
  return e;
}

function removeCoarse(e: CoarseEntry): void {
  coarseWaits.delete(e);
  if (coarseWaits.size === 0 && coarseTicker !== undefined) {
    clearInterval(coarseTicker);
    coarseTicker = undefined;
  }
}

/** Fires the waits that are due; each one's `finish` takes it out of the set (`removeCoarse`). */
function tickCoarse(): void {
  const now = performance.now();
  for (const e of coarseWaits) if (e.at <= now) e.fire();
}

/** Resolves after one turn of the event loop (a MessageChannel message; the ports are closed). */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      channel.port2.close();
      resolve();
    };
    channel.port2.postMessage(null);
  });
}

/** Converts a timeout in seconds (from the configuration) to milliseconds. */
export function secondsToMs(seconds: number): number {
  return Number.isFinite(seconds) ? Math.max(0, seconds * 1000) : Infinity;
}
