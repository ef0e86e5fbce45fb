/**
 * The verdict types as the action modules see them: re-exported from `src/policy/verdict.ts`
 * (the issue-3 shape: `Tag`, `Delivery`, `Effect`, and a `Verdict` whose `action` is the
 * discriminant). Every file in `src/action/` imports them from here, so the action modules have
 * one place that says which policy types they depend on.
 */
export type {
  BlacklistKey,
  Delivery,
  Effect,
  Envelope,
  Reply,
  Tag,
  Verdict,
  VerdictExtras,
} from "../policy/verdict.ts";
