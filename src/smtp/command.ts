/**
 * Parsing of SMTP command lines and of the MAIL/RCPT arguments (RFC 5321 §4.1.1, §4.1.2), with
 * the size limits of §4.5.3.1.
 *
 * Security: untrusted bytes. Every function here is linear in its input (no regular expression
 * with nested quantifiers runs on client text) and rejects what must never travel further: any
 * C0 control character or DEL in a command line, which covers CR/LF/NUL smuggled into paths;
 * 8-bit bytes unless SMTPUTF8 (RFC 6531) was offered, and then only valid UTF-8 without C1
 * controls; unknown ESMTP parameters (555, RFC 5321 §4.1.1.11). DSN parameters (RFC 3461) are
 * accepted only when DSN was offered, and their xtext is validated (§4): well-formed "+HH"
 * escapes, and no control character once decoded, so `ENVID=ab+0D+0Acd` never reaches a
 * server's bounce headers. Accepted parameters are relayed verbatim (never re-encoded).
 *
 * Leniency kept on purpose, as Postfix does by default: verbs are case-insensitive, spaces after
 * "FROM:"/"TO:" are allowed, a source route (`<@a,@b:u@d>`) is accepted and dropped (§4.1.2
 * requires accepting it), and local-parts may contain consecutive dots. Angle brackets are required.
 */
import { reply, type SmtpReply } from "./reply.ts";

/** A command line split into its verb (upper case) and argument (trimmed). */
export interface CommandLine {
  /** The verb, upper case (e.g. "MAIL"). */
  verb: string;
  /** Everything after the verb, trimmed ("" when none). */
  arg: string;
}

/** The arguments of MAIL FROM. */
export interface MailArgs {
  /** Reverse-path without angle brackets; "" for the null sender `<>`. */
  address: string;
  /** The SIZE= parameter (RFC 1870), if given. */
  size?: number;
  /** The BODY= parameter (RFC 6152), upper case, if given. */
  body?: "7BIT" | "8BITMIME";
  /** The SMTPUTF8 parameter (RFC 6531 §3.4) was given. */
  smtputf8?: boolean;
  /** RET= (RFC 3461 §4.3), upper case. */
  ret?: "FULL" | "HDRS";
  /** ENVID= (RFC 3461 §4.4), the xtext exactly as received. */
  envid?: string;
  /** AUTH= (RFC 4954 §5): "<>" or an xtext mailbox, as received. */
  auth?: string;
}

/** Which optional MAIL/RCPT parameters the session offered (others get 555). */
export interface ParamOffer {
  /** DSN was offered (RET, ENVID, NOTIFY, ORCPT). */
  dsn?: boolean;
  /** SMTPUTF8 was offered. */
  smtputf8?: boolean;
  /** AUTH was offered (the AUTH= parameter of MAIL). */
  auth?: boolean;
}

/** The arguments of RCPT TO. */
export interface RcptArgs {
  /** Forward-path without angle brackets. */
  address: string;
  /** NOTIFY= (RFC 3461 §4.1) exactly as received (validated). */
  notify?: string;
  /** ORCPT= (RFC 3461 §4.2) exactly as received (validated). */
  orcpt?: string;
}

/** A parse result: the value, or the reply to give and a short reason for the log. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; reply: SmtpReply; reason: string };

/** Longest local-part in octets (RFC 5321 §4.5.3.1.1). */
export const MAX_LOCAL_PART = 64;
/** Longest domain in octets (RFC 5321 §4.5.3.1.2). */
export const MAX_DOMAIN = 255;
/** Longest path in octets, angle brackets included (RFC 5321 §4.5.3.1.3). */
export const MAX_PATH = 256;

const ATEXT_EXTRA = "!#$%&'*+-/=?^_`{|}~";

function fail<T>(code: number, enhanced: string, text: string, reason: string): Parsed<T> {
  return { ok: false, reply: reply(code, enhanced, text), reason };
}

