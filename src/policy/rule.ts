/** A policy rule as loaded from the rule file. (Placeholder: the policy stage owns this file.) */
export interface Rule {
  name: string;
}
