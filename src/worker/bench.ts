// The worker's handler for a `bench` request: runs runBenchmarks (the same function `obr bench`
// calls, so both produce the same JSON for the same spec) and maps its progress onto the worker's
// ProgressEvent. worker.ts dispatches to it:
//
//   case 'bench': return handleBenchRequest(message, { post, running, reply });
import type { BenchRequest, BenchWorkerResult } from '../protocol/bench';
import type { ProgressEvent } from '../protocol/worker';
import { runBenchmarks, type BenchHooks } from '../pipeline/bench/run';

export interface BenchHandlerHooks {
  signal?: AbortSignal;
  onProgress?(event: ProgressEvent): void;
  log?(level: 'info' | 'warn' | 'error', message: string): void;
}

/** Runs one bench request; resolves with the worker result (the JSON is also written to disk). */
export async function runBenchRequest(request: Pick<BenchRequest, 'spec'>, hooks: BenchHandlerHooks = {}): Promise<BenchWorkerResult> {
  const benchHooks: BenchHooks = {
    signal: hooks.signal,
    log: hooks.log,
    onProgress: (p) =>
      hooks.onProgress?.({
        // The quality/speed/runtime suites report through the compression and evaluation stages;
        // runtime measurements and the core kernels read as 'evaluate'.
        stage: p.suite === 'setup' ? 'load' : 'evaluate',
        done: p.done,
        total: p.total,
        message: `[${p.suite}] ${p.message ?? ''}`.trim(),
      }),
    onCompressionProgress: (e, job) => hooks.onProgress?.({ ...e, message: `[${job.recipe} W${job.wbits}] ${e.message ?? ''}`.trim() }),
  };
  return { kind: 'bench', bench: await runBenchmarks(request.spec, benchHooks) };
}

/** The pieces of worker.ts the handler needs (its post, its map of running jobs, its reply). */
export interface WorkerPlumbing {
  post(message: { type: 'progress'; id: number; event: ProgressEvent } | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string }): void;
  running: Map<number, AbortController>;
  reply(id: number, work: () => Promise<BenchWorkerResult>): Promise<void>;
}

/** Registers the job for `cancel`, runs it, and replies {ok: {kind: 'bench', bench}} or {err}. */
export async function handleBenchRequest(message: BenchRequest, plumbing: WorkerPlumbing): Promise<void> {
  const abort = new AbortController();
  const id = message.id;
  plumbing.running.set(id, abort);
  try {
    await plumbing.reply(id, () =>
      runBenchRequest(message, {
        signal: abort.signal,
        onProgress: (event) => plumbing.post({ type: 'progress', id, event }),
        log: (level, text) => plumbing.post({ type: 'log', level, message: text }),
      }),
    );
  } finally {
    plumbing.running.delete(id);
  }
}
