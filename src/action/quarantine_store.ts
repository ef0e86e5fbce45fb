/**
 * The quarantine: messages held on disk instead of delivered, each as `<id>.eml` (the exact bytes
 * that would have been forwarded) and `<id>.json` (envelope, verdict, rule, evidence, time,
 * original server), until an administrator releases or deletes them (`ssg quarantine ...`).
 *
 * Durability before the 250 (the mission: "a quarantined message is on disk, fsync'd, before the
 * 250"): both files are written under temporary names, each fsync'd, renamed into place, and the
 * directory is fsync'd — only then does `store()` resolve. The `.json` file is the commit mark:
 * it is renamed last, so an entry is listed only when both files are complete. Any failure
 * (ENOSPC, EACCES, EROFS, EIO) rejects with `QuarantineError` and removes what was written: no
 * partial entry is ever left, and the session answers 4xx (reliability-anchors §5, case 36:
 * "never 250", "deletes partial files"). A crash between the steps can leave temporary files or an
 * `.eml` without its `.json`; `recover()` (called at start-up) removes them.
 *
 * Bounded: `maxBytes` (optional) caps the directory's total size; a message that would exceed it
 * is refused with kind "full" (the session answers 452 4.3.1, RFC 3463 "mail system full").
 *
 * Ids are generated here (time + 64 random bits) and every id from outside (a CLI argument) is
 * checked against `ID_RE` before it touches a path: no "/", no "..", no leading dot.
 *
 * Rejected alternative: one file per message with the metadata as a header — it would change the
 * bytes that release must deliver exactly; and SQLite — it would put large blobs in the state
 * database and make a lost quarantine entry depend on another file's health.
 */
import { join } from "node:path";
import type { Envelope, Verdict } from "./verdict_types.ts";
import { cleanText } from "./clean_text.ts";
import { fieldValue, findField, parseRawHeaders } from "./raw_headers.ts";
import type { SendEnvelope, SendResult } from "./send_message.ts";

/** What a valid quarantine id looks like (also what the CLI accepts). */
export const ID_RE = /^[0-9A-Za-z][0-9A-Za-z_-]{0,99}$/;

/** A release claim older than this is taken to be left by a crashed release (1 hour: longer
 * than any SMTP transaction the relay timeouts allow). */
export const STALE_CLAIM_MS = 3600_000;

/** Metadata version written into every `.json`. */
export const META_VERSION = 1;

/** Why a quarantine operation failed. */
export type QuarantineFailure = "full" | "io" | "invalid-id" | "not-found" | "corrupt";

/** A quarantine operation failed; `kind` says how (the session answers 4xx for "full"/"io"). */
export class QuarantineError extends Error {
  /** What went wrong. */
  readonly kind: QuarantineFailure;
  /** `kind` classifies the failure; `cause` keeps the file system error. */
  constructor(kind: QuarantineFailure, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "QuarantineError";
    this.kind = kind;
  }
}

/** The `.json` of one entry. */
export interface QuarantineMeta {
  /** Format version (`META_VERSION`). */
  version: number;
  /** The entry's id. */
  id: string;
  /** When the message was stored (ISO 8601, UTC). */
  receivedAt: string;
  /** The transaction's envelope as received (untrusted strings). */
  envelope: Envelope;
  /** The verdict that quarantined it. */
  verdict: Verdict;
  /** The deciding rule. */
  rule?: string;
  /** The rule's evidence (what matched). */
  evidence?: string;
  /** The original server: where release delivers. */
  server: { ip: string; port: number };
  /** Size of the `.eml` in bytes. */
  size: number;
  /** SHA-256 of the `.eml` (hex), checked on release. */
  sha256: string;
  /** The decoded Subject, cleaned and cut (for listing). */
  subject: string;
  /** The From header, cleaned and cut (for listing). */
  from: string;
}

/** The file operations the store needs; injected by tests to simulate ENOSPC and the like. */
export interface QuarantineFs {
  /** Creates `path` (must not exist), writes all of `data`, fsyncs and closes it. */
  writeFileSynced(path: string, data: Uint8Array): Promise<void>;
  /** fsyncs the directory `path`, so renames in it are durable. */
  syncDir(path: string): Promise<void>;
}

/** The real file system. */
export const denoQuarantineFs: QuarantineFs = {
  async writeFileSynced(path, data) {
    const file = await Deno.open(path, { createNew: true, write: true, mode: 0o600 });
    try {
      let off = 0;
      while (off < data.length) off += await file.write(data.subarray(off));
      await file.sync();
    } finally {
      file.close();
    }
  },
  async syncDir(path) {
    const dir = await Deno.open(path, { read: true });
    try {
      await dir.sync();
    } finally {
      dir.close();
    }
  },
};

