/**
 * The test of an `spf`/`dkim`/`dmarc`/`arc` leaf against what the authenticator found
 * (`AuthResults`, given to the evaluators as `EvalHooks.auth`).
 *
 * Trusts: the results (mailauth's words, from DNS and the message; the domain names in them are
 * the attacker's and reach the evidence only as data). A check the engine did not run (absent
 * results, or the check switched off in `auth.checks`) makes no leaf hold: nothing unverified
 * matches, not even `none`.
 */
import type { AuthResults } from "../engines/auth/mail_authenticator.ts";
import type { AuthCondition } from "./rule.ts";

/** What the leaf saw: the match (or null) and a description of the results. */
export interface AuthLeafResult {
  /** The result that made the leaf hold, e.g. "fail" or "pass d=example.org". */
  hit: string | null;
  /** What the check found, for `ssg explain`. */
  detail: string;
}

/** The leaf as text, e.g. `dmarc fail policy reject`. */
export function describeAuthLeaf(c: AuthCondition): string {
  return `${c.check}: ${c.results.join("|")}${c.domain ? ` d=${c.domain}` : ""}${
    c.policies ? ` policy ${c.policies.join("|")}` : ""
  }`;
}

/** Tests one leaf against `auth` (undefined: not verified; the leaf never holds). */
export function testAuthLeaf(c: AuthCondition, auth: AuthResults | undefined): AuthLeafResult {
  if (!auth) return { hit: null, detail: "not verified: no authentication result" };
  switch (c.check) {
    case "spf": {
      const r = auth.spf;
      if (!r) return { hit: null, detail: "SPF is not checked (auth.checks)" };
      const detail = `spf=${r.result}${r.domain ? ` for ${r.domain}` : ""}${
        r.comment ? ` (${r.comment})` : ""
      }`;
      return { hit: c.results.includes(r.result) ? r.result : null, detail };
    }
    case "dkim": {
      const sigs = auth.dkim;
      if (!sigs) return { hit: null, detail: "DKIM is not checked (auth.checks)" };
      const detail = sigs.map((s) =>
        `dkim=${s.result}${s.domain ? ` d=${s.domain}` : ""}${
          s.selector ? ` s=${s.selector}` : ""
        }${s.comment ? ` (${s.comment})` : ""}`
      ).join(", ");
      const found = sigs.find((s) =>
        c.results.includes(s.result) && (c.domain === undefined || s.domain === c.domain)
      );
      return {
        hit: found ? `${found.result}${found.domain ? ` d=${found.domain}` : ""}` : null,
        detail,
      };
    }
    case "dmarc": {
      const r = auth.dmarc;
      if (!r) return { hit: null, detail: "DMARC is not checked (auth.checks)" };
      const detail = `dmarc=${r.result}${r.domain ? ` for ${r.domain}` : ""}${
        r.policy ? ` policy=${r.policy}` : ""
      }${r.comment ? ` (${r.comment})` : ""}`;
      const holds = c.results.includes(r.result) &&
        (c.policies === undefined || (r.policy !== undefined && c.policies.includes(r.policy)));
      return { hit: holds ? `${r.result}${r.policy ? ` policy=${r.policy}` : ""}` : null, detail };
    }
    case "arc": {
      const r = auth.arc;
      if (!r) return { hit: null, detail: "ARC is not checked (auth.checks)" };
      const detail = `arc=${r.result}${r.comment ? ` (${r.comment})` : ""}`;
      return { hit: c.results.includes(r.result) ? r.result : null, detail };
    }
  }
}

/** Whether the check a leaf tests could not be done (its result is temperror). */
export function authCheckFailed(
  check: AuthCondition["check"],
  auth: AuthResults | undefined,
): string | undefined {
  if (!auth) return `${check}: not verified`;
  switch (check) {
    case "spf":
      return auth.spf?.result === "temperror"
        ? `spf: ${auth.spf.comment ?? "temperror"}`
        : undefined;
    case "dkim": {
      const t = auth.dkim?.find((s) => s.result === "temperror");
      return t ? `dkim: ${t.comment ?? "temperror"}` : undefined;
    }
    case "dmarc":
      return auth.dmarc?.result === "temperror"
        ? `dmarc: ${auth.dmarc.comment ?? "temperror"}`
        : undefined;
    case "arc":
      return auth.arc?.result === "temperror"
        ? `arc: ${auth.arc.comment ?? "temperror"}`
        : undefined;
  }
}
