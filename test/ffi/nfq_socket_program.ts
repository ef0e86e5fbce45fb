/**
 * Exercises NfqSocket against the real kernel inside a fresh network namespace (run it under
 * `unshare -n`; loopback only, UDP to 127.0.0.1:9). Prints one JSON line. Used by
 * `nfq_socket_test.ts`.
 *
 *   verdicts QUEUE   10 datagrams queued; even ones accepted with a mark, odd ones dropped,
 *                    all verdicts in one send(); counts what was marked and what arrived
 *   enobufs QUEUE    a tiny receive buffer and a burst while not reading: ENOBUFS is counted
 *                    and reading goes on
 */
import { NfqSocket } from "../../ffi/nfq_socket.ts";
import {
  NF_ACCEPT,
  NF_DROP,
  parseDatagram,
  QueuedPacket,
  VerdictWriter,
} from "../../ffi/nfnetlink.ts";

const [mode, q] = Deno.args;
const queue = Number(q);
const out = (o: unknown) => console.log(JSON.stringify(o));
setTimeout(() => Deno.exit(3), 20_000);

async function sh(...cmd: string[]): Promise<string> {
  const r = await new Deno.Command(cmd[0], { args: cmd.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  if (!r.success) throw new Error(`${cmd.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
  return new TextDecoder().decode(r.stdout);
}

/** Sends `n` UDP datagrams of `size` bytes to 127.0.0.1:9 from a separate process. */
function sender(n: number, size: number): Deno.ChildProcess {
  return new Deno.Command("python3", {
    args: [
      "-c",
      `import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(${n}): s.sendto(bytes([i % 256]) * ${size}, ("127.0.0.1", 9))`,
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
}

await sh("ip", "link", "set", "lo", "up");
await sh(
  "iptables",
  "-t",
  "raw",
  "-A",
  "OUTPUT",
  "-p",
  "udp",
  "--dport",
  "9",
  "-j",
  "NFQUEUE",
  "--queue-num",
  String(queue),
);

const pkt = new QueuedPacket();
function drain(
  s: NfqSocket,
  w: VerdictWriter,
  decide: (p: QueuedPacket, i: number) => [number, number?],
  ms: number,
): number {
  let seen = 0;
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const n = s.receive();
    for (let i = 0; i < n; i++) {
      parseDatagram(s.buffer, s.view, s.start(i), s.start(i) + s.length(i), {
        packet: (p) => {
          const [verdict, mark] = decide(p, seen++);
          w.put(p.id, verdict, undefined, mark);
        },
        error: () => {},
        malformed: () => {},
      }, pkt);
    }
    if (w.count > 0) {
      s.send(w.view());
      w.clear();
    }
  }
  return seen;
}

if (mode === "verdicts") {
  await sh(
    "iptables",
    "-t",
    "mangle",
    "-A",
    "OUTPUT",
    "-p",
    "udp",
    "--dport",
    "9",
    "-m",
    "mark",
    "--mark",
    "0x53470000",
  );
  // A receiver that counts what gets through (bounded: 1.5 s idle).
  const rx = new Deno.Command("python3", {
    args: [
      "-c",
      `import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(("127.0.0.1", 9))\ns.settimeout(1.5)\nn=0\ntry:\n  while True: s.recv(2048); n+=1\nexcept Exception: pass\nprint(n)`,
    ],
    stdout: "piped",
  }).spawn();
  await new Promise((r) => setTimeout(r, 300));
  const s = NfqSocket.open({ queueNum: queue, maxlen: 1024, rcvbuf: 1 << 20, slots: 4 });
  await sender(10, 100).status;
  const w = new VerdictWriter(queue, 64 * 1024);
  const seen = drain(s, w, (_p, i) => (i % 2 === 0 ? [NF_ACCEPT, 0x53470000] : [NF_DROP]), 1000);
  s.close();
  s.close();
  const arrived = Number(new TextDecoder().decode((await rx.output()).stdout).trim());
  const counters = await sh("iptables", "-t", "mangle", "-L", "OUTPUT", "-v", "-x", "-n");
  const marked = Number(
    counters.split("\n").find((l) => l.includes("MARK match") || l.includes("mark match"))?.trim()
      .split(/\s+/)[0],
  );
  out({ seen, arrived, marked });
} else if (mode === "enobufs") {
  // SO_RCVBUFFORCE 4 KiB: a couple of queued packets fill it; the kernel then drops (fail closed).
  const s = NfqSocket.open({ queueNum: queue, maxlen: 4096, rcvbuf: 4096, slots: 8 });
  await sender(500, 1000).status;
  const w = new VerdictWriter(queue, 64 * 1024);
  const seen = drain(s, w, () => [NF_ACCEPT], 500);
  // Reading goes on after the error: a later packet is still received.
  await sender(1, 100).status;
  const later = drain(s, w, () => [NF_ACCEPT], 300);
  out({ seen, later, enobufs: s.enobufs, rcvbuf: s.rcvbuf });
  s.close();
}
Deno.exit(0);
