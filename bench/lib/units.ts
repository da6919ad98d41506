/** Byte sizes, durations, ratios and medians for benchmark reports. */

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/**
 * Parses a size such as `4G`, `64K`, `1.5M` or `4096` (binary units, an optional `i`/`B` suffix).
 * @throws Error on anything else.
 */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) throw new Error(`not a size: ${text}`);
  return Math.round(Number(m[1]) * UNITS[m[2]!.toUpperCase()]!);
}

/** Formats a byte count with a binary unit, e.g. `40.0 MiB`. */
export function fmtBytes(n: number): string {
  const abs = Math.abs(n);
  if (abs < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

/** Formats milliseconds as seconds with two decimals, e.g. `12.34 s`. */
export function fmtMs(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

/** Formats a ratio `a / b` as `0.23×`, or `n/a` when `b` is zero. */
export function fmtRatio(a: number, b: number): string {
  return b === 0 ? 'n/a' : `${(a / b).toFixed(2)}×`;
}

/** Median of a non-empty list (mean of the two middle values for even lengths). */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('median of nothing');
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
