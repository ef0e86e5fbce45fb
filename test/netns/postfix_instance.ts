/**
 * A private, real Postfix instance inside one namespace of a test {@linkcode Topology}: its own
 * config directory (`postconf -c DIR`), queue, data and mail directories under one temp dir, its
 * log in a file (`maillog_file`, written by postlogd — no syslog needed), started with
 * `postfix -c DIR start` inside the namespace and stopped with `postfix -c DIR stop` (then
 * `abort`, then the topology kills what is left). The host's /etc/postfix is only read
 * (master.cf as the template).
 *
 * What it offers a test: inject a message (`sendmail -C DIR`, with the DSN options), wait —
 * bounded — until the instance logs the final status of every recipient, read and empty a virtual
 * maildir, and the raw log. Each case's parameters are given at start (a fresh instance per test).
 *
 * What it trusts: nothing it reads from the log but the fields it parses (`to=`, `dsn=`,
 * `status=`, `client=`, `message-id=`). What it limits: every command and every wait is bounded
 * (start 60 s, stop 30 s, a delivery wait 30 s by default); a temp dir left by an aborted run is
 * removed at process exit. Alternatives rejected: syslog (no daemon in the test machines, and one
 * log shared by every instance), `smtp-sink` (not a real MTA: no DSN, no queue, no bounces).
 *
 * @module
 */
import { join } from "node:path";
import { run, type Topology } from "./topology.ts";

