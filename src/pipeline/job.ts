// One compression job's context, shared by the stages in src/pipeline/stages/ (load → rotate →
// calibrate ⇄ compress → write → evaluate → report): the options, hooks, progress, warnings,
// timings and output paths. Each stage reads what it needs from here and from the previous
// stage's result, and returns its own result.
import type { OrtMatrixBackend } from '../runtime/ortBackend';
import { formatSparsity, recipePrunes, validateGroupSize, type CompressOptions, type RecipeName, type Sparsity } from '../protocol/recipes';
import type { CompressionReport } from '../protocol/report';
import type { AttentionGeometry } from '../onnx/types';
import { describeProviders } from '../runtime/providers';
import type { PipelineHooks } from './api';
import type { ForwardKind } from './blockStream';
import type { OutputLayout } from './layouts';
import type { CapturedStats } from './capture';
import { effectiveSparsity, type OutputPaths } from './outputs';
import type { ProgressTracker } from './progress';

export const TOOL_VERSION = '0.1.0';

/** Default memory budget of the block-streaming activation cache (MiB). */
export const DEFAULT_ACTIVATION_CACHE_MIB = 2048;

/** Job settings that are not part of the recipe (and don't change the compressed weights). */
export interface PipelineOptions {
  /** Evaluation text; undefined = the bundled test split; null = skip perplexity. */
  evalText?: string | null;
  /** Evaluate on the first K windows only. */
  evalWindows?: number;
  /** Perplexity with only one layer compressed, per layer (on `sensitivityWindows` spread windows). */
  sensitivity?: boolean;
  sensitivityWindows?: number;
  /** Reuse a matching checkpoint (default true). */
  resume?: boolean;
  /** Keep the checkpoint when the job is cancelled, so it can be resumed (default false). */
  keepCheckpointOnCancel?: boolean;
  /** Windows per onnxruntime run (calibration and evaluation). */
  batch?: number;
  /** Threads for the per-row compensation in the core. */
  threads?: number;
  /**
   * Baseline recipes for comparison (report.baselines): every layer is also compressed with each
   * of them on the same captured Hessian as the job's recipe (same sparsity, bits, α and damping),
   * and the model with all layers replaced by a baseline's weights is evaluated on the same
   * windows. They don't change the outputs. The job's own recipe and repeats are skipped.
   */
  baselines?: readonly string[];
  /** Compress only these decoder blocks (quick looks and tests); the others stay dense. */
  onlyBlocks?: readonly number[];
  /**
   * Output layout (src/pipeline/layouts.ts): `auto` (default) puts the packed model into a new
   * drop-in folder when the source is in an onnxruntime-genai or Optimum folder; `file` always
   * writes loose files; `folder` always writes the folder.
   */
  layout?: OutputLayout;
  /** Attention geometry from the user (--heads/--kv-heads/--head-dim): used before the graph's. */
  geometry?: AttentionGeometry;
  /**
   * Calibration and perplexity forwards: 'stream' (default) runs one block subgraph at a time on
   * cached activations (§1.5, linear in depth); 'whole-model' re-runs blocks 0…b from the token
   * ids for every capture of block b and evaluates the whole model in one session (the fallback
   * for graphs that can't be cut into blocks).
   */
  calibrationForwards?: 'stream' | 'whole-model';
  /**
   * Memory for cached block activations (MiB; default DEFAULT_ACTIVATION_CACHE_MIB): beyond it the
   * hidden states spill to a file in the working folder, removed at the end and on cancel.
   */
  activationCacheMiB?: number;
  /** The pre-flight's seconds per stage (src/pipeline/preflight.ts stageEstimate), stored in report.estimate. */
  estimate?: Record<string, number>;
  /** Called just before each decoder block is compressed (tests use it to interrupt a job). */
  onBlockStart?(block: string, index: number, total: number): void;
  /** Called after each calibration forward (streamed: one block region; whole-model: blocks 0…b). */
  onForward?(block: string | null, kind: ForwardKind): void;
  /** Called with each captured Hessian (tests compare the streamed and whole-model paths). */
  onCapture?(block: string, input: string, stats: CapturedStats): void;
  /**
   * Called once when the job ends (finished, failed or cancelled) with the working store's
   * accounting (src/onnx/store.ts): the most weight bytes it held read at once and the bytes it
   * wrote to the working data file (tests bound the first by one block).
   */
  onWorkingStore?(stats: { peakResidentBytes: number; writtenBytes: number; dataFile: string }): void;
}

/** `debug`: details for the log only (the extension's output channel; the CLI with OBR_DEBUG=1). */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Job {
  options: CompressOptions;
  extra: PipelineOptions;
  hooks: PipelineHooks;
  signal: AbortSignal | undefined;
  progress: ProgressTracker;
  warnings: string[];
  /** Seconds per stage (report.timings). */
  timings: Record<string, number>;
  log(level: LogLevel, message: string): void;
  /** Absolute path of the source model. */
  source: string;
  paths: OutputPaths;
  /** Baseline recipes (resolved, without the job's own recipe). */
  baselines: RecipeName[];
  /** performance.now() at the start. */
  started: number;
  /** The execution provider of the first session (kept for the report). */
  executionProvider?: CompressionReport['executionProvider'];
  /** The batched OBR solver's product engine (onnxruntime on the job's providers): opened at the
   *  first OBR layer (stages/layers.ts), released when the job ends. */
  matrixBackend?: OrtMatrixBackend;
}

/** Records the execution provider the first time a session reports one. */
export function noteExecutionProvider(job: Job, ep: CompressionReport['executionProvider']): void {
  if (job.executionProvider) return;
  job.executionProvider = ep;
  job.log('info', describeProviders(ep));
  for (const x of ep.tried) if (x.detail) job.log('debug', `${x.name}: ${x.detail}`);
}

/** Sparsity a recipe applies under the job's options (quantization-only recipes never prune). */
export function sparsityFor(recipe: RecipeName, o: CompressOptions): Sparsity {
  return recipePrunes(recipe) ? o.sparsity : { kind: 'dense' };
}

/** Options that change the compressed weights, in a stable order: part of the job key. */
export function numericOptions(o: CompressOptions, seqlen: number): Record<string, unknown> {
  return {
    recipe: o.recipe,
    sparsity: formatSparsity(effectiveSparsity(o)),
    wbits: o.wbits,
    groupSize: o.groupSize,
    asymmetric: o.asymmetric,
    abits: o.abits,
    kvbits: o.kvbits,
    alpha: o.alpha,
    damp: o.damp,
    samples: o.samples,
    seqlen,
    seed: o.seed,
    calibrationMode: o.calibrationMode,
    solver: o.solver ?? 'batched',
  };
}

/**
 * Refuses a group size larger than the input width of a layer the job compresses (OptionError,
 * CLI exit 2, naming the sizes that fit). Called after loading, before any work.
 */
export function checkGroupSizeFits(groupSize: number, layers: ReadonlyArray<{ name: string; inFeatures: number }>): void {
  if (groupSize === 0 || layers.length === 0) return;
  const narrowest = layers.reduce((m, l) => (l.inFeatures < m.inFeatures ? l : m));
  validateGroupSize(groupSize, narrowest.inFeatures, `layer ${narrowest.name}`);
}

export function round6(x: number): number {
  return Number(x.toPrecision(6));
}
