/**
 * `host:port` as written in the rule file for SMTP servers (alert relay, redirect and bcc
 * targets): "198.51.100.25:25", "[2001:db8::25]:25", "mail.example:2525", or a host alone (the
 * default port). Host names are checked for syntax only (RFC 1123 labels); nothing is resolved at
 * load, so a check never depends on DNS.
 */
import { parseIpv4, parseIpv6 } from "../packet/ip_address.ts";

/** An SMTP server address. */
export interface HostPort {
  /** IP address (IPv6 without brackets) or host name, not resolved. */
  host: string;
  /** TCP port, 1 to 65535. */
  port: number;
}

const LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
const HOSTNAME_RE = new RegExp(`^(?=.{1,253}$)${LABEL}(?:\\.${LABEL})*\\.?$`);

/**
 * Parses `text`; returns the address, or a string saying what is wrong (for the loader's
 * message). A bare IPv6 address must be bracketed when a port follows.
 */
export function parseHostPort(text: string, defaultPort = 25): HostPort | string {
  const t = text.trim();
  let host = t;
  let portText: string | undefined;
  if (t.startsWith("[")) {
    const close = t.indexOf("]");
    if (close < 0) return `"${t}" has "[" without "]"`;
    host = t.slice(1, close);
    const rest = t.slice(close + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) return `"${t}": expected ":port" after "]"`;
      portText = rest.slice(1);
    }
    if (!parseIpv6(host)) return `"${host}" is not an IPv6 address`;
  } else {
    const colons = t.split(":").length - 1;
    if (colons === 1) {
      host = t.slice(0, t.indexOf(":"));
      portText = t.slice(t.indexOf(":") + 1);
    } else if (colons > 1) {
      if (parseIpv6(t)) return { host: t, port: defaultPort };
      return `"${t}" is not host:port (write an IPv6 address with a port as [2001:db8::1]:25)`;
    }
    if (!parseIpv4(host) && !HOSTNAME_RE.test(host)) {
      return `"${host}" is not an IP address or host name`;
    }
  }
  let port = defaultPort;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      return `"${portText}" is not a port (1 to 65535)`;
    }
    port = Number(portText);
  }
  return { host, port };
}