const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Splits a command line (CRLF already removed) into verb and argument. Rejects control
 * characters (500 5.5.2) anywhere in the line, and 8-bit bytes (500 5.5.2) unless `utf8`
 * (SMTPUTF8 was offered): then the line must be valid UTF-8 without C1 controls (500 5.5.2).
 */
export function parseCommandLine(line: Uint8Array, utf8 = false): Parsed<CommandLine> {
  let text = "";
  let eightBit = false;
  for (let i = 0; i < line.length; i++) {
    const b = line[i];
    if (b < 0x20 || b === 0x7f) {
      return fail(500, "5.5.2", "Syntax error: control character in command", "control-char");
    }
    if (b > 0x7e) {
      if (!utf8) {
        return fail(500, "5.5.2", "Syntax error: 8-bit character in command", "8bit-char");
      }
      eightBit = true;
      break;
    }
    text += String.fromCharCode(b);
  }
  if (eightBit) {
    try {
      text = utf8Decoder.decode(line);
    } catch {
      return fail(500, "5.5.2", "Syntax error: invalid UTF-8 in command", "bad-utf8");
    }
    if (/[\u0080-\u009f]/.test(text)) {
      return fail(500, "5.5.2", "Syntax error: control character in command", "control-char");
    }
  }
  const sp = text.indexOf(" ");
  const verb = (sp < 0 ? text : text.slice(0, sp)).toUpperCase();
  const arg = sp < 0 ? "" : text.slice(sp + 1).trim();
  if (verb === "" || !/^[A-Z]{1,16}$/.test(verb)) {
    return fail(500, "5.5.1", "Syntax error: command unrecognized", "bad-verb");
  }
  return { ok: true, value: { verb, arg } };
}

/**
 * Parses the argument of MAIL: `FROM:<path> [params]`. SIZE and BODY always; SMTPUTF8, RET and
 * ENVID only when `offer` says they were offered (else 555).
 */
export function parseMailArg(arg: string, offer: ParamOffer = {}): Parsed<MailArgs> {
  if (arg.slice(0, 5).toUpperCase() !== "FROM:") {
    return fail(501, "5.5.4", "Syntax: MAIL FROM:<address>", "mail-syntax");
  }
  const path = splitPath(arg.slice(5).trimStart(), "5.1.7", true);
  if (!path.ok) return path;
  const out: MailArgs = { address: path.value.address };
  const seen = new Set<string>();
  for (const p of path.value.params) {
    const eq = p.indexOf("=");
    const key = (eq < 0 ? p : p.slice(0, eq)).toUpperCase();
    const value = eq < 0 ? undefined : p.slice(eq + 1);
    if (!isParamKeyword(key) || (value !== undefined && !isParamValue(value))) {
      return fail(501, "5.5.4", "Syntax error in parameters", "param-syntax");
    }
    if (seen.has(key)) return fail(501, "5.5.4", `Duplicate parameter ${key}`, "param-duplicate");
    seen.add(key);
    if (key === "SIZE") {
      if (value === undefined || !/^[0-9]{1,20}$/.test(value)) {
        return fail(501, "5.5.4", "Syntax: SIZE=<number>", "size-syntax");
      }
      out.size = Number(value);
    } else if (key === "BODY") {
      const v = value?.toUpperCase();
      if (v !== "7BIT" && v !== "8BITMIME") {
        return fail(501, "5.5.4", "Syntax: BODY=7BIT or BODY=8BITMIME", "body-syntax");
      }
      out.body = v;
    } else if (key === "SMTPUTF8" && offer.smtputf8) {
      if (value !== undefined) return fail(501, "5.5.4", "Syntax: SMTPUTF8", "smtputf8-syntax");
      out.smtputf8 = true;
    } else if (key === "RET" && offer.dsn) {
      const v = value?.toUpperCase();
      if (v !== "FULL" && v !== "HDRS") {
        return fail(501, "5.5.4", "Syntax: RET=FULL or RET=HDRS", "ret-syntax");
      }
      out.ret = v;
    } else if (key === "AUTH" && offer.auth) {
      if (value === undefined || (value !== "<>" && !isXtext(value, offer.smtputf8 === true))) {
        return fail(501, "5.5.4", "Bad AUTH parameter syntax", "auth-param-syntax");
      }
      out.auth = value;
    } else if (key === "ENVID" && offer.dsn) {
      // RFC 3461 §4.4: xtext, at most 100 characters.
      if (value === undefined || value.length > 100 || !isXtext(value, false)) {
        return fail(501, "5.5.4", "Bad ENVID parameter syntax", "envid-syntax");
      }
      out.envid = value;
    } else {
      return fail(555, "5.5.4", `Unsupported parameter ${key}`, "param-unsupported");
    }
  }
  if (!out.smtputf8 && !isAscii(out.address)) {
    // RFC 6531 §3.4: a UTF-8 reverse-path needs the SMTPUTF8 parameter.
    return fail(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address", "utf8-undeclared");
  }
  return { ok: true, value: out };
}

/** Whether `s` is all ASCII. */
export function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

/**
 * xtext (RFC 3461 §4): "+" only as "+HH" (upper-case hex), otherwise printable ASCII but "=";
 * and, decoded, no control character (it would end up in a bounce's header fields). With
 * `utf8` (an ORCPT of type utf-8 under SMTPUTF8, RFC 6533 §3) UTF-8 characters are allowed too.
 */
export function isXtext(v: string, utf8: boolean): boolean {
  if (v.length === 0) return false;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c === 0x2b) {
      const hex = v.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) return false;
      const d = parseInt(hex, 16);
      if (d < 0x20 || d === 0x7f) return false;
      i += 2;
      continue;
    }
    if (c >= 33 && c <= 126 && c !== 61) continue;
    if (utf8 && c > 0x9f) continue;
    return false;
  }
  return true;
}