/** Raised when an instance cannot be started or a bounded wait runs out. */
export class PostfixError extends Error {
  /** Creates the error; `cause` keeps the underlying failure. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PostfixError";
  }
}

/** How to build one instance. */
export interface PostfixInstanceOptions {
  /** Short label used in paths, `syslog_name` and messages, e.g. "server". */
  name: string;
  /** The namespace it runs in (one of the topology's). */
  ns: string;
  /** The address its smtpd listens on (`inet_interfaces`), port 25. */
  address: string;
  /** `myhostname` (greeting and EHLO name). */
  hostname: string;
  /** main.cf parameters on top of the base below (they win). */
  params?: Record<string, string>;
  /** Files written into the config directory before start (lookup tables, certificates). */
  files?: Record<string, string>;
}

/** One recipient's final (or deferred) status as the instance logged it. */
export interface DeliveryStatus {
  queueId: string;
  /** The `to=` address without brackets. */
  recipient: string;
  /** `relay=` field. */
  relay: string;
  /** The enhanced status code logged as `dsn=`. */
  dsn: string;
  /** sent, bounced, deferred, expired, ... */
  status: string;
  /** The text in parentheses after the status (the peer's reply or Postfix's reason). */
  reason: string;
}

/** Directories made and not yet removed; removed synchronously if the process exits early. */
const liveDirs = new Set<string>();
let unloadHooked = false;
function hookUnload(): void {
  if (unloadHooked) return;
  unloadHooked = true;
  globalThis.addEventListener("unload", () => {
    for (const d of liveDirs) {
      try {
        Deno.removeSync(d, { recursive: true });
      } catch { /* best effort */ }
    }
  });
}

/** Debian's master.cf with every service unchrooted (the instance has no chroot tree). */
function masterCf(template: string): string {
  return template.split("\n").map((line) => {
    if (/^\s|^#|^$/.test(line)) return line;
    const f = line.split(/\s+/);
    if (f.length < 8) return line;
    f[4] = "n";
    return f.join(" ");
  }).join("\n");
}

/** The owner of virtual mailboxes (virtual(8) refuses root). */
const MAILBOX_UID = 65534;

function baseParams(dir: string, o: PostfixInstanceOptions): Record<string, string> {
  return {
    compatibility_level: "3.6",
    queue_directory: `${dir}/spool`,
    data_directory: `${dir}/data`,
    daemon_directory: "/usr/lib/postfix/sbin",
    shlib_directory: "/usr/lib/postfix",
    meta_directory: "/etc/postfix",
    command_directory: "/usr/sbin",
    mail_owner: "postfix",
    setgid_group: "postdrop",
    syslog_name: `postfix-${o.name}`,
    maillog_file: `${dir}/maillog`,
    maillog_file_prefixes: dir,
    inet_interfaces: o.address,
    inet_protocols: "ipv4",
    myhostname: o.hostname,
    mydestination: "",
    local_recipient_maps: "",
    local_transport: "error:5.1.1 local delivery is disabled in this test",
    alias_maps: "",
    alias_database: "",
    mynetworks: "127.0.0.0/8",
    smtpd_peername_lookup: "no",
    smtp_dns_support_level: "disabled",
    // No reuse of an SMTP connection across messages: a test compares a direct run with one
    // through SSG, and a cached direct connection would carry the second.
    smtp_connection_cache_on_demand: "no",
    in_flow_delay: "0",
    virtual_mailbox_base: `${dir}/mail`,
    virtual_uid_maps: `static:${MAILBOX_UID}`,
    virtual_gid_maps: `static:${MAILBOX_UID}`,
    virtual_mailbox_limit: "0",
    biff: "no",
    // Retries would mix a deferred message of one run into the next; the test decides.
    queue_run_delay: "3600s",
    minimal_backoff_time: "3600s",
    maximal_backoff_time: "3600s",
  };
}

/** A running private Postfix. */
export class PostfixInstance implements AsyncDisposable {
  readonly name: string;
  readonly ns: string;
  readonly address: string;
  /** Its config directory (`-c`), also the root of its queue, data and mail directories. */
  readonly dir: string;
  readonly logFile: string;
  #t: Topology;
  #stopped = false;

  private constructor(t: Topology, o: PostfixInstanceOptions, dir: string) {
    this.#t = t;
    this.name = o.name;
    this.ns = o.ns;
    this.address = o.address;
    this.dir = dir;
    this.logFile = join(dir, "maillog");
  }

  /** Writes the configuration, starts the instance and waits until its port 25 accepts. */
  static async start(t: Topology, o: PostfixInstanceOptions): Promise<PostfixInstance> {
    hookUnload();
    const template = await Deno.readTextFile("/etc/postfix/master.cf");
    const dir = await Deno.makeTempDir({ prefix: `ssg-postfix-${o.name}-` });
    liveDirs.add(dir);
    const pf = new PostfixInstance(t, o, dir);
    try {
      // Postfix daemons run as the postfix user and must reach the queue below this directory.
      await Deno.chmod(dir, 0o755);
      await Deno.mkdir(join(dir, "spool"));
      await Deno.mkdir(join(dir, "mail"));
      await Deno.chown(join(dir, "mail"), MAILBOX_UID, MAILBOX_UID);
      const params = { ...baseParams(dir, o), ...o.params };
      const mainCf = Object.entries(params).map(([k, v]) => `${k} = ${v}`).join("\n");
      await Deno.writeTextFile(
        join(dir, "main.cf"),
        `# Written by test/netns/postfix_instance.ts (${o.name})\n${mainCf}\n`,
      );
      await Deno.writeTextFile(join(dir, "master.cf"), masterCf(template));
      for (const [name, text] of Object.entries(o.files ?? {})) {
        await Deno.writeTextFile(join(dir, name), text);
      }
      const r = await pf.#postfix(["start"], 60_000);
      if (r.code !== 0) {
        throw new PostfixError(
          `postfix -c ${dir} start failed (exit ${r.code}): ${(r.stdout + r.stderr).trim()}\n` +
            pf.log().slice(-2_000),
        );
      }
      await t.waitForPort(o.ns, o.address, 25, 30_000);
    } catch (e) {
      await pf.stop().catch(() => {});
      throw e instanceof PostfixError
        ? e
        : new PostfixError(`Cannot start Postfix instance "${o.name}"`, { cause: e });
    }
    return pf;
  }

  /** Runs `postfix -c DIR ARGS` in the namespace. Caution: the postfix command prints its fatal
   * errors only to a terminal (and the log), so it runs under script(1), which gives it one. */
  #postfix(args: string[], timeoutMs: number) {
    return this.#t.exec(this.ns, [
      "script",
      "-qec",
      ["postfix", "-c", this.dir, ...args].join(" "),
      "/dev/null",
    ], { timeoutMs });
  }

  /**
   * Injects `message` with `sendmail -C DIR -i -f from [opts] -- rcpts` (inside the namespace).
   * `opts` are sendmail's own, e.g. `-N never`, `-R hdrs`, `-V envid`.
   */
  async sendmail(
    from: string,
    rcpts: string[],
    message: string | Uint8Array,
    opts: string[] = [],
  ): Promise<void> {
    const r = await this.#t.exec(this.ns, [
      "/usr/sbin/sendmail",
      "-C",
      this.dir,
      "-i",
      "-f",
      from,
      ...opts,
      "--",
      ...rcpts,
    ], { stdin: message, timeoutMs: 60_000 });
    if (r.code !== 0) {
      throw new PostfixError(`sendmail -C ${this.dir} failed (exit ${r.code}): ${r.stderr}`);
    }
  }

  /** Deletes every queued message (`postsuper -d ALL`): a deferred one must not retry later. */
  async clearQueue(): Promise<void> {
    await run(["postsuper", "-c", this.dir, "-d", "ALL"], { timeoutMs: 15_000 });
  }

  /** The log so far ("" before the first line). */
  log(): string {
    try {
      return new TextDecoder().decode(Deno.readFileSync(this.logFile));
    } catch {
      return "";
    }
  }

  /** The log's size in bytes: pass it as `since` to read only what comes later. */
  logSize(): number {
    try {
      return Deno.statSync(this.logFile).size;
    } catch {
      return 0;
    }
  }

  /** The log from byte `since`. */
  logSince(since: number): string {
    try {
      return new TextDecoder().decode(Deno.readFileSync(this.logFile).subarray(since));
    } catch {
      return "";
    }
  }

  /** Waits (bounded) until the log after `since` matches `re`; returns the match. */
  async waitForLog(re: RegExp, since = 0, timeoutMs = 30_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.logSince(since));
      if (m) return m;
      if (Date.now() > deadline) {
        throw new PostfixError(
          `Postfix "${this.name}" did not log ${re} within ${timeoutMs} ms; its log since then:\n` +
            this.logSince(since).slice(-4_000),
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The queue ids of messages whose cleanup logged `message-id=<messageId>` after `since`. */
  queueIds(messageId: string, since = 0): string[] {
    const out: string[] = [];
    const re = new RegExp(`: ([0-9A-F]{6,}): message-id=<${escape(messageId)}>`, "g");
    for (const m of this.logSince(since).matchAll(re)) out.push(m[1]);
    return out;
  }

  /**
   * Waits (bounded) until the message with `messageId`, logged after `since`, has a status for
   * `count` recipients (any status, deferred included) and returns them.
   */
  async waitForDelivery(
    messageId: string,
    count: number,
    since = 0,
    timeoutMs = 30_000,
  ): Promise<DeliveryStatus[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const ids = this.queueIds(messageId, since);
      const got = ids.length ? this.statuses(ids[0], since) : [];
      if (got.length >= count) return got;
      if (Date.now() > deadline) {
        throw new PostfixError(
          `Postfix "${this.name}" logged ${got.length} of ${count} statuses for <${messageId}> ` +
            `within ${timeoutMs} ms; its log since then:\n${this.logSince(since).slice(-4_000)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Every `to=…, status=…` line of queue id `queueId` after `since`. */
  statuses(queueId: string, since = 0): DeliveryStatus[] {
    const out: DeliveryStatus[] = [];
    const re = new RegExp(
      `: ${queueId}: to=<([^>]*)>,(?:.*?) relay=([^,]*),(?:.*?) dsn=([0-9.]+), status=(\\w+)` +
        ` \\((.*)\\)$`,
      "gm",
    );
    for (const m of this.logSince(since).matchAll(re)) {
      out.push({
        queueId,
        recipient: m[1],
        relay: m[2],
        dsn: m[3],
        status: m[4],
        reason: m[5],
      });
    }
    return out;
  }

  /** The `client=` smtpd logged for queue id `queueId`, e.g. "unknown[192.0.2.10]". */
  clientOf(queueId: string, since = 0): string | undefined {
    const re = new RegExp(`: ${queueId}: client=([^,\\s]+)`);
    return re.exec(this.logSince(since))?.[1];
  }

  /** The maildir `name/` below the virtual mailbox base. */
  maildir(name: string): string {
    return join(this.dir, "mail", name);
  }

  /** Reads and removes every delivered message in maildir `name` (oldest first). */
  async takeMail(name: string): Promise<Uint8Array[]> {
    const dir = join(this.maildir(name), "new");
    const files: string[] = [];
    try {
      for await (const e of Deno.readDir(dir)) if (e.isFile) files.push(e.name);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return [];
      throw e;
    }
    // Maildir names start with the delivery time in seconds, then a sequence: sort numerically.
    files.sort((a, b) => parseFloat(a) - parseFloat(b) || (a < b ? -1 : 1));
    const out: Uint8Array[] = [];
    for (const f of files) {
      out.push(await Deno.readFile(join(dir, f)));
      await Deno.remove(join(dir, f));
    }
    return out;
  }

  /** Stops the instance (stop, then abort), removes its directory. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    try {
      const r = await this.#postfix(["stop"], 30_000);
      if (r.code !== 0 && /running/.test(r.stdout + r.stderr)) {
        await this.#postfix(["abort"], 15_000);
      }
    } catch { /* the topology may be gone; its dispose kills what is left */ }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    liveDirs.delete(this.dir);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/** `s` as a literal inside a regular expression. */
export function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
