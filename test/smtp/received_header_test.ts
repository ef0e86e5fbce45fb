import assert from "node:assert/strict";
import { addressLiteral, receivedHeader, rfc5322Date } from "../../src/smtp/received_header.ts";

const DATE = new Date(Date.UTC(2026, 10, 27, 22, 57, 1));

Deno.test("receivedHeader names the HELO, the real client address and the single recipient", () => {
  const h = receivedHeader({
    helo: "client.example",
    clientIp: "192.0.2.10",
    hostname: "mx.example",
    protocol: "ESMTP",
    id: "S1.1",
    recipients: ["bob@example.net"],
    date: DATE,
  });
  assert.equal(
    h,
    "Received: from client.example ([192.0.2.10])\r\n" +
      "\tby mx.example (SSG) with ESMTP id S1.1\r\n" +
      "\tfor <bob@example.net>; Fri, 27 Nov 2026 22:57:01 +0000\r\n",
  );
});

Deno.test("receivedHeader omits 'for' with several recipients and uses SMTP after HELO", () => {
  const h = receivedHeader({
    helo: "c",
    clientIp: "2001:db8::10",
    hostname: "mx.example",
    protocol: "SMTP",
    id: "x",
    recipients: ["a@example.net", "b@example.net"],
    date: DATE,
  });
  assert.equal(
    h,
    "Received: from c ([IPv6:2001:db8::10])\r\n\tby mx.example (SSG) with SMTP id x;\r\n" +
      "\tFri, 27 Nov 2026 22:57:01 +0000\r\n",
  );
});

Deno.test("receivedHeader never lets a HELO name inject text into the header", () => {
  for (const helo of ["a) by evil (", "x\r\nX-Injected: 1", "a;b", "", "a b"]) {
    const h = receivedHeader({
      helo,
      clientIp: "192.0.2.10",
      hostname: "mx.example",
      protocol: "ESMTP",
      id: "S1.1",
      recipients: [],
      date: DATE,
    });
    assert.ok(h.startsWith("Received: from unknown ([192.0.2.10])\r\n"), JSON.stringify(helo));
    for (const line of h.split("\r\n").slice(1, -1)) assert.ok(line.startsWith("\t"));
  }
});

Deno.test("rfc5322Date and addressLiteral format as the RFCs require", () => {
  assert.equal(
    rfc5322Date(new Date(Date.UTC(2027, 0, 3, 4, 5, 6))),
    "Sun, 3 Jan 2027 04:05:06 +0000",
  );
  assert.equal(addressLiteral("198.51.100.25"), "[198.51.100.25]");
  assert.equal(addressLiteral("2001:db8::25"), "[IPv6:2001:db8::25]");
});
