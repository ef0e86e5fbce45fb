import assert from "node:assert/strict";
import { join } from "node:path";
import { ClamdClient, parseReply } from "../../src/engines/clamd_client.ts";
import { EICAR, MARKER, messageWithAttachment, startClamd } from "./clamd_fixture.ts";

const CRLF = "\r\n";
const enc = (s: string) => new TextEncoder().encode(s);

/** A zip archive holding one file (made by python3's zipfile: a real archive for clamd). */
async function zipOf(name: string, content: string): Promise<Uint8Array> {
  const out = await new Deno.Command("/usr/bin/python3", {
    args: [
      "-c",
      "import io,sys,zipfile\nb=io.BytesIO()\nz=zipfile.ZipFile(b,'w',zipfile.ZIP_DEFLATED)\n" +
      "z.writestr(sys.argv[1],sys.argv[2])\nz.close()\nsys.stdout.buffer.write(b.getvalue())",
      name,
      content,
    ],
    stdout: "piped",
  }).output();
  assert.equal(out.code, 0);
  return out.stdout;
}

Deno.test("ClamdClient with a real clamd: EICAR, a pattern inside a zipped attachment, and clean mail", async () => {
  const clamd = await startClamd();
  try {
    const c = new ClamdClient({
      address: { path: clamd.socket },
      timeoutMs: 30_000,
      maxBytes: 5e6,
    });
    const cases: [string, Uint8Array, string | undefined][] = [
      [
        "the EICAR file as an attachment",
        messageWithAttachment("eicar.com", enc(EICAR)),
        "Test.EICAR-HDB.UNOFFICIAL",
      ],
      [
        "a marker in the body",
        enc(`Subject: x${CRLF}${CRLF}text ${MARKER} text${CRLF}`),
        "SSG.Test.Marker.UNOFFICIAL",
      ],
      [
        "a marker in a file inside a zip attachment",
        messageWithAttachment("a.zip", await zipOf("inner.txt", `x ${MARKER} y`)),
        "SSG.Test.Marker.UNOFFICIAL",
      ],
      ["a clean message", messageWithAttachment("notes.txt", enc("nothing to see")), undefined],
    ];
    for (const [what, message, signature] of cases) {
      const r = await c.scan(message);
      if (signature) assert.deepEqual(r, { status: "infected", signature }, what);
      else assert.deepEqual(r, { status: "clean" }, what);
    }
    // 200 KB crosses several INSTREAM chunks.
    const big = enc(
      `Subject: big${CRLF}${CRLF}${"clean line of text\r\n".repeat(10_000)}${MARKER}${CRLF}`,
    );
    assert.deepEqual(await c.scan(big), {
      status: "infected",
      signature: "SSG.Test.Marker.UNOFFICIAL",
    });
  } finally {
    await clamd.stop();
  }
});

Deno.test("ClamdClient: clamd's own size limit is an error, never clean", async () => {
  const clamd = await startClamd({ streamMaxLength: "1K" });
  try {
    const c = new ClamdClient({
      address: { path: clamd.socket },
      timeoutMs: 30_000,
      maxBytes: 5e6,
    });
    const r = await c.scan(enc(`Subject: x${CRLF}${CRLF}${"a".repeat(4000)}${CRLF}`));
    assert.equal(r.status, "error");
    assert.match(r.status === "error" ? r.reason : "", /size limit exceeded/);
  } finally {
    await clamd.stop();
  }
});

Deno.test("ClamdClient: down, silent and over the scan limit are errors with a reason", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ssg-clamd-down-" });
  try {
    const down = new ClamdClient({
      address: { path: join(dir, "none.sock") },
      timeoutMs: 2000,
      maxBytes: 1000,
    });
    const r1 = await down.scan(enc("x"));
    assert.equal(r1.status, "error");
    assert.match(r1.status === "error" ? r1.reason : "", /none\.sock/);

    const path = join(dir, "silent.sock");
    const listener = Deno.listen({ transport: "unix", path });
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const c of listener) held.push(c); // reads nothing, answers nothing
    })();
    const silent = new ClamdClient({ address: { path }, timeoutMs: 300, maxBytes: 1000 });
    const r2 = await silent.scan(enc("x"));
    assert.deepEqual(r2, { status: "error", reason: "no answer from clamd within 300 ms" });
    listener.close();
    for (const c of held) c.close();
    await accepting.catch(() => {});

    const r3 = await silent.scan(new Uint8Array(1001));
    assert.equal(r3.status, "error");
    assert.match(r3.status === "error" ? r3.reason : "", /over the scan limit of 1000/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseReply() reads OK and FOUND and calls anything else an error", () => {
  assert.deepEqual(parseReply("stream: OK"), { status: "clean" });
  assert.deepEqual(parseReply("stream: Win.Test.EICAR_HDB-1 FOUND"), {
    status: "infected",
    signature: "Win.Test.EICAR_HDB-1",
  });
  for (
    const bad of [
      "",
      "stream: ",
      "OK",
      "stream: OK FOUND\u0007",
      "INSTREAM size limit exceeded. ERROR",
      "stream:  FOUND",
    ]
  ) {
    assert.equal(parseReply(bad).status, "error", JSON.stringify(bad));
  }
});
