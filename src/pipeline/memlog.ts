// Memory of a job between its big steps, and a trace of it.
//
// collectGarbage(): V8 frees an ArrayBuffer's memory only when a garbage collection finds it
// unreachable, and with a small JavaScript heap (the job's big arrays live outside it) that can be
// seconds after the last use: the previous layer's hundreds of MB of float64 copies were still
// resident while the next layer allocated its own. The block loop calls this between layers and
// before each capture, for layers of at least 16 MiB (float64); a full collection of the ~20 MB
// heap takes tens of milliseconds.
//
// Memory trace for the memory benchmark (scripts/bench/memory.ts, issue #12 item 2): with
// OBR_MEMLOG=FILE set, every memMark(label) appends one JSON line with the process's RSS, V8 heap
// and ArrayBuffer bytes at that point, and a 50 ms sampler records the highest RSS seen since the
// previous mark (so a peak between two marks is attributed to the step that ended at the later
// mark). Without the variable memMark is a no-op.
import { appendFileSync } from 'node:fs';
import { collectNow } from '../core/gc';

const file = process.env.OBR_MEMLOG;
let sinceMark = 0;
let timer: NodeJS.Timeout | undefined;
const t0 = performance.now();

function sample(): number {
  const rss = process.memoryUsage.rss();
  if (rss > sinceMark) sinceMark = rss;
  return rss;
}

/** Records `label` in the memory trace (no-op unless OBR_MEMLOG names a file). */
export function memMark(label: string): void {
  if (!file) return;
  if (!timer) {
    timer = setInterval(sample, 50);
    timer.unref();
  }
  const rss = sample();
  const m = process.memoryUsage();
  const line = {
    t: Number(((performance.now() - t0) / 1000).toFixed(2)),
    label,
    rssMiB: Math.round(rss / 2 ** 20),
    peakSinceLastMiB: Math.round(sinceMark / 2 ** 20),
    maxRssMiB: Math.round((process.resourceUsage().maxRSS * 1024) / 2 ** 20),
    heapMiB: Math.round(m.heapUsed / 2 ** 20),
    arrayBuffersMiB: Math.round(m.arrayBuffers / 2 ** 20),
    externalMiB: Math.round(m.external / 2 ** 20),
  };
  sinceMark = rss;
  appendFileSync(file, `${JSON.stringify(line)}\n`);
}

/** Below this many bytes of fresh garbage a forced collection is not worth its milliseconds. */
export const COLLECT_MIN_BYTES = 16 * 2 ** 20;

/**
 * A full garbage collection now, when the step that just ended left about `bytes` of arrays
 * behind (at least COLLECT_MIN_BYTES; small models never pay for it); a no-op where V8 does not
 * allow it.
 */
export function collectGarbage(bytes: number): void {
  if (bytes >= COLLECT_MIN_BYTES) collectNow();
}
