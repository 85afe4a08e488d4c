/** Small statistics helpers for the benchmarks: nearest-rank percentiles, median and range. */

export interface Spread {
  median: number;
  min: number;
  max: number;
  runs: number;
}

/** Nearest-rank percentile (p in 0..100) of unsorted samples; NaN for none. */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(Math.max(rank, 1), sorted.length) - 1];
}

/** Median and range of per-run figures (NaN runs, e.g. a stalled transfer, are kept out of the median). */
export function spread(values: number[]): Spread {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return { median: NaN, min: NaN, max: NaN, runs: values.length };
  return { median: percentile(finite, 50), min: Math.min(...finite), max: Math.max(...finite), runs: values.length };
}

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/** Seconds since `startNs` (from process.hrtime.bigint()). */
export function secondsSince(startNs: bigint): number {
  return Number(process.hrtime.bigint() - startNs) / 1e9;
}
