/**
 * Retention policies: which restore points to keep. A pure function so it can be tested by
 * tables. Semantics follow the common "keep-last / keep-hourly / …" model: every rule keeps the
 * newest point of each of the N most recent periods that have a point; a point kept by any rule
 * is kept. Points are grouped by name; each group is judged on its own.
 */

/** How many points or periods each rule keeps; unset rules keep nothing. */
export interface RetentionPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
}

/** The minimum a point needs for retention. */
export interface Dated {
  id: string;
  name: string;
  time: string;
}

/** What a policy decided for one point. */
export interface RetentionDecision<T extends Dated> {
  point: T;
  keep: boolean;
  /** Rules that keep it ("last", "daily"...); empty when removed. */
  reasons: string[];
}

type Rule = keyof RetentionPolicy;
const RULES: Rule[] = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'];

/** The period a time falls in, per rule; UTC so results do not depend on the host's zone. */
function periodKey(rule: Rule, t: Date, index: number): string {
  const y = t.getUTCFullYear();
  const m = t.getUTCMonth();
  const d = t.getUTCDate();
  switch (rule) {
    case 'last':
      return String(index);
    case 'hourly':
      return `${y}-${m}-${d}T${t.getUTCHours()}`;
    case 'daily':
      return `${y}-${m}-${d}`;
    case 'weekly': {
      // ISO 8601 week: the week's Thursday decides the year and the week number.
      const thursday = new Date(Date.UTC(y, m, d - ((t.getUTCDay() + 6) % 7) + 3));
      const yearStart = Date.UTC(thursday.getUTCFullYear(), 0, 1);
      const week = 1 + Math.floor((thursday.getTime() - yearStart) / 86400000 / 7);
      return `${thursday.getUTCFullYear()}-W${week}`;
    }
    case 'monthly':
      return `${y}-${m}`;
    case 'yearly':
      return String(y);
  }
}

/** True when the policy keeps nothing at all (a likely mistake the CLI refuses). */
export function isEmptyPolicy(p: RetentionPolicy): boolean {
  return RULES.every((r) => !p[r]);
}

/** Applies a policy to points (any order); returns a decision per point, newest first per group. */
export function applyRetention<T extends Dated>(
  points: readonly T[],
  policy: RetentionPolicy,
): RetentionDecision<T>[] {
  const groups = new Map<string, T[]>();
  for (const p of points) {
    const g = groups.get(p.name);
    if (g) g.push(p);
    else groups.set(p.name, [p]);
  }
  const out: RetentionDecision<T>[] = [];
  for (const name of [...groups.keys()].sort()) {
    const sorted = groups
      .get(name)!
      .slice()
      .sort((a, b) => Date.parse(b.time) - Date.parse(a.time) || (a.id < b.id ? 1 : -1));
    const decisions = sorted.map((point) => ({ point, keep: false, reasons: [] as string[] }));
    for (const rule of RULES) {
      const n = policy[rule] ?? 0;
      if (n <= 0) continue;
      const seen = new Set<string>();
      for (let i = 0; i < decisions.length && seen.size < n; i++) {
        const dec = decisions[i]!;
        const key = periodKey(rule, new Date(dec.point.time), i);
        if (seen.has(key)) continue;
        seen.add(key);
        dec.keep = true;
        dec.reasons.push(rule);
      }
    }
    out.push(...decisions);
  }
  return out;
}
