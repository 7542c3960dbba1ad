// Repeated measurements: warm-up runs (not recorded), timed repetitions, median and spread.
import type { Stat } from '../../protocol/bench';
import { throwIfAborted } from '../cancel';

/** Linear-interpolated quantile of sorted values (q in [0, 1]). */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** Median, mean, min, max, sample stdev and IQR of `samples` (kept in run order). */
export function summarize(samples: readonly number[]): Stat {
  const n = samples.length;
  const sorted = [...samples].sort((a, b) => a - b);
  const mean = n ? samples.reduce((s, x) => s + x, 0) / n : Number.NaN;
  const variance = n > 1 ? samples.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1) : 0;
  return {
    median: quantile(sorted, 0.5),
    mean,
    min: n ? sorted[0]! : Number.NaN,
    max: n ? sorted[n - 1]! : Number.NaN,
    stdev: Math.sqrt(variance),
    iqr: quantile(sorted, 0.75) - quantile(sorted, 0.25),
    n,
    samples: [...samples],
  };
}

/**
 * Runs `fn` `warmup` times untimed, then `reps` times timed (milliseconds each, wall clock with
 * performance.now()). `fn` may return its own duration in ms (e.g. to exclude set-up inside it).
 */
export async function timeRepeated(
  fn: (rep: number) => Promise<number | void> | number | void,
  opts: { warmup: number; reps: number; signal?: AbortSignal },
): Promise<Stat> {
  for (let i = 0; i < opts.warmup; i++) {
    throwIfAborted(opts.signal);
    await fn(-1 - i);
  }
  const samples: number[] = [];
  for (let i = 0; i < Math.max(1, opts.reps); i++) {
    throwIfAborted(opts.signal);
    const t = performance.now();
    const own = await fn(i);
    samples.push(typeof own === 'number' ? own : performance.now() - t);
  }
  return summarize(samples);
}

/** Rounds to `digits` significant digits (keeps JSON short and diff-friendly). */
export function sig(x: number, digits = 6): number {
  return Number.isFinite(x) ? Number(x.toPrecision(digits)) : x;
}
