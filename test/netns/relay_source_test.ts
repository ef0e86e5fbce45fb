/**
 * relay.source end to end: which address a real Postfix server sees for mail that crossed SSG.
 *
 * ```
 *   client ns                 gateway ns (dist/ssg)                    server ns
 *   192.0.2.10  ──────────  192.0.2.1 | 198.51.100.1  ──────────  198.51.100.25 Postfix 3.7
 *   2001:db8:1::10           2001:db8:1::1 | 2001:db8:25::1         2001:db8:25::25
 *   swaks                      relay leg: C:port → S:25 (client)      mynetworks 198.51.100.0/24
 *                                      or  G → S:25 + XCLIENT         (its own subnet, incl. G)
 *                                                                     xclient hosts: 198.51.100.1
 *   (fallback case: the server's default route points at 198.51.100.99, nobody: its replies to
 *    the client do not pass the gateway)
 * ```
 *
 * The server is a real Postfix instance (private `-c DIR` config, queue and maillog in a temp
 * dir, `smtpd_client_port_logging = yes`), because the question is what the server's own
 * access rules decide: its `mynetworks` contains the gateway, so a server that sees the gateway's
 * address relays for anyone — the open relay issue 7 found. Everything is bounded and removed by
 * the topology and the `finally` blocks, also on failure.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  e2e,
  eventually,
  finalReply,
  simpleMessage,
  swaks,
  swaksReplies,
  type World,
} from "./helpers.ts";
import type { Topology } from "./topology.ts";

/** A running private Postfix in the server namespace. */
interface PostfixServer extends AsyncDisposable {
  dir: string;
  /** The maillog from byte `from` on. */
  log(from?: number): string;
  /** Current size of the maillog (to read only what follows). */
  mark(): number;
}

function mainCf(dir: string, t: Topology, xclient = true): string {
  return `# Written by test/netns/relay_source_test.ts
compatibility_level = 3.6
queue_directory = ${dir}/spool
data_directory = ${dir}/data
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
command_directory = /usr/sbin
mail_owner = postfix
setgid_group = postdrop
maillog_file = ${dir}/maillog
maillog_file_prefixes = ${dir}
inet_interfaces = ${t.addr.server4}, ${t.addr.server6}
inet_protocols = all
myhostname = mx.server.test
mydomain = server.test
mydestination = example.net
local_recipient_maps =
local_transport = discard:delivered
default_transport = discard:relayed
alias_maps =
alias_database =
# The server trusts its own subnet — which contains the gateway (198.51.100.1).
mynetworks = 127.0.0.0/8 198.51.100.0/24 [2001:db8:25::]/64
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# The server's own client blacklist (check_client_access): one client address it refuses.
smtpd_client_restrictions = check_client_access inline:{ 192.0.2.11=REJECT }
smtpd_authorized_xclient_hosts = ${xclient ? `${t.addr.gwServer4} [${t.addr.gwServer6}]` : ""}
smtpd_authorized_xforward_hosts = ${t.addr.gwServer4} [${t.addr.gwServer6}]
smtpd_client_port_logging = yes
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
# STARTTLS offered (a throwaway self-signed certificate): the relay leg is encrypted in every
# case here, so XCLIENT is also shown to work after STARTTLS.
smtpd_tls_security_level = may
smtpd_tls_cert_file = ${dir}/server.crt
smtpd_tls_key_file = ${dir}/server.key
biff = no
`;
}

