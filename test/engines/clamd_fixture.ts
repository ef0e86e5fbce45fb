/**
 * A real clamd for tests: started in the foreground on a Unix socket in a temp dir, with a
 * signature database the test writes itself (no network, no freshclam): the EICAR test file by
 * its MD5 (`Test.EICAR-HDB`) and a body pattern (`SSG.Test.Marker`). clamd appends `.UNOFFICIAL`
 * to the names of signatures from such files.
 */
import { join } from "node:path";

/** The 68-byte EICAR anti-virus test file. */
export const EICAR = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/** A byte pattern the test's .ndb signature matches anywhere. */
export const MARKER = "SSG-VIRUS-TEST-MARKER-0123456789";

/** A multipart message with one text part and `content` as a base64 attachment named `name`. */
export function messageWithAttachment(
  name: string,
  content: Uint8Array,
  from = "sender@example.org",
  to = "b@example.net",
): Uint8Array {
  const b64 = btoa(String.fromCharCode(...content)).replace(/.{76}/g, "$&\r\n");
  return new TextEncoder().encode([
    `From: <${from}>`,
    `To: <${to}>`,
    "Subject: the file you asked for",
    "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="b1"',
    "",
    "--b1",
    "Content-Type: text/plain; charset=UTF-8",
    "",
    "See attached.",
    "--b1",
    `Content-Type: application/octet-stream; name="${name}"`,
    "Content-Transfer-Encoding: base64",
    `Content-Disposition: attachment; filename="${name}"`,
    "",
    b64,
    "--b1--",
    "",
  ].join("\r\n"));
}

/** A running clamd; `stop()` ends it and removes its directory. */
export interface TestClamd {
  socket: string;
  dir: string;
  stop(): Promise<void>;
}

async function md5Hex(bytes: Uint8Array): Promise<string> {
  const p = new Deno.Command("md5sum", { stdin: "piped", stdout: "piped" }).spawn();
  const w = p.stdin.getWriter();
  await w.write(bytes);
  await w.close();
  const out = await p.output();
  return new TextDecoder().decode(out.stdout).slice(0, 32);
}

/** Starts clamd (bounded: 30 s until its socket exists). Fails when clamd is not installed. */
export async function startClamd(opts: { streamMaxLength?: string } = {}): Promise<TestClamd> {
  const dir = await Deno.makeTempDir({ prefix: "ssg-clamd-" });
  const db = join(dir, "db");
  await Deno.mkdir(db);
  const eicar = new TextEncoder().encode(EICAR);
  await Deno.writeTextFile(
    join(db, "test.hdb"),
    `${await md5Hex(eicar)}:${eicar.length}:Test.EICAR-HDB\n`,
  );
  const hex = [...new TextEncoder().encode(MARKER)].map((b) => b.toString(16).padStart(2, "0"))
    .join("");
  await Deno.writeTextFile(join(db, "test.ndb"), `SSG.Test.Marker:0:*:${hex}\n`);
  const socket = join(dir, "clamd.sock");
  await Deno.writeTextFile(
    join(dir, "clamd.conf"),
    [
      `LocalSocket ${socket}`,
      `DatabaseDirectory ${db}`,
      `Foreground yes`,
      `LogFile ${join(dir, "clamd.log")}`,
      `StreamMaxLength ${opts.streamMaxLength ?? "10M"}`,
      `PidFile ${join(dir, "clamd.pid")}`,
      "",
    ].join("\n"),
  );
  const child = new Deno.Command("/usr/sbin/clamd", {
    args: [`--config-file=${join(dir, "clamd.conf")}`],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let errText = "";
  void (async () => {
    for (;;) {
      const r = await stderr.read().catch(() => ({ done: true, value: "" }));
      if (r.done) return;
      errText += r.value;
    }
  })();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
    await child.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      if (Deno.statSync(socket).isSocket) return { socket, dir, stop };
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  await stop();
  throw new Error(`clamd did not open ${socket} within 30 s: ${errText}`);
}
