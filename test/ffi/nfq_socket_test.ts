/**
 * NfqSocket against the real kernel, each case in a fresh network namespace (`unshare -n`,
 * loopback only). Root only; ignored otherwise.
 */
import assert from "node:assert/strict";
import { granted, isRoot } from "./test_permissions.ts";

const PROGRAM = new URL("./nfq_socket_program.ts", import.meta.url).pathname;
const root = isRoot() && granted("run");

async function program(...args: string[]) {
  const r = await new Deno.Command("unshare", {
    args: ["-n", Deno.execPath(), "run", "--allow-all", PROGRAM, ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const text = new TextDecoder().decode(r.stdout).trim();
  assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
  return JSON.parse(text.split("\n").pop()!);
}

Deno.test({
  name:
    "NfqSocket delivers a batch of verdicts in one send: accepted ones carry the mark, dropped ones vanish",
  ignore: !root,
  async fn() {
    const r = await program("verdicts", "41");
    assert.deepEqual(r, { seen: 10, arrived: 5, marked: 5 });
  },
});

Deno.test({
  name: "NfqSocket counts ENOBUFS when its receive buffer overflows and keeps reading",
  ignore: !root,
  async fn() {
    const r = await program("enobufs", "42");
    assert.ok(r.enobufs >= 1, `enobufs ${r.enobufs}`);
    assert.ok(r.seen >= 1 && r.seen < 500, `seen ${r.seen} of 500`);
    assert.equal(r.later, 1, "a packet after the overflow is still received");
  },
});