function masterCf(template: string): string {
  return template.split("\n").map((line) => {
    if (/^\s|^#|^$/.test(line)) return line;
    const f = line.split(/\s+/);
    if (f.length < 8) return line;
    f[4] = "n"; // no chroot tree in a private instance
    return f.join(" ");
  }).join("\n");
}

async function startPostfixServer(w: World, xclient = true): Promise<PostfixServer> {
  const t = w.t;
  const dir = join(w.dir, "postfix");
  await Deno.mkdir(join(dir, "spool"), { recursive: true });
  await Deno.chmod(w.dir, 0o755);
  await Deno.chmod(dir, 0o755);
  await Deno.writeTextFile(join(dir, "main.cf"), mainCf(dir, t, xclient));
  const made = await new Deno.Command("openssl", {
    args: ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.server.test"]
      .concat(["-days", "1", "-keyout", join(dir, "server.key"), "-out", join(dir, "server.crt")]),
    stdout: "null",
    stderr: "null",
  }).output();
  assert.ok(made.success, "openssl req");
  await Deno.writeTextFile(
    join(dir, "master.cf"),
    masterCf(await Deno.readTextFile("/etc/postfix/master.cf")),
  );
  // The postfix command prints fatal errors only to a terminal: run it under script(1).
  const pf = (args: string, timeoutMs = 60_000) =>
    t.exec(t.ns.server, ["script", "-qec", `postfix -c ${dir} ${args}`, "/dev/null"], {
      timeoutMs,
    });
  const started = await pf("start");
  if (started.code !== 0) {
    await pf("abort", 15_000);
    throw new Error(`postfix -c ${dir} start failed: ${started.stdout}${started.stderr}`);
  }
  const logFile = join(dir, "maillog");
  const read = () => {
    try {
      return Deno.readTextFileSync(logFile);
    } catch {
      return "";
    }
  };
  try {
    await t.waitForPort(t.ns.gateway, t.addr.server4, 25, 30_000);
  } catch (e) {
    await pf("stop", 30_000);
    throw new Error(`postfix did not listen: ${e}\n${read()}`);
  }
  return {
    dir,
    log: (from = 0) => read().slice(from),
    mark: () => read().length,
    async [Symbol.asyncDispose]() {
      await pf("stop", 30_000);
    },
  };
}

/** Rewrites the world's rule file with `relay:` source settings. */
async function setRelaySource(w: World, lines: string[]): Promise<void> {
  const text = await Deno.readTextFile(w.ruleFile);
  const next = text.replace(/^relay:\n/m, `relay:\n${lines.map((l) => `  ${l}\n`).join("")}`);
  assert.notEqual(next, text, "the rule file has a relay: section to extend");
  await Deno.writeTextFile(w.ruleFile, next);
}

/** Postfix's "QUEUEID: client=unknown[IP]:PORT" (accepted mail) or "connect from ..." (TCP peer). */
function peers(log: string, what: "client=" | "connect from "): { ip: string; port: number }[] {
  // ": " so that "disconnect from" (logged with the XCLIENT identity) is not counted.
  const re = new RegExp(`: ${what}[^\\[\\s]*\\[([0-9a-fA-F:.]+)\\]:([0-9]+)`, "g");
  return [...log.matchAll(re)].map((m) => ({ ip: m[1], port: Number(m[2]) }));
}

/** Postfix's reject_unauth_destination (relay_domains_reject_code 554). */
const RELAY_DENIED = /^554 5\.7\.1 <victim@elsewhere\.example>: Relay access denied$/;

const CLEAN = simpleMessage("quarterly figures", "Nothing to see here.", "relay-source");

/** One accepted message from the client, with the client's source port fixed to `port`. */
async function sendClean(w: World, port: number, server: string = w.t.addr.server4): Promise<void> {
  const file = await w.message(`clean-${port}.eml`, CLEAN);
  const r = await swaks(w.t, {
    server,
    to: ["b@example.net"],
    dataFile: file,
    extra: ["--local-port", String(port)],
  });
  assert.equal(r.code, 0, `swaks failed:\n${r.transcript}`);
  assert.equal(finalReply(r.transcript)?.code, 250, r.transcript);
}

/** The reply to RCPT for an address the server does not serve (a relay attempt). */
async function relayAttempt(
  w: World,
  to = "victim@elsewhere.example",
  from?: string,
): Promise<string | undefined> {
  const r = await swaks(w.t, {
    server: w.t.addr.server4,
    to: [to],
    extra: ["--quit-after", "RCPT", ...(from ? ["--local-interface", from] : [])],
  });
  const reply = swaksReplies(r.transcript).find((x) => x.after.startsWith("RCPT TO"));
  return reply && `${reply.code} ${reply.text}`;
}

/** SSG's own mail: an alert, delivered by SSG to the same Postfix. */
const ALERT = {
  extraSections: `alert:
  to: [postmaster@example.net]
  relay: "198.51.100.25:25"
  from: ssg@gateway.example.net
`,
  extraRules: `  - name: tell-the-admin
    when:
      subject: { contains: ["alert-trigger"] }
    action: [discard, alert]
`,
};

e2e(
  "relay.source client: the server sees the client's address (and from the second connection its port), refuses an outside client's relay attempt and its own blacklisted client exactly as direct; SSG's own alert keeps the gateway's address",
  ALERT,
  async (w) => {
    await using server = await startPostfixServer(w);
    // Direct (no SSG): what the server itself decides for this client, and for a client
    // address it blacklists itself (192.0.2.11, a second address of the client namespace).
    const added = await w.t.exec(w.t.ns.client, [
      "ip",
      "addr",
      "add",
      "192.0.2.11/24",
      "dev",
      "eth0",
    ]);
    assert.equal(added.code, 0, added.stderr);
    const direct = await relayAttempt(w);
    assert.match(
      direct ?? "",
      RELAY_DENIED,
      "direct: Postfix refuses to relay for an outside client",
    );
    const directBlocked = await relayAttempt(w, "b@example.net", "192.0.2.11:40031");
    assert.match(directBlocked ?? "", /^554 5\.7\.1 .*Client host rejected: Access denied/);

    await setRelaySource(w, [
      "source: client",
      "source_ports: 61000-61099",
      "source_probe_timeout: 1s",
    ]);
    const ssg = await w.startSsg();
    const before = server.mark();
    await sendClean(w, 40001);
    await sendClean(w, 40002);
    const log = server.log(before);
    const connects = peers(log, "connect from ");
    assert.equal(connects.length, 2, `two connections reached the server:\n${log}`);
    for (const c of connects) assert.equal(c.ip, w.t.addr.client4, "the server saw the client");
    assert.ok(
      connects[0].port >= 61000 && connects[0].port <= 61099,
      `first contact uses the relay socket's own port on the wire, got ${connects[0].port}`,
    );
    assert.equal(connects[1].port, 40002, "once the route is proven, the client's own port");
    assert.doesNotMatch(log, /198\.51\.100\.1\]/, "the gateway's address never reached the server");
    await ssg.assertLog(
      /\brelay\.connect\b.*\btls="TLSv1\.3 .*\bsource=client\b.*\bannounced=source\b/,
    );

    assert.equal(await relayAttempt(w), direct, "through SSG: refused exactly as direct");
    assert.equal(
      await relayAttempt(w, "b@example.net", "192.0.2.11:40032"),
      directBlocked?.replace("]:40031>", "]:40032>"),
      "the server's own check_client_access refuses the blacklisted client through SSG as direct",
    );

    // IPv6: the same, with its own route verdict (a first contact again).
    const before6 = server.mark();
    await sendClean(w, 40003, w.t.addr.server6);
    await sendClean(w, 40004, w.t.addr.server6);
    const connects6 = peers(server.log(before6), "connect from ");
    assert.deepEqual(
      connects6.map((c) => c.ip),
      [w.t.addr.client6, w.t.addr.client6],
      `IPv6: the server saw the client:\n${server.log(before6)}`,
    );
    assert.ok(connects6[0].port >= 61000 && connects6[0].port <= 61099);
    assert.equal(connects6[1].port, 40004);

    // SSG's own mail: the alert for a discarded message comes from the gateway's address.
    const beforeAlert = server.mark();
    const trigger = await w.message(
      "trigger.eml",
      simpleMessage("alert-trigger now", "x", "relay-source-alert"),
    );
    const sent = await swaks(w.t, {
      server: w.t.addr.server4,
      to: ["b@example.net"],
      dataFile: trigger,
    });
    assert.equal(finalReply(sent.transcript)?.code, 250, sent.transcript);
    assert.ok(
      await eventually(() => /from=<>/.test(server.log(beforeAlert)), 10_000),
      `the alert reached the server:\n${server.log(beforeAlert)}`,
    );
    const alertLog = server.log(beforeAlert);
    const alertId = /([0-9A-F]{6,}): from=<>,/.exec(alertLog)?.[1];
    assert.ok(alertId, alertLog);
    assert.match(
      alertLog,
      new RegExp(`${alertId}: client=unknown\\[${w.t.addr.gwServer4.replaceAll(".", "\\.")}\\]:`),
      `the alert came from the gateway's address:\n${alertLog}`,
    );
    assert.doesNotMatch(ssg.log(), /relay\.source_fallback/);
  },
);

