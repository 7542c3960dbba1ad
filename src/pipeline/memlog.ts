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
// mark). Without the variable memMark is a no-op. Diagnostics on top (the trace's numbers then
// include their cost): OBR_MEMLOG_GC=1 collects garbage before each mark (what is live, not what is
// resident), OBR_MEMLOG_SMAPS=1 adds resident MiB by kind of mapping (glibc's brk heap, anonymous
// maps by size, files), and OBR_HEAPSNAP=LABEL|LABEL… writes a V8 heap snapshot beside the trace
// at every mark whose label contains one of them (what holds each big ArrayBuffer).
import { appendFileSync, readFileSync } from 'node:fs';
import { writeHeapSnapshot } from 'node:v8';
import { collectNow } from '../core/gc';
import { setCoreMark } from '../core/trace';

const file = process.env.OBR_MEMLOG;
let sinceMark = 0;
let timer: NodeJS.Timeout | undefined;
const t0 = performance.now();
// The core's own marks (src/core/trace.ts: the batched solver's factorization, inverse, steps).
if (file) setCoreMark((label) => memMark(`core: ${label}`));

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
  if (process.env.OBR_MEMLOG_GC === '1') collectNow();
  const rss = sample();
  const m = process.memoryUsage();
  const snap = process.env.OBR_HEAPSNAP;
  if (snap && snap.split('|').some((x) => label.includes(x))) writeHeapSnapshot(`${file}.${label.replace(/[^A-Za-z0-9]+/g, '_')}.heapsnapshot`);
  const line = {
    t: Number(((performance.now() - t0) / 1000).toFixed(2)),
    label,
    rssMiB: Math.round(rss / 2 ** 20),
    peakSinceLastMiB: Math.round(sinceMark / 2 ** 20),
    maxRssMiB: Math.round((process.resourceUsage().maxRSS * 1024) / 2 ** 20),
    heapMiB: Math.round(m.heapUsed / 2 ** 20),
    arrayBuffersMiB: Math.round(m.arrayBuffers / 2 ** 20),
    externalMiB: Math.round(m.external / 2 ** 20),
    ...(process.env.OBR_MEMLOG_SMAPS === '1' ? { smaps: smapsSummary() } : {}),
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

/** Resident MiB by kind of mapping (diagnostics): the brk heap, anonymous maps by size, files. */
function smapsSummary(): Record<string, number> {
  const out: Record<string, number> = {};
  let kind = '';
  let size = 0;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const [a, b] = line.split(' ')[0]!.split('-').map((x) => parseInt(x, 16));
      size = b! - a!;
      const name = head[1]!.trim();
      kind = name === '' ? (size >= 60 * 2 ** 20 ? 'anon>=60M' : size >= 2 ** 20 ? 'anon1-60M' : 'anon<1M') : name.startsWith('[') ? name : 'file';
      continue;
    }
    const m = /^Rss:\s+(\d+) kB/.exec(line);
    if (m) out[kind] = (out[kind] ?? 0) + Number(m[1]) / 1024;
  }
  for (const k of Object.keys(out)) {
    out[k] = Math.round(out[k]!);
    if (out[k] === 0) delete out[k];
  }
  return out;
}