/**
 * Parses the argument of RCPT: `TO:<path> [params]`. NOTIFY and ORCPT only when DSN was offered
 * (else 555). `txUtf8`: the transaction declared SMTPUTF8 (a UTF-8 forward-path needs it).
 */
export function parseRcptArg(
  arg: string,
  offer: ParamOffer = {},
  txUtf8 = false,
): Parsed<RcptArgs> {
  if (arg.slice(0, 3).toUpperCase() !== "TO:") {
    return fail(501, "5.5.4", "Syntax: RCPT TO:<address>", "rcpt-syntax");
  }
  const path = splitPath(arg.slice(3).trimStart(), "5.1.3", false);
  if (!path.ok) return path;
  if (path.value.address === "") {
    return fail(501, "5.1.3", "Bad recipient address syntax", "rcpt-null");
  }
  const out: RcptArgs = { address: path.value.address };
  const seen = new Set<string>();
  for (const p of path.value.params) {
    const eq = p.indexOf("=");
    const key = (eq < 0 ? p : p.slice(0, eq)).toUpperCase();
    const value = eq < 0 ? undefined : p.slice(eq + 1);
    if (!isParamKeyword(key)) {
      return fail(501, "5.5.4", "Syntax error in parameters", "param-syntax");
    }
    if (seen.has(key)) return fail(501, "5.5.4", `Duplicate parameter ${key}`, "param-duplicate");
    seen.add(key);
    if (key === "NOTIFY" && offer.dsn) {
      if (value === undefined || !isNotify(value)) {
        return fail(501, "5.5.4", "Bad NOTIFY parameter syntax", "notify-syntax");
      }
      out.notify = value;
    } else if (key === "ORCPT" && offer.dsn) {
      if (value === undefined || !isOrcpt(value, txUtf8)) {
        return fail(501, "5.5.4", "Bad ORCPT parameter syntax", "orcpt-syntax");
      }
      out.orcpt = value;
    } else {
      return fail(555, "5.5.4", `Unsupported parameter ${key}`, "param-unsupported");
    }
  }
  if (!txUtf8 && !isAscii(out.address)) {
    return fail(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address", "utf8-undeclared");
  }
  return { ok: true, value: out };
}

/** NOTIFY (RFC 3461 §4.1): NEVER alone, or a list of SUCCESS, FAILURE, DELAY, each once. */
function isNotify(v: string): boolean {
  const words = v.toUpperCase().split(",");
  if (words.length === 1 && words[0] === "NEVER") return true;
  const seen = new Set<string>();
  for (const w of words) {
    if (w !== "SUCCESS" && w !== "FAILURE" && w !== "DELAY") return false;
    if (seen.has(w)) return false;
    seen.add(w);
  }
  return true;
}

/** ORCPT (RFC 3461 §4.2): `addr-type ";" xtext`, at most 500 characters. */
function isOrcpt(v: string, utf8: boolean): boolean {
  if (v.length > 500) return false;
  const semi = v.indexOf(";");
  if (semi <= 0) return false;
  const type = v.slice(0, semi);
  if (!/^[A-Za-z0-9][A-Za-z0-9-]{0,31}$/.test(type)) return false;
  return isXtext(v.slice(semi + 1), utf8 && type.toLowerCase() === "utf-8");
}

/**
 * Validates the argument of HELO/EHLO: one word (a domain or an address literal in practice; we
 * accept any printable word, as Postfix does by default), at most `MAX_DOMAIN` octets.
 */
export function parseHeloArg(arg: string): Parsed<string> {
  const word = arg.split(" ")[0];
  if (word === "") return fail(501, "", "Syntax: EHLO hostname", "helo-missing");
  if (word.length > MAX_DOMAIN) return fail(501, "", "Hostname too long", "helo-too-long");
  return { ok: true, value: word };
}

/**
 * Splits `<path> params...`, validates the path and returns the address (route dropped) and the
 * space-separated parameters. `allowNull`: `<>` is allowed (MAIL only). `<postmaster>` without a
 * domain is allowed for RCPT (RFC 5321 §4.5.1).
 */
function splitPath(
  s: string,
  enhanced: string,
  allowNull: boolean,
): Parsed<{ address: string; params: string[] }> {
  const bad = (text: string, reason: string) => fail<never>(501, enhanced, text, reason);
  if (s[0] !== "<") return bad("Syntax error: address must be in angle brackets", "path-brackets");
  // Find the closing ">" outside a quoted string.
  let i = 1;
  let quoted = false;
  for (; i < s.length; i++) {
    const c = s[i];
    if (quoted) {
      if (c === "\\") i++;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === ">") break;
  }
  if (i >= s.length) return bad("Syntax error: missing >", "path-unclosed");
  const pathLen = octets(s.slice(0, i + 1));
  if (pathLen > MAX_PATH) return bad("Path too long", "path-too-long");
  let inner = s.slice(1, i);
  const rest = s.slice(i + 1);
  if (rest !== "" && rest[0] !== " ") return bad("Syntax error after address", "path-trailing");
  const params = rest.split(" ").filter((p) => p !== "");
  if (inner === "") {
    if (!allowNull) return bad("Null address not allowed here", "path-null");
    return { ok: true, value: { address: "", params } };
  }
  // RFC 5321 §4.1.2: A-d-l ":" Mailbox; the route MUST be accepted and SHOULD be ignored.
  if (inner[0] === "@") {
    const colon = inner.indexOf(":");
    if (colon < 0) return bad("Syntax error in source route", "path-route");
    for (const hop of inner.slice(0, colon).split(",")) {
      if (hop[0] !== "@" || !isDomain(hop.slice(1))) {
        return bad("Syntax error in source route", "path-route");
      }
    }
    inner = inner.slice(colon + 1);
  }
  const mailbox = checkMailbox(inner, !allowNull);
  if (mailbox !== undefined) return bad(mailbox.text, mailbox.reason);
  return { ok: true, value: { address: inner, params } };
}

/** Returns why `m` is not a valid Mailbox (local "@" domain), or undefined when it is. */
function checkMailbox(
  m: string,
  allowPostmaster: boolean,
): { text: string; reason: string } | undefined {
  let localEnd: number;
  if (m[0] === '"') {
    let i = 1;
    for (; i < m.length; i++) {
      const c = m[i];
      if (c === "\\") {
        i++;
        continue;
      }
      if (c === '"') break;
    }
    if (i >= m.length) return { text: "Syntax error in quoted local-part", reason: "local-quote" };
    localEnd = i + 1;
  } else {
    localEnd = m.indexOf("@");
    if (localEnd < 0) localEnd = m.length;
    for (let i = 0; i < localEnd; i++) {
      const c = m[i];
      if (!isAtext(c) && c !== ".") {
        return { text: "Bad address syntax", reason: "local-char" };
      }
    }
  }
  if (localEnd === 0) return { text: "Bad address syntax", reason: "local-empty" };
  if (octets(m.slice(0, localEnd)) > MAX_LOCAL_PART) {
    return { text: "Local-part too long", reason: "local-too-long" };
  }
  if (localEnd === m.length) {
    if (allowPostmaster && m.toLowerCase() === "postmaster") return undefined;
    return { text: "Address must have a domain", reason: "domain-missing" };
  }
  if (m[localEnd] !== "@") return { text: "Bad address syntax", reason: "local-trailing" };
  const domain = m.slice(localEnd + 1);
  if (octets(domain) > MAX_DOMAIN) return { text: "Domain too long", reason: "domain-too-long" };
  if (!isDomain(domain)) return { text: "Bad domain syntax", reason: "domain-syntax" };
  return undefined;
}

/** atext (RFC 5322 §3.2.3) plus UTF8-non-ascii (RFC 6531 §3.3); non-ASCII only reaches here
 * when SMTPUTF8 was offered (`parseCommandLine`). */
function isAtext(c: string): boolean {
  return (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") ||
    ATEXT_EXTRA.includes(c) || c.charCodeAt(0) > 0x9f;
}

const octetEncoder = new TextEncoder();

/** Length in octets (RFC 5321 §4.5.3.1 limits count octets, also for UTF-8). */
function octets(s: string): number {
  return isAscii(s) ? s.length : octetEncoder.encode(s).length;
}

/** A domain name (labels of letters, digits, "-", "_") or an address literal `[...]`. */
function isDomain(d: string): boolean {
  if (d.length === 0 || d.length > MAX_DOMAIN) return false;
  if (d[0] === "[") {
    if (d[d.length - 1] !== "]" || d.length < 3) return false;
    for (let i = 1; i < d.length - 1; i++) {
      const c = d[i];
      const ok = (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") ||
        c === "." || c === ":" || c === "-";
      if (!ok) return false;
    }
    return true;
  }
  for (const label of d.split(".")) {
    if (label.length === 0 || label.length > 63) return false;
    if (label[0] === "-" || label[label.length - 1] === "-") return false;
    for (const c of label) {
      // U-labels (RFC 6531 §3.3) are UTF-8 letters; they only get here under SMTPUTF8.
      const ok = (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") ||
        c === "-" || c === "_" || c.charCodeAt(0) > 0x9f;
      if (!ok) return false;
    }
  }
  return true;
}

function isParamKeyword(k: string): boolean {
  return /^[A-Z0-9][A-Z0-9-]{0,31}$/.test(k);
}

/** esmtp-value: 1*(%d33-60 / %d62-126) (RFC 5321 §4.1.2); controls were refused earlier. */
function isParamValue(v: string): boolean {
  if (v.length === 0 || v.length > 512) return false;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 33 || c > 126 || c === 61) return false;
  }
  return true;
}
