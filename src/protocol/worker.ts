// Host ↔ worker protocol. One union per direction, discriminated on `type`. Requests carry an
// `id`; every request is answered by exactly one `result` with {ok} or {err}.
import type { CompressOptions } from './recipes';
import type { CompressionReport, LayerReport } from './report';

export type Stage = 'load' | 'rotate' | 'calibrate' | 'compress' | 'write' | 'evaluate' | 'probe';

export interface ProgressEvent {
  stage: Stage;
  /** Units done and total in this stage (layers, blocks, windows). */
  done: number;
  total: number;
  message?: string;
  /** Estimated seconds until the whole job finishes, when known. */
  etaSeconds?: number;
}

export interface ProviderProbe {
  used: string;
  tried: Array<{ name: string; error?: string }>;
  /** Output of the probe graph (y = x·W with x = [1, 2, 3], W = [[1, 0], [0, 1], [1, 1]]). */
  output: number[];
}

export type HostToWorker =
  | { type: 'probeProviders'; id: number; preference: string[] }
  | { type: 'compress'; id: number; modelPath: string; options: CompressOptions }
  | { type: 'cancel'; id: number };

export type WorkerResult =
  | { kind: 'probeProviders'; probe: ProviderProbe }
  | { kind: 'compress'; report: CompressionReport };

export interface WorkerError {
  /** Error class name, e.g. ModelFormatError; lets the host pick an action. */
  code: string;
  message: string;
  stack?: string;
}

export type WorkerToHost =
  | { type: 'progress'; id: number; event: ProgressEvent }
  | { type: 'layer'; id: number; layer: LayerReport }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string }
  | { type: 'result'; id: number; ok: WorkerResult }
  | { type: 'result'; id: number; err: WorkerError };