e2e(
  "relay.source client with the server's route to the client bypassing the gateway: fallback to the gateway's address with XCLIENT, logged; the relay attempt is still refused",
  {},
  async (w) => {
    const t = w.t;
    // The server's replies to 192.0.2.0/24 go to a next hop that does not exist.
    const r = await t.exec(t.ns.server, [
      "ip",
      "route",
      "replace",
      "default",
      "via",
      "198.51.100.99",
    ]);
    assert.equal(r.code, 0, r.stderr);
    await using server = await startPostfixServer(w);
    await setRelaySource(w, ["source_ports: 61000-61099", "source_probe_timeout: 500ms"]);
    const ssg = await w.startSsg();
    const before = server.mark();
    const t0 = performance.now();
    await sendClean(w, 40011);
    const firstMs = performance.now() - t0;
    await sendClean(w, 40012);
    assert.match(await relayAttempt(w) ?? "", RELAY_DENIED, "XCLIENT told the server the client");
    const log = server.log(before);
    const connects = peers(log, "connect from ");
    assert.ok(connects.length >= 3, `the server got the relay connections:\n${log}`);
    for (const c of connects) {
      assert.equal(c.ip, t.addr.gwServer4, `TCP peer is the gateway:\n${log}`);
    }
    const accepted = peers(log, "client=");
    assert.deepEqual(
      accepted.map((a) => `${a.ip}:${a.port}`),
      [`${t.addr.client4}:40011`, `${t.addr.client4}:40012`],
      `XCLIENT ADDR/PORT: the server logged the real client for each message:\n${log}`,
    );
    assert.ok(
      await eventually(() => /\brelay\.source_fallback\b/.test(ssg.log()), 2_000),
      "relay.source_fallback logged",
    );
    const fallbacks = ssg.log().match(/^.*\brelay\.source_fallback\b.*$/gm) ?? [];
    assert.equal(fallbacks.length, 1, "the fallback is decided once and cached");
    assert.match(fallbacks[0], /server=198\.51\.100\.25:25/);
    assert.match(fallbacks[0], /reason=.*route to the client/);
    assert.match(
      ssg.log(),
      /\brelay\.connect\b.*\btls="TLSv1\.3 .*\bsource=gateway\b.*\bannounced=xclient\b/,
    );
    console.log(`first message with the fallback probe: ${firstMs.toFixed(0)} ms`);
  },
);