/** Options of a store. */
export interface QuarantineOptions {
  /** Most bytes the directory may hold (`quarantine.max_bytes`); unbounded when absent. */
  maxBytes?: number;
  /** File operations (tests inject failures). */
  fs?: QuarantineFs;
  /** Clock (tests). */
  now?: () => Date;
}

/** Delivers a released message; `sendMessage` bound to the original server, normally. */
export type ReleaseSend = (
  message: Uint8Array,
  envelope: SendEnvelope,
  server: { ip: string; port: number },
) => Promise<SendResult>;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A quarantine directory. */
export class QuarantineStore {
  readonly #dir: string;
  readonly #maxBytes: number | undefined;
  readonly #fs: QuarantineFs;
  readonly #now: () => Date;
  #ready: Promise<void> | undefined;
  /** Bytes in the directory as last counted plus reservations since; undefined: not counted. */
  #usage: number | undefined;

  /** A store in `dir` (created 0700 on the first `store()`); nothing is read until used. */
  constructor(dir: string, opts: QuarantineOptions = {}) {
    this.#dir = dir;
    this.#maxBytes = opts.maxBytes;
    this.#fs = opts.fs ?? denoQuarantineFs;
    this.#now = opts.now ?? (() => new Date());
  }

  /** The directory. */
  get dir(): string {
    return this.#dir;
  }

