/**
 * Sender authentication of one message with npm `mailauth` (Andris Reinman's, the library
 * behind WildDuck and EmailEngine): SPF (RFC 7208) for the client IP, HELO and MAIL FROM; DKIM
 * (RFC 6376) for every signature; DMARC (RFC 7489 / 9989) for the From domain, from the SPF and
 * DKIM results; ARC (RFC 8617) for the chain of seals. BIMI is off (it fetches logos over HTTP).
 *
 * SPF needs only the envelope, so it starts at MAIL FROM (`startSpf`), and its DNS answers arrive
 * while the client sends recipients and data; DKIM, ARC and DMARC need the message and start at
 * the end of data (`verify`), concurrently with SSG's own decoding.
 *
 * Trusts: the DNS resolver it is given (answers are data: mailauth parses them), mailauth's
 * parsers for the message headers. Limits: each phase has a deadline (`timeoutMs`, an
 * AbortSignal on every query); a check not finished by then is `temperror` ("timed out"), and so
 * is one whose DNS failed — never "none" or "pass". At most `MAX_QUERIES` DNS questions per
 * phase. Never throws: a mailauth exception is a `temperror` of the checks it was computing.
 * Rejected: mailauth's `authenticate()` as one call (it would start SPF only after DATA, and it
 * cannot leave SPF out); an own DKIM/SPF implementation (these RFCs are full of traps that a
 * well-kept library has already met).
 */
import { Buffer } from "node:buffer";
import { isIP } from "node:net";
import { type AuthDns, type MailauthResolver, mailauthResolver } from "./mailauth_resolver.ts";

import { type AuthCheck } from "./auth_values.ts";

let lib: Promise<typeof import("./mailauth_lib.ts")> | undefined;
/** mailauth, loaded at the first check (see `mailauth_lib.ts`). */
function mailauth(): Promise<typeof import("./mailauth_lib.ts")> {
  return lib ??= import("./mailauth_lib.ts");
}

export { type AuthCheck };

/** The result of the SPF check. */
export interface SpfOutcome {
  /** pass, fail, softfail, neutral, none, temperror, permerror. */
  result: string;
  /** The domain checked: of MAIL FROM, or of HELO for the null sender. */
  domain: string;
  /** Why (mailauth's comment, or the failure). */
  comment?: string;
  /** The Authentication-Results method entry ("spf=pass (...) smtp.mailfrom=..."). */
  entry: string;
}

/** One DKIM signature's result ("none" with no domain when the message is not signed). */
export interface DkimOutcome {
  /** pass, fail, neutral, none, policy, temperror, permerror. */
  result: string;
  /** The signing domain (d=), lower case; "" when not signed. */
  domain: string;
  /** The selector (s=). */
  selector?: string;
  /** Whether the signing domain aligns with the From domain (DMARC). */
  aligned?: boolean;
  /** Why. */
  comment?: string;
  /** The Authentication-Results method entry. */
  entry: string;
}

/** The DMARC result for the From domain. */
export interface DmarcOutcome {
  /** pass, fail, none, temperror, permerror. */
  result: string;
  /** The From domain. */
  domain: string;
  /** The policy the domain asks for this message (none, quarantine, reject), when published. */
  policy?: string;
  /** Why. */
  comment?: string;
  /** The Authentication-Results method entry. */
  entry: string;
}

/** The ARC chain's result. */
export interface ArcOutcome {
  /** pass, fail, none, temperror, permerror. */
  result: string;
  /** Why. */
  comment?: string;
  /** The Authentication-Results method entry. */
  entry: string;
}

/** Everything one message's verification found (a check that is off is absent). */
export interface AuthResults {
  /** SPF of the envelope. */
  spf?: SpfOutcome;
  /** One entry per DKIM signature; one "none" entry when the message is not signed. */
  dkim?: DkimOutcome[];
  /** DMARC of the From domain. */
  dmarc?: DmarcOutcome;
  /** ARC chain. */
  arc?: ArcOutcome;
  /** The Authentication-Results field value (RFC 8601 §2.2), our authserv-id first, unfolded. */
  header: string;
  /** Milliseconds the end-of-data part took (SPF ran earlier). */
  ms: number;
}

