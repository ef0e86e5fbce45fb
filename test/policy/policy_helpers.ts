/** Shared fixture of the policy tests: the envelope a test judges with. */
import type { Envelope } from "../../src/policy/verdict.ts";

/** A transaction from a documentation client to a documentation server; `over` changes fields. */
export function policyEnvelope(over: Partial<Envelope> = {}): Envelope {
  return {
    mailFrom: "alice@example.com",
    rcptTo: ["bob@example.net"],
    client: { ip: "192.0.2.10", port: 40000 },
    server: { ip: "198.51.100.25", port: 25 },
    helo: "mail.example.com",
    tls: false,
    sessionId: "S1",
    transactionId: "S1.1",
    ...over,
  };
}
