/** Alternating timed rounds of a peer and of vmvault: a busy moment of the machine slows both alike. */

/** Best time of each side and the per-round ratios (peer time / our time, > 1: we are faster). */
export interface AlternateResult {
  ours: number;
  theirs: number;
  ratios: number[];
}

/**
 * Runs `rounds` rounds of `theirs()` then `ours()` (each returning seconds), calling `onRound`
 * after each round; returns the best of each side and the per-round ratios.
 */
export function alternateRounds(
  rounds: number,
  theirs: () => number,
  ours: () => number,
  onRound?: (round: number, theirs: number, ours: number) => void,
): AlternateResult {
  let o = Number.POSITIVE_INFINITY;
  let t = Number.POSITIVE_INFINITY;
  const ratios: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const ti = theirs();
    const oi = ours();
    t = Math.min(t, ti);
    o = Math.min(o, oi);
    ratios.push(ti / oi);
    onRound?.(i + 1, ti, oi);
  }
  return { ours: o, theirs: t, ratios };
}
