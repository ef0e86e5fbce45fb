/**
 * What the sender-authentication tests share: RSA keys made by the test (node:crypto), the DNS
 * records that publish them with SPF and DMARC policies (dnsmasq lines for `startDnsmasq`), and
 * messages the test DKIM-signs or ARC-seals itself with mailauth. No key or record comes from
 * outside the test.
 */
import { generateKeyPairSync } from "node:crypto";
// @ts-types="../../src/engines/auth/mailauth_types.d.ts"
import { dkimSign, sealMessage } from "mailauth";

/** A DKIM key pair: the PEM private key and the TXT record's value. */
export interface TestKey {
  privateKey: string;
  /** `v=DKIM1; k=rsa; p=...` */
  record: string;
}

/** A fresh RSA key (1024 bits: mailauth's minimum, and its record fits one TXT string). */
export function makeKey(bits = 1024): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: bits });
  const p = publicKey.export({ type: "spki", format: "der" }).toString("base64");
  return {
    privateKey: privateKey.export({ type: "pkcs8", format: "pem" }) as string,
    record: `v=DKIM1; k=rsa; p=${p}`,
  };
}

/** A dnsmasq `txt-record=` line; the value is cut into 200-character strings (RFC 7208 §3.3). */
export function txt(name: string, value: string): string {
  const parts: string[] = [];
  for (let i = 0; i < value.length; i += 200) parts.push(JSON.stringify(value.slice(i, i + 200)));
  return `txt-record=${name},${parts.join(",")}`;
}

/** Keys of the test domains. */
export interface AuthKeys {
  /** d=example.org s=sel. */
  org: TestKey;
  /** d=forwarder.example.net s=arc (ARC sealer). */
  arc: TestKey;
}

/**
 * The zone the tests use:
 * - example.org: SPF `ip4:192.0.2.0/24 -all`, DKIM key sel._domainkey, DMARC p=reject;
 * - soft.example.net: SPF `~all`, DMARC p=quarantine; neutral.example.net: SPF `?all`;
 * - nospf.example.com: no SPF, no DMARC (but an A record, so it exists);
 * - forwarder.example.net: the ARC sealer's key arc._domainkey.
 * `local=` makes every other name under org/net/com NXDOMAIN instead of unanswered.
 */
export function authZone(keys: AuthKeys): string[] {
  return [
    "local=/org/",
    "local=/net/",
    "local=/com/",
    txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all"),
    txt("sel._domainkey.example.org", keys.org.record),
    txt("_dmarc.example.org", "v=DMARC1; p=reject"),
    txt("soft.example.net", "v=spf1 ~all"),
    txt("_dmarc.soft.example.net", "v=DMARC1; p=quarantine"),
    txt("neutral.example.net", "v=spf1 ?all"),
    "host-record=nospf.example.com,198.51.100.99",
    txt("arc._domainkey.forwarder.example.net", keys.arc.record),
  ];
}

const encoder = new TextEncoder();

/** A plain message From `from` (CRLF line ends). */
export function message(from: string, subject = "Quarterly report", body = "Hello.\r\n"): string {
  return [
    `From: Alice <${from}>`,
    "To: bob@corp.example",
    `Subject: ${subject}`,
    "Date: Mon, 30 Nov 2026 07:00:00 +0000",
    `Message-ID: <${crypto.randomUUID()}@${from.split("@")[1]}>`,
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    body,
  ].join("\r\n");
}

/** `text` with a DKIM-Signature of d=`domain` s=`selector` on top. */
export async function dkimSigned(
  text: string,
  key: TestKey,
  domain = "example.org",
  selector = "sel",
): Promise<string> {
  const r = await dkimSign(text, {
    signatureData: [{ signingDomain: domain, selector, privateKey: key.privateKey }],
  });
  if (r.errors.length) throw new Error(`dkimSign failed: ${JSON.stringify(r.errors)}`);
  return r.signatures + text;
}

/** `text` with an ARC set (i=1, cv=none) by forwarder.example.net on top. */
export async function arcSealed(text: string, key: TestKey): Promise<string> {
  const headers = await sealMessage(text, {
    signingDomain: "forwarder.example.net",
    selector: "arc",
    privateKey: key.privateKey,
    authResults: "forwarder.example.net; dkim=pass header.d=example.org",
    cv: "none",
  });
  return new TextDecoder().decode(headers) + text;
}

/** UTF-8 bytes. */
export function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}