  /**
   * Stores `message` and resolves with the new id only after both files and the directory are
   * fsync'd. Rejects with `QuarantineError` ("full" over `maxBytes`, "io" on any file system
   * failure), leaving no partial entry behind.
   */
  async store(message: Uint8Array, envelope: Envelope, verdict: Verdict): Promise<string> {
    const now = this.#now();
    const id = newId(now);
    const meta: QuarantineMeta = {
      version: META_VERSION,
      id,
      receivedAt: now.toISOString(),
      envelope,
      verdict,
      rule: verdict.rule,
      evidence: verdict.evidence,
      server: { ip: envelope.server.ip, port: envelope.server.port },
      size: message.length,
      sha256: await sha256Hex(message),
      ...headerSummary(message),
    };
    const json = encoder.encode(JSON.stringify(meta, null, 2) + "\n");
    const size = message.length + json.length;
    try {
      await this.#ensureDir();
    } catch (e) {
      throw new QuarantineError("io", `Cannot create quarantine directory ${this.#dir}`, {
        cause: e,
      });
    }
    await this.#reserve(size);
    const tmpEml = join(this.#dir, `.${id}.eml.tmp`);
    const tmpJson = join(this.#dir, `.${id}.json.tmp`);
    const eml = join(this.#dir, `${id}.eml`);
    const metaPath = join(this.#dir, `${id}.json`);
    try {
      await this.#fs.writeFileSynced(tmpEml, message);
      await this.#fs.writeFileSynced(tmpJson, json);
      await Deno.rename(tmpEml, eml);
      await Deno.rename(tmpJson, metaPath); // the commit mark: renamed last
      await this.#fs.syncDir(this.#dir);
      return id;
    } catch (e) {
      this.#usage = (this.#usage ?? size) - size;
      // Remove the commit mark first, so a half-removed entry is never listed.
      for (const p of [metaPath, tmpJson, eml, tmpEml]) await removeQuietly(p);
      try {
        await this.#fs.syncDir(this.#dir);
      } catch { /* the entry is gone or incomplete either way; reported below */ }
      throw new QuarantineError("io", `Cannot store message in quarantine ${this.#dir}: ${e}`, {
        cause: e,
      });
    }
  }

  /** Every complete entry, oldest first. Entries whose `.json` cannot be read are skipped. */
  async list(): Promise<QuarantineMeta[]> {
    const out: QuarantineMeta[] = [];
    for (const id of await this.#ids()) {
      try {
        out.push(await this.#readMeta(id));
      } catch { /* corrupt or removed meanwhile: not listable */ }
    }
    return out.sort((a, b) => a.receivedAt.localeCompare(b.receivedAt) || a.id.localeCompare(b.id));
  }

  /** One entry: its metadata and the stored message bytes. */
  async show(id: string): Promise<{ meta: QuarantineMeta; message: Uint8Array }> {
    const meta = await this.#readMeta(checkId(id));
    let message: Uint8Array;
    try {
      message = await Deno.readFile(join(this.#dir, `${id}.eml`));
    } catch (e) {
      throw new QuarantineError("corrupt", `Quarantine entry ${id} has no readable message`, {
        cause: e,
      });
    }
    if (message.length !== meta.size || await sha256Hex(message) !== meta.sha256) {
      throw new QuarantineError(
        "corrupt",
        `Quarantine entry ${id}: message does not match its checksum`,
      );
    }
    return { meta, message };
  }

  /**
   * Delivers the ORIGINAL bytes with the ORIGINAL envelope to the original server through `send`,
   * and removes the entry only when the server accepted it (250). Resolves with the server's
   * deciding reply either way; rejects with `QuarantineError` when the entry is missing/corrupt.
   *
   * The entry is claimed first (its `.json` renamed to `.<id>.releasing`, atomically), so two
   * concurrent releases, or a release and a delete, cannot deliver it twice; on any outcome but
   * 250 the claim is given back. A claim left by a crashed release is given back by `recover()`
   * once it is older than `STALE_CLAIM_MS`.
   */
  async release(id: string, send: ReleaseSend): Promise<SendResult> {
    const { meta, message } = await this.show(id);
    const metaPath = join(this.#dir, `${id}.json`);
    const claim = join(this.#dir, `.${id}.releasing`);
    try {
      await Deno.rename(metaPath, claim);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        const why = `Quarantine entry ${id} is being released or was removed`;
        throw new QuarantineError("not-found", why, { cause: e });
      }
      throw new QuarantineError("io", `Cannot claim quarantine entry ${id}: ${e}`, { cause: e });
    }
    try {
      // rename keeps the old mtime; the claim's age must count from now (`restoreStaleClaims`).
      const now = this.#now();
      await Deno.utime(claim, now, now);
    } catch (e) {
      await Deno.rename(claim, metaPath).catch(() => {});
      throw new QuarantineError("io", `Cannot claim quarantine entry ${id}: ${e}`, { cause: e });
    }
    let result: SendResult;
    try {
      result = await send(
        message,
        { mailFrom: meta.envelope.mailFrom, rcptTo: meta.envelope.rcptTo },
        meta.server,
      );
    } catch (e) {
      await Deno.rename(claim, metaPath).catch(() => {});
      throw e;
    }
    if (result.code !== 250) {
      await Deno.rename(claim, metaPath);
      return result;
    }
    // Delivered: the claim goes first, so the entry is never listed again.
    await Deno.remove(claim);
    await removeQuietly(join(this.#dir, `${id}.eml`));
    this.#usage = undefined;
    try {
      await this.#fs.syncDir(this.#dir);
    } catch { /* delivered and removed; durability of the removal is not worth a failure */ }
    return result;
  }

  /** Removes an entry (its `.json` first, so it stops being listed at once). */
  async delete(id: string): Promise<void> {
    checkId(id);
    const metaPath = join(this.#dir, `${id}.json`);
    const eml = join(this.#dir, `${id}.eml`);
    let freed = 0;
    try {
      freed += (await Deno.stat(metaPath)).size;
      await Deno.remove(metaPath);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new QuarantineError("not-found", `No quarantine entry ${id}`, { cause: e });
      }
      throw new QuarantineError("io", `Cannot delete quarantine entry ${id}: ${e}`, { cause: e });
    }
    try {
      freed += (await Deno.stat(eml)).size;
      await Deno.remove(eml);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        throw new QuarantineError("io", `Cannot delete message of entry ${id}: ${e}`, { cause: e });
      }
    }
    if (this.#usage !== undefined) this.#usage = Math.max(0, this.#usage - freed);
    try {
      await this.#fs.syncDir(this.#dir);
    } catch { /* deleted; durability of a delete is not worth a failure */ }
  }

  /**
   * Removes what interrupted `store()` calls left (temporary files, `.eml` without `.json`), and
   * gives back claims of releases that crashed (`restoreStaleClaims`).
   * Call at start-up, before any session can store (it would race an in-progress store).
   * Returns how many files were removed or restored.
   */
  async recover(): Promise<number> {
    let changed = await this.restoreStaleClaims();
    let names: string[];
    try {
      names = await this.#names();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return changed;
      throw e;
    }
    // An entry is committed by its .json, or by a live release claim.
    const committed = new Set<string>();
    for (const n of names) {
      const m = /^(?:([0-9A-Za-z][0-9A-Za-z_-]*)\.json|\.([0-9A-Za-z][0-9A-Za-z_-]*)\.releasing)$/
        .exec(n);
      if (m) committed.add(m[1] ?? m[2]);
    }
    for (const n of names) {
      const tmp = /^\.[0-9A-Za-z][0-9A-Za-z_-]*\.(eml|json)\.tmp$/.test(n);
      const id = n.slice(0, -4);
      const orphan = n.endsWith(".eml") && ID_RE.test(id) && !committed.has(id);
      if (tmp || orphan) {
        await Deno.remove(join(this.#dir, n));
        changed++;
      }
    }
    this.#usage = undefined;
    return changed;
  }

  /**
   * Gives back release claims older than `STALE_CLAIM_MS` (left by a release that crashed), so
   * the entries are listed again. Safe while the gateway runs and while other releases run (a
   * live claim is younger). Returns how many were restored.
   */
  async restoreStaleClaims(): Promise<number> {
    let restored = 0;
    let names: string[];
    try {
      names = await this.#names();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return 0;
      throw e;
    }
    for (const n of names) {
      const m = /^\.([0-9A-Za-z][0-9A-Za-z_-]*)\.releasing$/.exec(n);
      if (!m || !ID_RE.test(m[1])) continue;
      try {
        const info = await Deno.stat(join(this.#dir, n));
        const age = this.#now().getTime() - (info.mtime?.getTime() ?? 0);
        if (age <= STALE_CLAIM_MS) continue;
        await Deno.rename(join(this.#dir, n), join(this.#dir, `${m[1]}.json`));
        restored++;
      } catch { /* finished or restored meanwhile */ }
    }
    return restored;
  }

  /** Bytes the directory holds now (counted afresh). */
  async usage(): Promise<number> {
    let total = 0;
    try {
      for await (const e of Deno.readDir(this.#dir)) {
        if (!e.isFile) continue;
        try {
          total += (await Deno.stat(join(this.#dir, e.name))).size;
        } catch { /* removed meanwhile */ }
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return total;
  }

  /** Reserves `size` bytes under `maxBytes`, counting afresh before refusing. */
  async #reserve(size: number): Promise<void> {
    if (this.#maxBytes === undefined) return;
    if (this.#usage === undefined || this.#usage + size > this.#maxBytes) {
      // Recount before refusing: `ssg quarantine delete` in another process frees space.
      try {
        this.#usage = await this.usage();
      } catch (e) {
        throw new QuarantineError("io", `Cannot read quarantine directory ${this.#dir}`, {
          cause: e,
        });
      }
    }
    if (this.#usage + size > this.#maxBytes) {
      throw new QuarantineError(
        "full",
        `Quarantine ${this.#dir} is full (${this.#usage} + ${size} > ${this.#maxBytes} bytes)`,
      );
    }
    this.#usage += size;
  }

  #ensureDir(): Promise<void> {
    this.#ready ??= Deno.mkdir(this.#dir, { recursive: true, mode: 0o700 }).catch((e) => {
      this.#ready = undefined; // try again next time (the admin may fix it)
      throw e;
    });
    return this.#ready;
  }

  async #names(): Promise<string[]> {
    const names: string[] = [];
    for await (const e of Deno.readDir(this.#dir)) if (e.isFile) names.push(e.name);
    return names;
  }

  async #ids(): Promise<string[]> {
    let names: string[];
    try {
      names = await this.#names();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return [];
      throw new QuarantineError("io", `Cannot read quarantine directory ${this.#dir}`, {
        cause: e,
      });
    }
    return names.filter((n) => n.endsWith(".json") && ID_RE.test(n.slice(0, -5)))
      .map((n) => n.slice(0, -5));
  }

  async #readMeta(id: string): Promise<QuarantineMeta> {
    let text: string;
    try {
      text = decoder.decode(await Deno.readFile(join(this.#dir, `${id}.json`)));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new QuarantineError("not-found", `No quarantine entry ${id}`, { cause: e });
      }
      throw new QuarantineError("io", `Cannot read quarantine entry ${id}: ${e}`, { cause: e });
    }
    try {
      const meta = JSON.parse(text) as QuarantineMeta;
      if (meta.id !== id || typeof meta.size !== "number" || !meta.envelope || !meta.server) {
        throw new Error("missing fields");
      }
      return meta;
    } catch (e) {
      throw new QuarantineError("corrupt", `Quarantine entry ${id} has unreadable metadata`, {
        cause: e,
      });
    }
  }
}

/** Returns `id` when it is a valid id; throws `QuarantineError` ("invalid-id") otherwise. */
export function checkId(id: string): string {
  if (!ID_RE.test(id)) {
    throw new QuarantineError(
      "invalid-id",
      `Invalid quarantine id ${JSON.stringify(id.slice(0, 100))}`,
    );
  }
  return id;
}

/** A new id: UTC time to the second (so ids sort by time) and 64 random bits. */
function newId(now: Date): string {
  const t = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  const rnd = crypto.getRandomValues(new Uint8Array(8));
  return `${t}-${Array.from(rnd, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function headerSummary(message: Uint8Array): { subject: string; from: string } {
  const headers = parseRawHeaders(message);
  const subject = findField(headers, "Subject");
  const from = findField(headers, "From");
  return {
    subject: subject ? cleanText(fieldValue(message, subject, 8192), 200) : "",
    from: from ? cleanText(fieldValue(message, from, 8192), 200) : "",
  };
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>),
  );
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function removeQuietly(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch { /* not there */ }
}
