// A full garbage collection after the core drops large buffers. V8 frees an ArrayBuffer's or a
// WebAssembly memory's bytes only when it collects, and it may not collect before the next large
// allocation: the batched solver's kernel memories (the Cholesky factor, 254 MB at 5632 columns;
// each step's iteration state, up to 256 MiB) then stay resident beside what comes next, and the
// process's peak is their sum (issue #12). The pipeline's collectGarbage (src/pipeline/memlog.ts)
// calls collectNow too.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Below this many dropped bytes a collection is not worth its time (tens of ms). */
export const COLLECT_MIN_BYTES = 32 * 2 ** 20;

let gc: (() => void) | null | undefined;

/** Collects now when at least COLLECT_MIN_BYTES were just dropped (no-op where gc cannot be exposed). */
export function collectDropped(bytes: number): void {
  if (bytes >= COLLECT_MIN_BYTES) collectNow();
}

/** A full garbage collection now; a no-op where V8 does not allow exposing gc. */
export function collectNow(): void {
  if (gc === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      gc = runInNewContext('gc') as () => void;
    } catch {
      gc = null;
    }
  }
  gc?.();
}
