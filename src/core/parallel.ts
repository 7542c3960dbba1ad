// Row-parallel execution. Rows of a layer are independent in every per-row step (scale search,
// OBR compensation §2.6 line 6, the GPTQ recursion given U; invariant §7.9), so a step is cut
// into chunks of rows that worker threads take as they free up. Inputs and outputs live in
// SharedArrayBuffers (no copies per chunk). Each worker evaluates the self-contained kernel
// factory of ./kernels.ts from its source text (an eval worker), so the same code runs from
// tsx, from the esbuild bundles (dist/cli.js, dist/worker.js) and from tests, with no extra
// worker file. The AbortSignal is checked between chunks; workers are terminated at the end.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { MatrixBackend } from './backend';
import { type CompensationProblem, createRowKernels, type RowTask, rowKernels } from './kernels';
import { DEFAULT_PCG } from './obr';
import { KERNELS_WASM_BASE64 } from './wasm/kernelsWasm';

export interface CompensateOptions {
  signal?: AbortSignal;
  /** Worker threads (default min(2, cores)); 1 runs on the calling thread. */
  threads?: number;
  /** 'auto' = direct (exact Cholesky): PCG needs too many iterations on ill-conditioned H. */
  solver: 'direct' | 'pcg' | 'auto';
  backend: MatrixBackend;
}

/** Below this many flops of row work, worker start-up (~50 ms) is not worth it. */
export const PARALLEL_MIN_FLOPS = 2e8;

export function defaultThreads(): number {
  return Math.max(1, Math.min(2, availableParallelism()));
}

function workerSource(): string {
  // `__name` is the keep-names helper tsx/esbuild may insert into function bodies.
  return `'use strict';
var __name = (f) => f;
const { parentPort } = require('node:worker_threads');
const kernels = (${createRowKernels.toString()})(${JSON.stringify(KERNELS_WASM_BASE64)});
// A full collection in this worker (the flag may already be set by the main thread, core/gc.ts).
let collect = typeof globalThis.gc === 'function' ? globalThis.gc : null;
if (!collect) {
  try {
    require('node:v8').setFlagsFromString('--expose-gc');
    collect = require('node:vm').runInNewContext('gc');
  } catch {}
}
parentPort.on('message', (msg) => {
  if (msg.collect) {
    if (msg.trim) kernels.trim();
    if (collect) collect();
    if (msg.ack) parentPort.postMessage({ type: 'collected' });
    return;
  }
  try {
    kernels.runTask(msg.task, msg.row0, msg.row1);
    parentPort.postMessage({ type: 'done' });
  } catch (e) {
    parentPort.postMessage({ type: 'error', message: String((e && e.message) || e), name: String((e && e.name) || 'Error') });
  }
});`;
}

type FromWorker = { type: 'done' } | { type: 'collected' } | { type: 'error'; message: string; name: string };

/** Typed arrays over fresh SharedArrayBuffers (zero-filled). */
export const shared = {
  f64: (n: number): Float64Array => new Float64Array(new SharedArrayBuffer(n * 8)),
  u8: (n: number): Uint8Array => new Uint8Array(new SharedArrayBuffer(n)),
  i8: (n: number): Int8Array => new Int8Array(new SharedArrayBuffer(n)),
  copy: (a: Float64Array): Float64Array => {
    const out = new Float64Array(new SharedArrayBuffer(a.length * 8));
    out.set(a);
    return out;
  },
};

/** Idle pools kept for the next layer (starting two workers and compiling the kernels costs 50–100 ms). */
const idlePools: RowPool[] = [];
/** An idle pool is closed after this long unused. */
const POOL_IDLE_MS = 30_000;

/** A set of worker threads for row-parallel tasks; `null` pool = run on the calling thread. */
export class RowPool {
  private readonly workers: Worker[] = [];
  /** Set when a run ended on an error or abort: workers may still be busy, so never reuse. */
  private broken = false;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(readonly threads: number) {
    const source = workerSource();
    for (let t = 0; t < threads; t++) this.workers.push(new Worker(source, { eval: true }));
  }

  /** A pool of `threads` workers: an idle one from an earlier layer, or a new one. */
  static acquire(threads: number): RowPool {
    const i = idlePools.findIndex((p) => p.threads === threads);
    if (i < 0) return new RowPool(threads);
    const pool = idlePools.splice(i, 1)[0]!;
    clearTimeout(pool.idleTimer);
    for (const w of pool.workers) w.ref();
    return pool;
  }

