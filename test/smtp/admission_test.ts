import assert from "node:assert/strict";
import {
  Admission,
  clientNetwork,
  SHED_MIN_AGE_MS,
  SHED_SLOW_BYTES,
  STRESS_HOLD_MS,
  STRESS_MAX_ERRORS,
  STRESS_TIMEOUT_S,
  type Ticket,
} from "../../src/smtp/admission.ts";
import { smtpConfig } from "./harness.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

/** An admission on a hand-driven clock; `shed` records which sessions were told to end. */
function setup(over: Parameters<typeof smtpConfig>[0] = {}) {
  let now = 0;
  const shed: string[] = [];
  const a = new Admission(
    smtpConfig({
      maxSessions: 100,
      maxSessionsPerClient: 100,
      maxSessionsPerNetwork: 100,
      ...over,
    }),
    () => now,
  );
  let n = 0;
  const admit = (ip: string) => {
    const id = `s${++n}`;
    return { id, r: a.admit(id, ip, () => shed.push(id)) };
  };
  const ticket = (x: ReturnType<typeof admit>): Ticket => {
    assert.ok(x.r.ok, `${x.id} admitted`);
    return x.r.ticket;
  };
  return { a, shed, admit, ticket, advance: (ms: number) => now += ms };
}

Deno.test("clientNetwork() groups IPv4 by /24 and IPv6 by /64 (configurable)", () => {
  const p = { ipv4: 24, ipv6: 64 };
  assert.equal(clientNetwork("192.0.2.77", p), "192.0.2.0/24");
  assert.equal(clientNetwork("2001:db8:1:2:3:4:5:6", p), "2001:db8:1:2::/64");
  assert.equal(clientNetwork("::ffff:192.0.2.9", p), "192.0.2.0/24");
  assert.equal(clientNetwork("198.51.100.200", { ipv4: 25, ipv6: 48 }), "198.51.100.128/25");
});

Deno.test("Admission: max_sessions_per_network − 1, at, + 1 from one /24 (none sheddable): only the one past it is refused", () => {
  const { admit, shed } = setup({ maxSessionsPerNetwork: 3 });
  assert.ok(admit("192.0.2.1").r.ok, "limit − 2");
  assert.ok(admit("192.0.2.2").r.ok, "limit − 1");
  assert.ok(admit("192.0.2.3").r.ok, "at the limit");
  const past = admit("192.0.2.4").r;
  assert.equal(past.ok, false);
  assert.equal(!past.ok && past.limit, "too many sessions from this network");
  assert.ok(admit("198.51.100.1").r.ok, "another network is not affected");
  assert.deepEqual(shed, [], "young sessions are never shed");
});

Deno.test("Admission: when full, the slowest session older than the minimum age is shed for a newcomer", () => {
  const { admit, ticket, advance, shed, a } = setup({ maxSessions: 3 });
  const s1 = admit("192.0.2.1");
  const s2 = admit("198.51.100.2");
  const s3 = admit("203.0.113.3");
  ticket(s1).wrote(); // greeting, then silence: an idle session
  ticket(s2).wrote();
  ticket(s2).read(bytes("E")); // a drip: one byte of a command line, no line end
  ticket(s3).wrote();
  ticket(s3).read(bytes("x".repeat(SHED_SLOW_BYTES))); // busy
  advance(SHED_MIN_AGE_MS + 1);
  ticket(s2).read(bytes("H"));
  const next = admit("192.0.2.50");
  assert.ok(next.r.ok, "the newcomer is served");
  assert.deepEqual(next.r.shed, ["s1"]);
  assert.deepEqual(shed, ["s1"], "the idle session (fewest bytes) is shed first");
  assert.equal(a.held, 3);
  const again = admit("192.0.2.51");
  assert.ok(again.r.ok);
  assert.deepEqual(shed, ["s1", "s2"], "then the drip");
  const none = admit("192.0.2.52");
  assert.equal(none.r.ok, false, "busy and young sessions are not shed: refused");
});

Deno.test("Admission never sheds a session whose client waits for the gateway (a command or message it has not answered)", () => {
  const { admit, ticket, advance, shed } = setup({ maxSessions: 1 });
  const s1 = admit("192.0.2.1");
  ticket(s1).wrote();
  ticket(s1).read(bytes("\r\n.\r\n")); // end of data: now SSG judges and relays
  advance(SHED_MIN_AGE_MS * 3);
  assert.equal(admit("192.0.2.2").r.ok, false);
  assert.deepEqual(shed, []);
  ticket(s1).wrote(); // the 250 went out: the client owes the next command again
  advance(1);
  assert.ok(admit("192.0.2.3").r.ok);
  assert.deepEqual(shed, ["s1"]);
});

Deno.test("Admission: a released slot is free at once and releasing twice frees it once", () => {
  const { admit, ticket, a } = setup({ maxSessionsPerClient: 1 });
  const s1 = admit("192.0.2.1");
  ticket(s1).release();
  ticket(s1).release();
  assert.equal(a.held, 0);
  const s2 = admit("192.0.2.1");
  assert.ok(s2.r.ok);
  ticket(s1).release(); // a stale release must not free s2's slot
  assert.equal(a.held, 1);
  assert.equal(admit("192.0.2.1").r.ok, false);
});

Deno.test("Admission: stress starts at 75% of max_sessions or after a refusal, and ends after the hold time", () => {
  const { admit, advance, a } = setup({ maxSessions: 4, maxSessionsPerClient: 4 });
  const r = [admit("192.0.2.1"), admit("192.0.2.2"), admit("192.0.2.3")].map((x) => x.r);
  assert.deepEqual(r.map((x) => x.ok && x.stressed), [false, false, false]);
  const fourth = admit("192.0.2.4").r;
  assert.ok(fourth.ok && fourth.stressed, "3 of 4 held: the fourth starts under stress");
  assert.equal(admit("192.0.2.5").r.ok, false, "full, nothing sheddable: refused");
  for (const x of [...r, fourth]) if (x.ok) x.ticket.release();
  assert.ok(a.underStress, "a refusal keeps the gateway under stress");
  advance(STRESS_HOLD_MS + 1);
  assert.equal(a.underStress, false);
  const s = a.stressed(
    smtpConfig({ maxErrors: 20, timeouts: { command: 300, data: 180, session: 3600 } }),
  );
  assert.equal(s.timeouts.command, STRESS_TIMEOUT_S);
  assert.equal(s.timeouts.data, STRESS_TIMEOUT_S);
  assert.equal(s.timeouts.session, 3600);
  assert.equal(s.maxErrors, STRESS_MAX_ERRORS);
});

Deno.test("Admission.pressure() counts refusals by limit, sheds and stressed starts since the last call", () => {
  const { admit, a, advance, ticket } = setup({ maxSessions: 2, maxSessionsPerClient: 2 });
  const s1 = admit("192.0.2.1");
  admit("192.0.2.2");
  admit("192.0.2.3");
  admit("192.0.2.4");
  ticket(s1).wrote();
  advance(SHED_MIN_AGE_MS + 1);
  admit("192.0.2.5");
  const p = a.pressure();
  assert.deepEqual(p.refused, { "too many sessions": 2 });
  assert.equal(p.shed, 1);
  assert.equal(p.held, 2);
  assert.deepEqual(p.top, ["192.0.2.0/24=2"]);
  assert.equal(a.pressure().shed, 0, "reset after each call");
});