e2e(
  "relay.source gateway: the server sees the gateway, and XCLIENT carries the client so the relay attempt is still refused; an XCLIENT connection is never reused (one per session)",
  {},
  async (w) => {
    await using server = await startPostfixServer(w);
    await setRelaySource(w, ["source: gateway", "reuse_idle: 30s"]);
    const ssg = await w.startSsg();
    const before = server.mark();
    await sendClean(w, 40021);
    assert.match(await relayAttempt(w) ?? "", RELAY_DENIED);
    await sendClean(w, 40022);
    const log = server.log(before);
    const tcpPeers = peers(log, "connect from ");
    for (const c of tcpPeers) assert.equal(c.ip, w.t.addr.gwServer4);
    assert.equal(tcpPeers.length, 3, `one relay connection per session:\n${log}`);
    assert.deepEqual(
      peers(log, "client=").map((a) => `${a.ip}:${a.port}`),
      [`${w.t.addr.client4}:40021`, `${w.t.addr.client4}:40022`],
    );
    await ssg.assertLog(/\brelay\.connect\b.*\bsource=gateway\b.*\bannounced=xclient\b/);
    assert.doesNotMatch(ssg.log(), /relay\.reuse|relay\.source_fallback|during=reuse/);
  },
);

e2e(
  "relay.source gateway with a server that takes XFORWARD only: the sessions share one kept connection, each MAIL preceded by its own client's XFORWARD, every message delivered",
  {},
  async (w) => {
    await using server = await startPostfixServer(w, false);
    await setRelaySource(w, ["source: gateway", "reuse_idle: 30s"]);
    const ssg = await w.startSsg();
    const before = server.mark();
    const ports = [40031, 40032, 40033, 40034];
    for (const port of ports) await sendClean(w, port);
    const log = server.log(before);
    const tcpPeers = peers(log, "connect from ");
    // The first session asks the server's QUIT itself (SSG learns its goodbye text); the other
    // three share one connection.
    assert.equal(tcpPeers.length, 2, `two relay connections for four sessions:\n${log}`);
    const origins = [...log.matchAll(/: client=\S+, orig_client=[^\[]*\[([0-9.]+)\]:([0-9]+)/g)];
    assert.deepEqual(
      origins.map((m) => `${m[1]}:${m[2]}`),
      ports.map((p) => `${w.t.addr.client4}:${p}`),
      `XFORWARD told the server each message's own client:\n${log}`,
    );
    await ssg.assertLog(/\brelay\.connect\b.*\bsource=gateway\b.*\bannounced=xforward\b/);
    await ssg.assertLog(/\brelay\.reuse\b.*\bsessions=3\b.*\bannounced=xforward\b/);
    assert.doesNotMatch(ssg.log(), /relay\.error/);
    // At stop the kept connection gets its QUIT, and the counters say what happened.
    assert.equal((await ssg.stop("SIGTERM")).code, 0);
    assert.match(ssg.log(), /\bssg\.stats\b.*\brelayKept=3\b.*\brelayReused=2\b/);
    assert.ok(
      await eventually(
        () => (server.log(before).match(/disconnect from .*\bquit=1\b/g) ?? []).length === 2,
        5_000,
      ),
      `both connections, the kept one too, were closed with QUIT:\n${server.log(before)}`,
    );
  },
);
