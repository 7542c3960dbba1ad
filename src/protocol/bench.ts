// Benchmark spec and result schema: shared by `obr bench`, the worker's bench handler, the
// extension's "OBR: Run Benchmarks" command and the Benchmarks webview view. Pure data and
// defaults only: no runtime imports (see docs/architecture.md). Schema changes bump
// BENCH_SCHEMA_VERSION.
import { DEFAULT_OPTIONS, RECIPES, type RecipeName } from './recipes';

export const BENCH_SCHEMA_VERSION = 1;

export const BENCH_SUITES = ['quality', 'speed', 'runtime', 'core'] as const;
export type BenchSuite = (typeof BENCH_SUITES)[number];

export const BENCH_SUITE_DESCRIPTIONS: Record<BenchSuite, string> = {
  quality: 'perplexity of the dense model and of every recipe',
  speed: 'compression seconds per layer and end to end, peak memory',
  runtime: 'dense vs packed (MatMulNBits) model in onnxruntime: size, load, prefill, decode with the KV cache',
  core: 'throughput (GFLOP/s) of the numerical core on standard layer sizes',
};

export function isBenchSuite(name: string): name is BenchSuite {
  return (BENCH_SUITES as readonly string[]).includes(name);
}

/** Everything that determines a benchmark run. Both entry points pass the same spec to runBenchmarks. */
export interface BenchSpec {
  /** Dense model (no KV cache inputs): quality, speed, runtime prefill. */
  modelPath: string;
  /** Model with KV cache (past_key_values.* / present.*) for decode; default: model_with_past.onnx beside modelPath. */
  pastModelPath?: string;
  suites: BenchSuite[];
  /** Recipes for the quality and speed suites. */
  recipes: RecipeName[];
  /** Weight bit widths (each recipe runs once per width). */
  wbits: number[];
  /** Sparsity as on the command line: "0.5", "2:4", "4:8". */
  sparsity: string;
  /** Weight group size (0 = one scale per row) and asymmetric grid, for every compression. Absent = 0 / false. */
  groupSize?: number;
  asymmetric?: boolean;
  /** Activation / KV-cache bits for the quality and speed suites (16 = off). */
  abits: number;
  kvbits: number;
  /** Calibration windows and their length (undefined = the model's context length). */
  samples: number;
  seqlen?: number;
  /** Evaluate perplexity on the first K windows of the evaluation text. */
  evalWindows: number;
  /** Evaluation / calibration texts; undefined = the bundled ones. */
  evalText?: string;
  calibText?: string;
  /** Recipe whose weights the runtime suite packs (weight-only: A16 KV16, first wbits). */
  runtimeRecipe: RecipeName;
  /** Prompt length for prefill latency, and tokens generated for decode speed. */
  promptTokens: number;
  decodeTokens: number;
  /** Untimed runs before the timed ones, and timed repetitions (runtime and core suites). */
  warmup: number;
  reps: number;
  /** Repetitions of each compression in the speed suite (compressions are slow; default 1). */
  compressReps: number;
  /** Input columns of the synthetic layers of the core suite (rows = cols). */
  coreSizes: number[];
  /** Execution-provider preference (first that loads wins; CPU last). */
  executionProviders: string[];
  /** Threads for the core's per-row compensation; undefined = its default. */
  threads?: number;
  seed: number;
  /** Results folder; undefined = `benchmarks/` beside the model. */
  outDir?: string;
  /** Keep the compressed models written while benchmarking (default: deleted at the end). */
  keepModels?: boolean;
  /** The command that produced the run (recorded in the result and the Markdown). */
  command?: string;
  /** A note recorded in the result (e.g. "measured the tiny model: small is not installed"). */
  note?: string;
}

export const DEFAULT_BENCH_SPEC: Omit<BenchSpec, 'modelPath'> = {
  suites: [...BENCH_SUITES],
  recipes: [...RECIPES],
  wbits: [DEFAULT_OPTIONS.wbits],
  sparsity: '0.5',
  // The product's and the paper's main setting (W4A4KV4, 50%): rotation + activation/KV quantization.
  abits: DEFAULT_OPTIONS.abits,
  kvbits: DEFAULT_OPTIONS.kvbits,
  samples: 32,
  evalWindows: 16,
  runtimeRecipe: 'obr-gptq',
  promptTokens: 128,
  decodeTokens: 64,
  warmup: 1,
  reps: 5,
  compressReps: 1,
  coreSizes: [256, 512],
  executionProviders: ['cpu'],
  seed: 0,
};