/** The envelope facts SPF needs. */
export interface AuthEnvelope {
  /** The client's address. */
  ip: string;
  /** HELO/EHLO argument. */
  helo: string;
  /** MAIL FROM address ("" for the null sender: SPF then checks the HELO identity). */
  mailFrom: string;
}

/** How the authenticator runs. */
export interface AuthenticatorOptions {
  /** Our authserv-id (RFC 8601 §2.5), also the host name in mailauth's comments. */
  authservId: string;
  /** Which checks run. */
  checks: readonly AuthCheck[];
  /** Deadline of each phase (SPF; the rest at end of data), in milliseconds. */
  timeoutMs: number;
  /** The DNS resolver. */
  dns: AuthDns;
  /** Smallest RSA key accepted for DKIM/ARC (default 1024, RFC 8301). */
  minKeyBits?: number;
}

const TEMP = "temperror";

/** Runs SPF, DKIM, DMARC and ARC for messages; safe to share between sessions. */
export class MailAuthenticator {
  readonly #o: AuthenticatorOptions;
  readonly #on: ReadonlySet<AuthCheck>;

  /** Holds the options; does no I/O. */
  constructor(options: AuthenticatorOptions) {
    this.#o = options;
    this.#on = new Set(options.checks);
    // Rules use it: load mailauth now, not within the first message's time budget.
    mailauth().catch(() => {/* reported by the first check */});
  }

  /** Our authserv-id. */
  get authservId(): string {
    return this.#o.authservId;
  }