  /**
   * Hands the pool back after a layer: a healthy pool releases its workers' large buffers and
   * waits (without keeping the process alive) for the next layer; a broken one is closed.
   */
  async release(): Promise<void> {
    if (this.broken) return this.close();
    // Each worker drops its kernel memory and collects, so the shared arrays of the layer's tasks
    // it still references are freed now (a worker's heap is too small to collect on its own).
    await Promise.all(
      this.workers.map(
        (w) =>
          new Promise<void>((done) => {
            const onMessage = (msg: FromWorker): void => {
              if (msg.type !== 'collected') return;
              w.off('message', onMessage);
              w.off('exit', onExit);
              done();
            };
            const onExit = (): void => {
              w.off('message', onMessage);
              done();
            };
            w.on('message', onMessage);
            w.once('exit', onExit);
            w.postMessage({ collect: true, trim: true, ack: true });
          }),
      ),
    );
    for (const w of this.workers) w.unref();
    this.idleTimer = setTimeout(() => {
      const i = idlePools.indexOf(this);
      if (i >= 0) idlePools.splice(i, 1);
      void this.close();
    }, POOL_IDLE_MS);
    this.idleTimer.unref();
    idlePools.push(this);
  }

  /** Runs `task` over rows [0, rows) in chunks; rejects on the first worker error or on abort. */
  run(task: RowTask, rows: number, signal?: AbortSignal, chunkRows?: number): Promise<void> {
    const chunk = Math.max(1, chunkRows ?? Math.min(64, Math.ceil(rows / (this.threads * 8))));
    return new Promise<void>((resolve, reject) => {
      let next = 0;
      let active = 0;
      let settled = false;
      const listeners: Array<() => void> = [];
      const finish = (e?: Error): void => {
        if (settled) return;
        settled = true;
        for (const off of listeners) off();
        signal?.removeEventListener('abort', onAbort);
        if (e) this.broken = true;
        if (e) return reject(e);
        // The workers drop this task's shared arrays (they'd keep them until the pool's release).
        for (const w of this.workers) w.postMessage({ collect: true });
        resolve();
      };
      const onAbort = (): void => finish(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      const dispatch = (w: Worker): void => {
        if (settled) return;
        if (next >= rows) {
          if (active === 0) finish();
          return;
        }
        const row0 = next;
        const row1 = Math.min(rows, next + chunk);
        next = row1;
        active++;
        w.postMessage({ task, row0, row1 });
      };
      for (const w of this.workers) {
        const onMessage = (msg: FromWorker): void => {
          if (msg.type === 'error') {
            const e = new Error(msg.message);
            e.name = msg.name;
            return finish(e);
          }
          active--;
          dispatch(w);
        };
        const onError = (e: Error): void => finish(e);
        const onExit = (code: number): void => finish(new Error(`row worker exited with code ${code}`));
        w.on('message', onMessage);
        w.on('error', onError);
        w.on('exit', onExit);
        listeners.push(() => {
          w.off('message', onMessage);
          w.off('error', onError);
          w.off('exit', onExit);
        });
      }
      for (const w of this.workers) dispatch(w);
      if (rows === 0) finish();
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/** Runs a task on the pool, or on this thread (checking the signal between chunks of 16 rows). */
export async function runRows(pool: RowPool | null, task: RowTask, rows: number, signal?: AbortSignal): Promise<void> {
  if (pool) return pool.run(task, rows, signal);
  for (let r = 0; r < rows; r += 16) {
    signal?.throwIfAborted();
    rowKernels.runTask(task, r, Math.min(rows, r + 16));
  }
}

/** W_c = W⊙M + Δ for all rows (new array). Spawns a pool for this call when worthwhile. */
export async function compensateRows(p: CompensationProblem, options: CompensateOptions): Promise<Float64Array> {
  const solver = options.solver === 'pcg' ? 'pcg' : 'direct';
  const threads = Math.max(1, Math.floor(options.threads ?? defaultThreads()));
  const kept = p.cols / 2;
  const flops = (p.rows * kept * kept * kept) / 3;
  const parallel = threads > 1 && p.rows > 1 && (options.threads !== undefined || flops >= PARALLEL_MIN_FLOPS);
  if (!parallel) {
    const out = new Float64Array(p.rows * p.cols);
    await runRows(null, { kind: 'compensate', problem: p, out, solver, pcg: DEFAULT_PCG }, p.rows, options.signal);
    return out;
  }
  const pool = RowPool.acquire(threads);
  try {
    const sp: CompensationProblem = { ...p, weight: shared.copy(p.weight), hessian: shared.copy(p.hessian), scales: shared.copy(p.scales), ...(p.zeros ? { zeros: shared.copy(p.zeros) } : {}), mask: shared.u8(p.mask.length) };
    sp.mask.set(p.mask);
    const out = shared.f64(p.rows * p.cols);
    await pool.run({ kind: 'compensate', problem: sp, out, solver, pcg: DEFAULT_PCG }, p.rows, options.signal);
    return out;
  } finally {
    await pool.release();
  }
}