/** Median and spread of repeated measurements (all samples kept, in run order). */
export interface Stat {
  median: number;
  mean: number;
  min: number;
  max: number;
  /** Sample standard deviation (0 for one sample). */
  stdev: number;
  /** Interquartile range (p75 − p25, linear interpolation). */
  iqr: number;
  n: number;
  samples: number[];
}

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryBytes: number;
  platform: string;
  arch: string;
  osRelease: string;
  node: string;
  onnxruntime: string;
  /** Execution provider actually used by the runtime measurements (first that loaded). */
  executionProvider: string;
  /** os.loadavg() [1, 5, 15 min] at the start and at the end of the run. */
  loadAverageStart: number[];
  loadAverageEnd: number[];
}

export interface PeakMemory {
  /** Peak resident set size of the process during the measured phase (bytes). */
  peakRssBytes: number;
  /** RSS when the phase started; peak − base is what the phase added. */
  baseRssBytes: number;
  /**
   * How the peak was measured: Linux VmHWM reset per phase, RSS sampling, or the maxRSS of a
   * child process that measured only this (runtime suite; base = the child's RSS before loading).
   */
  method: 'vmhwm' | 'sampled' | 'child-maxrss';
}

export interface PerplexityPoint {
  perplexity: number;
  nll: number;
  windows: number;
  seqlen: number;
}

export interface RecipeRun {
  recipe: RecipeName;
  wbits: number;
  /** Sparsity actually applied ("0" for quantization-only recipes). */
  sparsity: string;
  abits: number;
  kvbits: number;
  /** Mean fraction of zeros over the compressed layers. */
  measuredSparsity: number;
  /** Sum over layers of tr(ΔW H ΔWᵀ) / tr(W H Wᵀ), averaged (relative layer loss). */
  meanRelativeLoss: number;
  perplexity?: PerplexityPoint;
  /** Compression timings (speed suite), end to end without the perplexity evaluation. */
  seconds?: {
    endToEnd: Stat;
    calibrate: number;
    compress: number;
    write: number;
    perLayer: Stat;
    /** Median seconds per layer role (q, k, v, o, gate, up, down). */
    perRole: Record<string, number>;
  };
  memory?: PeakMemory;
  executionProvider: string;
  layers: number;
  warnings: string[];
}

export interface QualityResult {
  dense: PerplexityPoint;
  runs: RecipeRun[];
  /** perplexity(obr-gptq) / perplexity(sparsegpt-gptq) at each wbits, when both ran. */
  obrVsSparseGpt?: Array<{ wbits: number; ratio: number }>;
  evalText: string;
  calibText: string;
}

export interface SpeedResult {
  runs: RecipeRun[];
  compressReps: number;
}

/** One model variant in onnxruntime (dense or packed). */
export interface RuntimeVariant {
  label: 'dense' | 'packed';
  modelPath: string;
  pastModelPath?: string;
  /** .onnx plus external data files. */
  fileBytes: number;
  pastFileBytes?: number;
  /** Operator counts of interest: MatMul, MatMulNBits, Gemm. */
  ops: Record<string, number>;
  loadMs: Stat;
  /** Forward pass over promptTokens tokens (no cache). */
  prefillMs: Stat;
  prefillTokensPerSecond: number;
  /** Greedy decode of decodeTokens tokens with the KV cache, after a prefill of promptTokens. */
  decodeMsPerToken?: Stat;
  decodeTokensPerSecond?: number;
  /** Tokens actually produced by the decode loop and the cache length at its end. */
  decodeCheck?: { generated: number; finalPastLength: number };
  /** Max |logit| difference of the cached last step against a full no-cache forward of the same tokens. */
  cacheConsistencyMaxAbs?: number;
  memory: PeakMemory;
  executionProvider: string;
}

