/**
 * Reads `smtp.tls: { cert: FILE, key: FILE }`: the responder's certificate and private key, PEM,
 * relative to the rule file. Both are read and checked at load — the certificate parses, the key
 * parses and belongs to the certificate — so a broken identity stops start-up with the position
 * of the offending key instead of failing every client's handshake later.
 *
 * Security: the key is secret. Messages name the file and the reason, never its content.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { dirname, isAbsolute, resolve } from "node:path";
import type { TlsIdentity } from "./config.ts";
import type { ReadTextFile } from "./read_policy_sections.ts";
import type { Fields, YamlReader } from "./yaml_reader.ts";

/** Keys of `smtp.tls`. */
export const TLS_KEYS = ["cert", "key"] as const;

// deno-lint-ignore no-control-regex
const PATH_RE = /^[^\x00-\x1f\x7f]+$/;

/** Validates `smtp.tls` (already known to be a mapping with only `TLS_KEYS`). */
export function readTlsIdentity(
  f: Fields,
  r: YamlReader,
  file: string,
  readText: ReadTextFile,
): TlsIdentity | undefined {
  const before = r.issues.length;
  for (const k of TLS_KEYS) {
    if (!f.has(k)) r.report(f.node, `"smtp.tls.${k}" is missing; give the PEM ${k} file`);
  }
  if (r.issues.length !== before) return undefined;
  const read = (k: "cert" | "key"): { rel: string; text: string } | undefined => {
    const rel = r.string(f.get(k), `"smtp.tls.${k}"`, {
      max: 4096,
      pattern: PATH_RE,
      patternText: "a path without control characters",
    }, f.key(k));
    if (rel === undefined) return undefined;
    const path = isAbsolute(rel) ? rel : resolve(dirname(file), rel);
    try {
      return { rel, text: readText(path) };
    } catch (e) {
      const why = e instanceof TypeError ? "not valid UTF-8" : (e as Error).message;
      r.report(f.get(k), `cannot read "smtp.tls.${k}" file "${rel}" (${path}): ${why}`);
      return undefined;
    }
  };
  const cert = read("cert");
  const key = read("key");
  if (!cert || !key) return undefined;
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert.text);
  } catch (e) {
    r.report(
      f.get("cert"),
      `"smtp.tls.cert" file "${cert.rel}" is not a PEM certificate: ${(e as Error).message}`,
    );
    return undefined;
  }
  try {
    const pk = createPrivateKey(key.text);
    if (!x509.checkPrivateKey(pk)) {
      r.report(
        f.get("key"),
        `"smtp.tls.key" file "${key.rel}" does not belong to the certificate "${cert.rel}"`,
      );
      return undefined;
    }
  } catch (e) {
    r.report(
      f.get("key"),
      `"smtp.tls.key" file "${key.rel}" is not a PEM private key: ${(e as Error).message}`,
    );
    return undefined;
  }
  return {
    certFile: cert.rel,
    keyFile: key.rel,
    cert: cert.text,
    key: key.text,
    subject: x509.subject.replaceAll("\n", ", "),
    validTo: x509.validTo,
  };
}