  /** The checks that run. */
  get checks(): readonly AuthCheck[] {
    return [...this.#on];
  }

  /** Starts SPF (undefined when SPF is off); the promise never rejects and is time-bounded. */
  startSpf(env: AuthEnvelope): Promise<SpfOutcome> | undefined {
    if (!this.#on.has("spf")) return undefined;
    return this.#bounded((signal) => this.#spf(env, signal), (why) => spfFailed(env, why));
  }

  /**
   * Verifies the message: DKIM, ARC and DMARC now, SPF from `early` (started at MAIL FROM) or
   * now. Never rejects; bounded by `timeoutMs` (plus the SPF already under way).
   */
  async verify(
    message: Uint8Array,
    env: AuthEnvelope,
    early?: Promise<SpfOutcome>,
  ): Promise<AuthResults> {
    const t0 = performance.now();
    const spfP = early ?? this.startSpf(env);
    const needMessage = this.#on.has("dkim") || this.#on.has("dmarc") || this.#on.has("arc");
    const partial: Omit<AuthResults, "header" | "ms"> = {};
    const done = !needMessage ? Promise.resolve() : this.#bounded(
      (signal) => this.#messageChecks(message, env, spfP, partial, signal),
      () => undefined,
    );
    const spf = spfP ? await spfP : undefined;
    await done;
    const out: Omit<AuthResults, "header" | "ms"> = {};
    if (spf) out.spf = spf;
    const late = "timed out";
    if (this.#on.has("dkim") || this.#on.has("dmarc")) {
      out.dkim = partial.dkim ?? [{
        result: TEMP,
        domain: "",
        comment: late,
        entry: `dkim=${TEMP} (${late})`,
      }];
    }
    if (!this.#on.has("dkim") && out.dkim) {
      // DKIM ran for DMARC only: its results are not reported as a check of their own.
      delete out.dkim;
    }
    if (this.#on.has("arc")) {
      out.arc = partial.arc ?? { result: TEMP, comment: late, entry: `arc=${TEMP} (${late})` };
    }
    if (this.#on.has("dmarc")) {
      out.dmarc = partial.dmarc ??
        { result: TEMP, domain: "", comment: late, entry: `dmarc=${TEMP} (${late})` };
    }
    const entries = [
      ...(this.#on.has("dkim") ? (partial.dkim ?? out.dkim ?? []).map((d) => d.entry) : []),
      ...(out.spf ? [out.spf.entry] : []),
      ...(out.arc ? [out.arc.entry] : []),
      ...(out.dmarc ? [out.dmarc.entry] : []),
    ];
    return {
      ...out,
      header: [this.#o.authservId, ...entries.map(oneLine)].join("; "),
      ms: performance.now() - t0,
    };
  }

  /** Runs `work` with a deadline: past it the signal aborts and `late(why)` is the result. */
  async #bounded<T>(
    work: (signal: AbortSignal) => Promise<T>,
    late: (why: string) => T,
  ): Promise<T> {
    const ac = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const why = `timed out after ${this.#o.timeoutMs} ms`;
    const deadline = new Promise<T>((resolve) => {
      timer = setTimeout(() => {
        ac.abort(new Error(why));
        resolve(late(why));
      }, this.#o.timeoutMs);
    });
    try {
      return await Promise.race([
        work(ac.signal).catch((e) => late(`mailauth failed: ${errorText(e)}`)),
        deadline,
      ]);
    } finally {
      clearTimeout(timer);
      ac.abort();
    }
  }

  async #spf(env: AuthEnvelope, signal: AbortSignal): Promise<SpfOutcome> {
    // RFC 7208 §2.3: an address literal HELO is checked as the address, bracketed as in SMTP.
    const helo = env.helo === ""
      ? `[${env.ip}]`
      : /^\[.*\]$/.test(env.helo)
      ? env.helo
      : isIP(env.helo)
      ? `[${env.helo}]`
      : env.helo;
    const { spfVerify } = await mailauth();
    const r = await spfVerify({
      sender: env.mailFrom || undefined,
      ip: env.ip,
      helo,
      mta: this.#o.authservId,
      resolver: this.#resolver(signal),
      maxElapsedTime: this.#o.timeoutMs,
    } as Record<string, unknown>) as unknown as MailauthSpf;
    const result = r?.status?.result ?? TEMP;
    return {
      result: String(result),
      domain: String(r?.domain ?? ""),
      comment: r?.status?.comment,
      entry: String(r?.info ?? `spf=${result}`),
    };
  }

  async #messageChecks(
    message: Uint8Array,
    env: AuthEnvelope,
    spfP: Promise<SpfOutcome> | undefined,
    out: Omit<AuthResults, "header" | "ms">,
    signal: AbortSignal,
  ): Promise<void> {
    const resolver = this.#resolver(signal);
    const minBitLength = this.#o.minKeyBits ?? 1024;
    // mailauth reads a Buffer (or a stream); the Node Buffer shares the bytes, no copy.
    const input = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
    const { dkimVerify, arcVerify, evaluateDmarc } = await mailauth();
    const dkim = await dkimVerify(input, {
      resolver,
      sender: env.mailFrom || undefined,
      minBitLength,
    } as Record<string, unknown>) as unknown as MailauthDkim;
    out.dkim = (dkim.results ?? []).map((r) => ({
      result: String(r.status?.result ?? TEMP),
      domain: String(r.signingDomain ?? "").toLowerCase(),
      selector: r.selector,
      aligned: r.status?.aligned ? true : undefined,
      comment: r.status?.comment,
      entry: String(r.info ?? `dkim=${r.status?.result ?? TEMP}`),
    }));
    if (out.dkim.length === 0) {
      out.dkim.push({
        result: "none",
        domain: "",
        comment: "message not signed",
        entry: "dkim=none (message not signed)",
      });
    }
    let arcResult: MailauthArc | undefined;
    if (this.#on.has("arc") || this.#on.has("dmarc")) {
      arcResult = await arcVerify(dkim.arc, {
        resolver,
        minBitLength,
        ip: env.ip,
      } as Record<string, unknown>) as unknown as MailauthArc;
      if (this.#on.has("arc")) {
        const result = String(arcResult?.status?.result ?? TEMP);
        out.arc = {
          result,
          comment: arcResult?.status?.comment,
          entry: String(arcResult?.info ?? `arc=${result}`),
        };
      }
    }
    if (!this.#on.has("dmarc")) return;
    const spf = spfP ? await spfP : undefined;
    if (!dkim.headerFrom || (Array.isArray(dkim.headerFrom) && dkim.headerFrom.length === 0)) {
      out.dmarc = { result: "none", domain: "", comment: "no From address", entry: "dmarc=none" };
      return;
    }
    const passing = (dkim.results ?? []).filter((r) => r.status?.result === "pass");
    const d = await evaluateDmarc({
      headerFrom: dkim.headerFrom,
      fromFields: dkim.fromFields,
      spfDomains: spf?.result === "pass" && spf.domain ? [spf.domain] : [],
      dkimDomains: passing.map((r) => ({
        id: r.id,
        domain: r.signingDomain,
        aligned: r.status?.aligned,
        underSized: r.status?.underSized,
      })),
      arcResult,
      resolver,
    } as Record<string, unknown>) as unknown as {
      response?: MailauthDmarc | false;
      reason?: string;
    };
    const res = d.response;
    if (!res) {
      const why = d.reason ?? "not evaluated";
      out.dmarc = {
        result: "permerror",
        domain: "",
        comment: why,
        entry: `dmarc=permerror (${why})`,
      };
      return;
    }
    const result = String(res.status?.result ?? TEMP);
    // A DMARC result computed while SPF or every DKIM check could not be done is not a verdict
    // on the domain: RFC 7489 §6.6.2 step 5 allows temperror, and SSG must not call a message
    // "fail" because its own DNS was down.
    const unsure = result === "fail" &&
      (spf?.result === TEMP || (out.dkim.some((k) => k.result === TEMP) && passing.length === 0));
    out.dmarc = {
      result: unsure ? TEMP : result,
      domain: String(res.domain ?? res.status?.header?.from ?? "").toLowerCase(),
      policy: res.policy ? String(res.policy) : undefined,
      comment: unsure ? "SPF or DKIM could not be checked" : res.status?.comment,
      entry: unsure
        ? `dmarc=${TEMP} (SPF or DKIM could not be checked) header.from=${res.domain ?? ""}`
        : String(res.info ?? `dmarc=${result}`),
    };
  }

  #resolver(signal: AbortSignal): MailauthResolver {
    return mailauthResolver(this.#o.dns, signal);
  }
}

/** The SPF outcome when SPF could not finish. */
function spfFailed(env: AuthEnvelope, why: string): SpfOutcome {
  const domain = (env.mailFrom.includes("@") ? env.mailFrom.split("@").pop()! : env.helo)
    .toLowerCase();
  return { result: TEMP, domain, comment: why, entry: `spf=${TEMP} (${oneLine(why)})` };
}

/** One line of printable text (mailauth's entries may be folded; attacker names are inside). */
function oneLine(s: string): string {
  // deno-lint-ignore no-control-regex
  return s.replace(/[\x00-\x1f\x7f]+/g, " ").replace(/ {2,}/g, " ").trim();
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

interface MailauthStatus {
  result?: string;
  comment?: string;
  aligned?: string | false;
  underSized?: number;
  header?: { from?: string };
}
interface MailauthSpf {
  domain?: string;
  status?: MailauthStatus;
  info?: string;
}
interface MailauthDkim {
  headerFrom?: string[] | string;
  fromFields?: number;
  results?: {
    id?: string;
    signingDomain?: string;
    selector?: string;
    status?: MailauthStatus;
    info?: string;
  }[];
  arc?: unknown;
}
interface MailauthArc {
  status?: MailauthStatus;
  info?: string;
}
interface MailauthDmarc {
  status?: MailauthStatus;
  domain?: string;
  policy?: string;
  info?: string;
}