/** Bytes the compressed linear weights would take in sparse storage formats (estimates, computed). */
export interface SparseStorageEstimate {
  /** Parameters of the compressed linear layers and how many of them are non-zero. */
  params: number;
  nonzeros: number;
  wbits: number;
  /** fp32 dense weights of those layers. */
  denseFp32Bytes: number;
  /** Dense int-N codes + one fp32 scale per row (what MatMulNBits stores, modulo its block layout). */
  denseIntBytes: number;
  /** Bitmap (1 bit per weight) + N-bit non-zeros + scales. */
  bitmapBytes: number;
  /** 2:4 semi-structured: N-bit kept values + 2-bit index per kept value + scales (valid for 2:4 masks; shown as the format's cost). */
  twoFourBytes: number;
  /** CSR: N-bit values + 16-bit column indices + 32-bit row pointers + scales. */
  csrBytes: number;
  /** Rest of the model (embeddings, norms, lm_head) as stored in the packed file. */
  restBytes: number;
  /** Whole-model bytes with the linear weights in the bitmap format. */
  modelBytesBitmap: number;
  /** Whole-model bytes with the linear weights in the 2:4 format. */
  modelBytesTwoFour: number;
}

export interface RuntimeResult {
  recipe: RecipeName;
  wbits: number;
  sparsity: string;
  /** Weight group size of the packed model (0 = per row) and whether it has zero points. */
  groupSize?: number;
  asymmetric?: boolean;
  promptTokens: number;
  decodeTokens: number;
  dense: RuntimeVariant;
  packed?: RuntimeVariant;
  /** packed / dense file size, dense / packed times (>1 = packed faster). */
  ratios?: { size: number; load: number; prefill: number; decode?: number };
  sparseStorage?: SparseStorageEstimate;
  /** Max |logit| difference, packed model vs the simulated (fake-quant) model it was packed from, over the prompt. */
  packedVsSimulatedMaxAbs?: number;
  /** Always present: ORT's MatMul/MatMulNBits kernels are dense, so sparsity gives no speed-up here. */
  sparsityNote: string;
}

export interface CoreKernelPoint {
  method: RecipeName;
  rows: number;
  cols: number;
  seconds: Stat;
  /** Nominal flops of the reference algorithm / median seconds. */
  gflops: number;
  relativeLoss: number;
}

export interface CoreResult {
  sizes: number[];
  points: CoreKernelPoint[];
  /** Where the flop counts come from. */
  flopModel: string;
}

export interface BenchModelInfo {
  path: string;
  bytes: number;
  sha256: string;
  /** hidden_size, layers, vocab… from config.json when present. */
  config?: Record<string, unknown>;
  /** Bundled model size label (tiny / small) when known. */
  label?: string;
}

export interface BenchResult {
  schemaVersion: number;
  tool: { name: 'obr-studio'; version: string };
  createdAt: string;
  spec: BenchSpec;
  model: BenchModelInfo;
  machine: MachineInfo;
  quality?: QualityResult;
  speed?: SpeedResult;
  runtime?: RuntimeResult;
  core?: CoreResult;
  /** Wall seconds per suite and in total. */
  seconds: Record<string, number>;
  warnings: string[];
  notes: string[];
  outputs: { dir: string; json: string; markdown: string; history: string };
}

/** The history file in a benchmark results folder: one BenchHistoryEntry per line. */
export const BENCH_HISTORY_FILE = 'history.jsonl';

/** One line of history.jsonl: the headline numbers of a run, for the history chart. */
export interface BenchHistoryEntry {
  createdAt: string;
  model: string;
  modelSha256: string;
  suites: BenchSuite[];
  loadAverage: number;
  executionProvider: string;
  densePerplexity?: number;
  /** Perplexity per "recipe@wN". */
  perplexity: Record<string, number>;
  /** End-to-end compression seconds per "recipe@wN". */
  compressSeconds: Record<string, number>;
  sizeRatio?: number;
  decodeTokensPerSecond?: { dense?: number; packed?: number };
  prefillMs?: { dense?: number; packed?: number };
  coreGflops?: Record<string, number>;
  json: string;
}

/** Progress of a benchmark run (the worker maps it onto its ProgressEvent). */
export interface BenchProgress {
  suite: BenchSuite | 'setup';
  /** Steps done and total in this suite. */
  done: number;
  total: number;
  message?: string;
}

/** What the extension's Benchmarks view shows: the latest run and the history beside it. */
export interface BenchmarksViewData {
  latest?: BenchResult;
  history: BenchHistoryEntry[];
}

// ---- worker wiring (to be added to HostToWorker / WorkerResult in src/protocol/worker.ts)

export interface BenchRequest {
  type: 'bench';
  id: number;
  spec: BenchSpec;
}

export interface BenchWorkerResult {
  kind: 'bench';
  bench: BenchResult;
}
