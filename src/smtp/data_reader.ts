/**
 * The DATA decoder: finds the one true end of the message, removes dot-stuffing, and records every
 * defect of the content, as a pure byte-level state machine fed chunk by chunk (so the result never
 * depends on how TCP segmented the stream).
 *
 * Security: untrusted bytes; this is where SMTP smuggling is decided (reliability-anchors §2.1,
 * CERT VU#302671).
 * - End of data is recognised ONLY as CR LF "." CR LF (RFC 5321 §4.1.1.4; §2.3.8: no other line
 *   terminator may be recognised). The DATA command's own CRLF counts as the first CR LF, so an
 *   empty message is "." CR LF right after DATA. `\n.\n`, `\n.\r\n`, `\r.\r`, `\r\n.\r\r\n`,
 *   `\r\n\x00.\r\n` and every other variant are content.
 * - Bare CR (CR not followed by LF) and bare LF (LF not preceded by CR) are recorded. Policy
 *   `bareLineEndings`:
 *   - "reject" (default): the session reads on to the real end, then answers 550 5.5.2 and forwards
 *     nothing. Content is no longer stored once a defect is seen.
 *   - "normalize": each bare LF and each bare CR is replaced by CR LF (so `a\rb\nc` becomes
 *     `a\r\nb\r\nc`, and `\r\r\n` becomes `\r\n\r\n`). A line that began after such a replaced
 *     ending is a line for dot-unstuffing (a leading "." followed by more text is removed) but it
 *     can never end the data: a "." line after a bare ending is kept as the content line "." (it is
 *     dot-stuffed again on the way to the server, so the server cannot read it as an end either).
 *     This is Postfix's `smtpd_forbid_bare_newline = normalize` extended to bare CR.
 * - NUL anywhere in the content is recorded; the session rejects the message with 554 5.6.0
 *   whatever the bare-line policy: NUL is not allowed in SMTP content even with 8BITMIME (RFC 6152
 *   §3 and RFC 5322 §2.3 exclude it), C-string based software downstream truncates at it, and the
 *   `\r\n\x00.\r\n` smuggling variant relies on exactly that truncation.
 * - Text lines longer than `maxTextLine` octets including CRLF (not counting the transparency dot,
 *   RFC 5321 §4.5.3.1.6) are recorded under `longLines: "reject"`, and the session rejects the
 *   message after the real end. Under "pass" (the configured default, as Postfix: its
 *   line_length_limit only splits a long line into continued records, it never refuses the
 *   message) they are content like any other; the server they go to decides.
 * - BDAT (RFC 3030, `raw: true`): the chunks' bytes are the message exactly — no dot-unstuffing,
 *   no end-of-data marker (a "." line, even CRLF.CRLF, is content); the end is `finish()` after
 *   the LAST chunk. Line-ending, NUL, line-length, size and memory rules are the same as for DATA.
 * - More than `maxMessageBytes` octets of (unstuffed) content is recorded as `overSize`; counting
 *   goes on to the real end but nothing past the limit is stored (RFC 1870 §6: clients may lie in
 *   SIZE=, so the actual bytes are counted).
 */

/** The options of one DATA decoding. */
export interface DataReaderOptions {
  /** Largest content in octets (after unstuffing, CRLF line endings). */
  maxMessageBytes: number;
  /** Longest text line in octets including CRLF. */
  maxTextLine: number;
  /** What bare CR / bare LF mean (see the module comment). */
  bareLineEndings: "reject" | "normalize";
  /** Shared bound on stored bytes (see memory_budget.ts); absent: unbounded but for the size. */
  budget?: MemoryBudget;
  /** Lines over `maxTextLine`: "reject" (default here) records a defect, "pass" keeps them. */
  longLines?: "pass" | "reject";
  /** BDAT content: no dot-stuffing and no end marker; the caller ends it with `finish()`. */
  raw?: boolean;
}

/** Defects found in a message's content; any of them stops storage except normalised endings. */
export interface DataDefects {
  /** A bare LF was seen. */
  bareLf: boolean;
  /** A bare CR was seen. */
  bareCr: boolean;
  /** A NUL byte was seen. */
  nul: boolean;
  /** A text line exceeded `maxTextLine`. */
  lineTooLong: boolean;
  /** The content exceeded `maxMessageBytes`. */
  overSize: boolean;
  /** The shared in-flight memory budget was exhausted: a temporary failure (452 4.3.1). */
  noMemory: boolean;
}

