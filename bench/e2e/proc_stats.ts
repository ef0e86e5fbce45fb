/**
 * CPU time per thread and resident memory of a running process, read from /proc (Linux only).
 * For the benchmarks: CPU milliseconds per message over all threads, the busiest thread, and RSS
 * idle / under load. Trusts /proc; a thread that ended between two readings is counted with what
 * it had at the last reading that saw it.
 *
 * @module
 */

/** CPU time of one thread, in milliseconds (user + system). */
export interface ThreadCpu {
  /** Thread id. */
  tid: number;
  /** Thread name (/proc/PID/task/TID/comm), e.g. "deno", "tokio-runtime-w". */
  name: string;
  /** User plus system CPU time in milliseconds. */
  ms: number;
  /** Of which system (kernel) time, in milliseconds. */
  sysMs: number;
}

/** Clock ticks per second of /proc's utime/stime (USER_HZ; 100 on every Linux we run on). */
const TICKS_PER_S = 100;

/** CPU time of each thread of `pid` (empty when the process is gone). */
export function threadCpu(pid: number): ThreadCpu[] {
  const out: ThreadCpu[] = [];
  let tids: string[];
  try {
    tids = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => e.name);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/task/${tid}/stat`);
      // Fields after the parenthesised name: state is field 3; utime 14, stime 15 (1-based).
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ticks = Number(rest[11]) + Number(rest[12]);
      const name = Deno.readTextFileSync(`/proc/${pid}/task/${tid}/comm`).trim();
      const sys = Number(rest[12]);
      out.push({
        tid: Number(tid),
        name,
        ms: (ticks * 1000) / TICKS_PER_S,
        sysMs: (sys * 1000) / TICKS_PER_S,
      });
    } catch { /* the thread ended */ }
  }
  return out;
}

/** Resident set size of `pid` in MiB (NaN when the process is gone). */
export function rssMiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** What a process did between `start()` and `stop()`. */
export interface CpuSpan {
  /** CPU milliseconds over all threads. */
  totalMs: number;
  /** Of which system (kernel) time. */
  totalSysMs: number;
  /** CPU milliseconds of the main thread (tid = pid). */
  mainMs: number;
  /** Of which system (kernel) time. */
  mainSysMs: number;
  /** The other threads with CPU time in the span, busiest first: "name:ms". */
  others: { name: string; ms: number }[];
  /** Highest RSS seen (sampled every 100 ms), MiB. */
  peakRssMiB: number;
}

/**
 * Samples a process while a workload runs: CPU per thread at the start and the end, RSS every
 * 100 ms in between (bounded by `stop()`; the timer is cleared there).
 */
export class ProcessSampler {
  readonly #pid: number;
  readonly #start = new Map<number, ThreadCpu>();
  readonly #last = new Map<number, ThreadCpu>();
  #peak = 0;
  #timer: ReturnType<typeof setInterval> | undefined;

  /** Starts sampling `pid`. */
  constructor(pid: number) {
    this.#pid = pid;
    for (const t of threadCpu(pid)) {
      this.#start.set(t.tid, t);
      this.#last.set(t.tid, t);
    }
    this.#peak = rssMiB(pid);
    this.#timer = setInterval(() => this.#sample(), 100);
  }

  #sample(): void {
    const r = rssMiB(this.#pid);
    if (r > this.#peak) this.#peak = r;
    for (const t of threadCpu(this.#pid)) this.#last.set(t.tid, t);
  }

  /** Stops sampling and returns the span. */
  stop(): CpuSpan {
    this.#sample();
    clearInterval(this.#timer);
    let totalMs = 0;
    let totalSysMs = 0;
    let mainMs = 0;
    let mainSysMs = 0;
    const byName = new Map<string, number>();
    for (const t of this.#last.values()) {
      const ms = t.ms - (this.#start.get(t.tid)?.ms ?? 0);
      const sysMs = t.sysMs - (this.#start.get(t.tid)?.sysMs ?? 0);
      totalMs += ms;
      totalSysMs += sysMs;
      if (t.tid === this.#pid) {
        mainMs = ms;
        mainSysMs = sysMs;
      } else if (ms > 0) byName.set(t.name, (byName.get(t.name) ?? 0) + ms);
    }
    const others = [...byName].map(([name, ms]) => ({ name, ms })).sort((a, b) => b.ms - a.ms);
    return { totalMs, totalSysMs, mainMs, mainSysMs, others, peakRssMiB: this.#peak };
  }
}