import type { MemoryBudget } from "./memory_budget.ts";

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const NUL = 0x00;

const enum S {
  /** At the start of a line that followed a real CR LF: a "." here may end the data. */
  StartStrict,
  /** At the start of a line that followed a bare ending: a "." is unstuffed but never ends. */
  StartSoft,
  /** Saw "." at a strict line start. */
  Dot,
  /** Saw "." CR at a strict line start. */
  DotCr,
  /** Saw "." at a soft line start. */
  DotSoft,
  /** Inside a line. */
  InLine,
  /** Saw CR inside a line. */
  Cr,
  /** The end of data was seen. */
  Done,
}

const CRLF_BYTES = new Uint8Array([CR, LF]);
const DOT_BYTES = new Uint8Array([DOT]);

/** Decodes one message's DATA from its chunks. */
export class DataReader {
  #opts: DataReaderOptions;
  #state: S = S.StartStrict;
  #out: Uint8Array;
  #outLen = 0;
  #size = 0;
  #lineLen = 0;
  #store = true;
  #defects: DataDefects = {
    bareLf: false,
    bareCr: false,
    nul: false,
    lineTooLong: false,
    overSize: false,
    noMemory: false,
  };
  #received = 0;
  #reserved = 0;

  /** Starts decoding right after the DATA command's CRLF. */
  constructor(opts: DataReaderOptions) {
    this.#opts = opts;
    // Most mail fits in 16 KiB (a larger message grows by doubling, one copy each time); a 64 KiB
    // buffer per message was the largest allocation on the path and fed the GC (issue 9).
    const initial = Math.min(16 * 1024, Math.max(16, opts.maxMessageBytes));
    if (!this.#reserve(initial)) {
      this.#out = new Uint8Array(0);
      return;
    }
    this.#out = new Uint8Array(initial);
  }

  /** Reserves `n` more bytes from the budget; on failure records `noMemory` and stops storing. */
  #reserve(n: number): boolean {
    const b = this.#opts.budget;
    if (!b || b.tryReserve(n)) {
      this.#reserved += n;
      return true;
    }
    this.#defects.noMemory = true;
    this.#store = false;
    return false;
  }

  /**
   * Gives the stored bytes back to the budget. Call once the message is no longer needed (it is
   * safe to call twice; `message()` must not be used afterwards).
   */
  dispose(): void {
    this.#opts.budget?.release(this.#reserved);
    this.#reserved = 0;
    this.#out = new Uint8Array(0);
    this.#outLen = 0;
  }

  /** Whether CR LF "." CR LF has been seen. */
  get done(): boolean {
    return this.#state === S.Done;
  }

  /** Content octets counted so far (after unstuffing and normalisation, including unstored ones). */
  get size(): number {
    return this.#size;
  }

  /** Raw octets consumed so far, terminator included. */
  get received(): number {
    return this.#received;
  }

  /** What was wrong with the content. */
  get defects(): Readonly<DataDefects> {
    return this.#defects;
  }

  /** Whether the message must be refused: any defect, except bare endings under "normalize". */
  get rejected(): boolean {
    const d = this.#defects;
    const bare = (d.bareCr || d.bareLf) && this.#opts.bareLineEndings === "reject";
    return bare || d.nul || d.lineTooLong || d.overSize || d.noMemory;
  }

  /**
   * The decoded content (CRLF line endings, unstuffed); empty when `rejected`. Caution: lifetime —
   * a view of the reader's buffer (no copy of a possibly large message); call after `done`.
   */
  message(): Uint8Array {
    return this.rejected ? new Uint8Array(0) : this.#out.subarray(0, this.#outLen);
  }

  /**
   * Feeds the next chunk; returns how many of its bytes belong to the DATA (all of them unless the
   * end was found, in which case the rest are the client's next commands).
   */
  push(chunk: Uint8Array): number {
    let i = 0;
    const n = chunk.length;
    while (i < n && this.#state !== S.Done) {
      const b = chunk[i];
      switch (this.#state) {
        case S.StartStrict:
          if (b === DOT && !this.#opts.raw) {
            this.#state = S.Dot;
            i++;
            continue;
          }
          this.#state = S.InLine;
          continue; // re-examine b inside the line
        case S.StartSoft:
          if (b === DOT && !this.#opts.raw) {
            this.#state = S.DotSoft;
            i++;
            continue;
          }
          this.#state = S.InLine;
          continue;
        case S.Dot:
          if (b === CR) {
            this.#state = S.DotCr;
            i++;
            continue;
          }
          if (b === LF) {
            // "." then a bare LF: the line is ".", ended by a bare LF; never an end of data.
            this.#content(DOT_BYTES);
            this.#state = S.InLine;
            continue;
          }
          // RFC 5321 §4.5.2: a leading "." followed by other characters is deleted.
          this.#state = S.InLine;
          continue;
        case S.DotCr:
          if (b === LF) {
            this.#state = S.Done;
            i++;
            continue;
          }
          // "." CR then something else: the line is "." ended by a bare CR.
          this.#content(DOT_BYTES);
          this.#bareCr();
          continue; // b starts the next (soft) line
        case S.DotSoft:
          if (b === CR || b === LF) this.#content(DOT_BYTES); // a lone "." line stays content
          this.#state = S.InLine;
          continue;
        case S.Cr:
          if (b === LF) {
            this.#endLine();
            this.#state = S.StartStrict;
            i++;
            continue;
          }
          this.#bareCr();
          continue;
        case S.InLine: {
          // Fast path: copy the run of ordinary bytes up to the next CR, LF or NUL.
          let j = i;
          while (j < n) {
            const c = chunk[j];
            if (c === CR || c === LF || c === NUL) break;
            j++;
          }
          if (j > i) {
            this.#content(chunk.subarray(i, j));
            i = j;
            continue;
          }
          if (b === CR) {
            this.#state = S.Cr;
          } else if (b === LF) {
            this.#defects.bareLf = true;
            this.#bareEnding();
          } else {
            this.#defects.nul = true;
            this.#store = false;
            this.#content(chunk.subarray(i, i + 1));
          }
          i++;
          continue;
        }
      }
    }
    this.#received += i;
    return i;
  }

  /**
   * Ends a BDAT (`raw`) message after its LAST chunk: a trailing bare CR is recorded like any
   * other; a last line without CRLF stays as it is (the relay adds CRLF before its own end).
   */
  finish(): void {
    if (this.#state === S.Cr) this.#bareCr();
    this.#state = S.Done;
  }

  #bareCr(): void {
    this.#defects.bareCr = true;
    this.#bareEnding();
  }

  /** A bare CR or LF ended the line: under "normalize" it becomes CR LF; the next line is soft. */
  #bareEnding(): void {
    if (this.#opts.bareLineEndings === "reject") this.#store = false;
    this.#endLine();
    this.#state = S.StartSoft;
  }

  #endLine(): void {
    this.#lineLen = 0;
    this.#emit(CRLF_BYTES);
  }

  #content(bytes: Uint8Array): void {
    this.#lineLen += bytes.length;
    if (
      this.#lineLen + 2 > this.#opts.maxTextLine && !this.#defects.lineTooLong &&
      this.#opts.longLines !== "pass"
    ) {
      this.#defects.lineTooLong = true;
      this.#store = false;
    }
    this.#emit(bytes);
  }

  #emit(bytes: Uint8Array): void {
    this.#size += bytes.length;
    if (this.#size > this.#opts.maxMessageBytes && !this.#defects.overSize) {
      this.#defects.overSize = true;
      this.#store = false;
    }
    if (!this.#store) return;
    const need = this.#outLen + bytes.length;
    if (need > this.#out.length) {
      const size = Math.min(Math.max(need, this.#out.length * 2), this.#opts.maxMessageBytes);
      if (!this.#reserve(size - this.#out.length)) return;
      const grown = new Uint8Array(size);
      grown.set(this.#out.subarray(0, this.#outLen));
      this.#out = grown;
    }
    this.#out.set(bytes, this.#outLen);
    this.#outLen = need;
  }
}
