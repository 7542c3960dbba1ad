// Recipe names and compression options shared by the CLI, the worker, the extension and the
// report. Pure data and parsing only: no runtime imports (see docs/architecture.md).

/** Recipe names used everywhere (CLI flags, settings, reports). `obr-gptq` is the default. */
export const RECIPES = ['obr-gptq', 'obr-rtn', 'sparsegpt-gptq', 'wanda-rtn', 'gptq', 'rtn'] as const;
export type RecipeName = (typeof RECIPES)[number];
export const DEFAULT_RECIPE: RecipeName = 'obr-gptq';

export const RECIPE_DESCRIPTIONS: Record<RecipeName, string> = {
  'obr-gptq': 'OBR with a GPTQ tail: Wanda mask, closed-form pruning + quantization compensation (best quality)',
  'obr-rtn': 'OBR with round-to-nearest: closed-form compensation, then RTN',
  'sparsegpt-gptq': 'SparseGPT joint pruning + GPTQ quantization (the paper\'s main baseline)',
  'wanda-rtn': 'Wanda mask then round-to-nearest, no compensation (fast baseline)',
  gptq: 'GPTQ quantization only, no pruning',
  rtn: 'Round-to-nearest quantization only, no pruning',
};

/** Whether a recipe prunes at all (gptq and rtn are quantization-only). */
export function recipePrunes(recipe: RecipeName): boolean {
  return recipe !== 'gptq' && recipe !== 'rtn';
}

export function isRecipe(name: string): name is RecipeName {
  return (RECIPES as readonly string[]).includes(name);
}

/**
 * Parses a comma-separated recipe list ("wanda-rtn,sparsegpt-gptq"), e.g. the baselines of a job.
 * Keeps the order, drops repeats; throws OptionError naming an unknown recipe and the valid ones.
 */
export function parseRecipeList(text: string): RecipeName[] {
  const names = text.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  if (names.length === 0) throw new OptionError(`no recipe names in "${text}" (give e.g. wanda-rtn,sparsegpt-gptq)`);
  const out: RecipeName[] = [];
  for (const n of names) {
    if (!isRecipe(n)) throw new OptionError(`unknown recipe "${n}" (choose from ${RECIPES.join(', ')})`);
    if (!out.includes(n)) out.push(n);
  }
  return out;
}

/**
 * Sparsity pattern. `unstructured` prunes ⌊n·ratio⌋ entries per row (Wanda, pitfall P7);
 * `nm` prunes the N smallest of every M consecutive columns of each row ("2:4" = prune 2 of 4).
 */
export type Sparsity =
  | { kind: 'dense' }
  | { kind: 'unstructured'; ratio: number }
  | { kind: 'nm'; n: number; m: number };

export class OptionError extends Error {
  override name = 'OptionError';
}

/** Parses "0", "0.5", "50%", "2:4", "4:8". Throws OptionError with an actionable message. */
export function parseSparsity(text: string): Sparsity {
  const s = text.trim();
  const nm = /^(\d+):(\d+)$/.exec(s);
  if (nm) {
    const n = Number(nm[1]);
    const m = Number(nm[2]);
    if (!(m >= 2 && n >= 1 && n < m)) {
      throw new OptionError(`sparsity "${text}": N:M needs 1 ≤ N < M (e.g. 2:4 or 4:8)`);
    }
    return { kind: 'nm', n, m };
  }
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(s);
  const ratio = pct ? Number(pct[1]) / 100 : Number(s);
  if (s === '' || !Number.isFinite(ratio) || ratio < 0 || ratio >= 1) {
    throw new OptionError(`sparsity "${text}": use a fraction in [0, 1) such as 0.5, a percentage such as 50%, or N:M such as 2:4`);
  }
  return ratio === 0 ? { kind: 'dense' } : { kind: 'unstructured', ratio };
}

export function formatSparsity(s: Sparsity): string {
  switch (s.kind) {
    case 'dense':
      return '0';
    case 'unstructured':
      return String(s.ratio);
    case 'nm':
      return `${s.n}:${s.m}`;
    default: {
      const never: never = s;
      return never;
    }
  }
}

/**
 * Weight group sizes: 0 = one scale per output row (the paper's setting), otherwise the number of
 * consecutive input columns sharing a scale (and zero point when asymmetric).
 */
export const GROUP_SIZES = [0, 32, 64, 128, 256] as const;

/**
 * Checks a weight group size: one of GROUP_SIZES and, when the layer's input width `cols` is
 * given, not larger than it. Returns the group size; throws OptionError naming the allowed values
 * (the CLI exits 2). `where` names the layer in the message (e.g. "layer model.layers.0.mlp.up").
 */
export function validateGroupSize(groupSize: number, cols?: number, where?: string): number {
  const allowed = `use one of ${GROUP_SIZES.join(', ')} (0 = one scale per output row)`;
  if (!(GROUP_SIZES as readonly number[]).includes(groupSize)) throw new OptionError(`group size ${groupSize}: ${allowed}`);
  if (cols !== undefined && groupSize > cols) {
    const fits = GROUP_SIZES.filter((g) => g <= cols).join(', ');
    throw new OptionError(`group size ${groupSize} is larger than the input width ${cols}${where ? ` of ${where}` : ''}; use one of ${fits} (0 = one scale per output row)`);
  }
  return groupSize;
}

/** Parses a group size flag or setting ("128"); throws OptionError naming the allowed values. */
export function parseGroupSize(text: string): number {
  const v = Number(text.trim());
  if (text.trim() === '' || !Number.isInteger(v)) throw new OptionError(`group size "${text}": use one of ${GROUP_SIZES.join(', ')} (0 = one scale per output row)`);
  return validateGroupSize(v);
}

/** Short tag for file names: "s50", "2of4", "s0". */
export function sparsityTag(s: Sparsity): string {
  switch (s.kind) {
    case 'dense':
      return 's0';
    case 'unstructured':
      return `s${Math.round(s.ratio * 100)}`;
    case 'nm':
      return `${s.n}of${s.m}`;
    default: {
      const never: never = s;
      return never;
    }
  }
}

/**
 * Short tag for file names: "" per row and symmetric (today's names), "-g128" for groups of 128,
 * an "a" suffix when asymmetric ("-g128a"; "-g0a" per row asymmetric).
 */
export function groupTag(groupSize: number, asymmetric: boolean): string {
  if (groupSize === 0 && !asymmetric) return '';
  return `-g${groupSize}${asymmetric ? 'a' : ''}`;
}

/** The execution providers a job may ask for, in order of preference; filtered by platform at run time. */
export const EXECUTION_PROVIDERS = ['cuda', 'dml', 'coreml', 'webgpu', 'cpu'] as const;
export type ExecutionProviderName = (typeof EXECUTION_PROVIDERS)[number];

/**
 * The default preference: WebGPU is opt-in (`--ep webgpu,cpu`). Measured on an H200 over Vulkan
 * with 16 CPU cores (docs/bench-gpu.md): it works and gives the same results, but the solver took
 * 1.14–1.34× the CPU provider's time (its float32 products round differently, so ADMM needs more
 * iterations, and each product crosses to the GPU and back) and the tiny model's whole job 3.5×.
 */
export const DEFAULT_EXECUTION_PROVIDERS: readonly ExecutionProviderName[] = ['cuda', 'dml', 'coreml', 'cpu'];

export interface CompressOptions {
  recipe: RecipeName;
  sparsity: Sparsity;
  /** Weight bits (2–8). */
  wbits: number;
  /**
   * Weight group size (GROUP_SIZES): 0 = one scale per output row (the paper's setting),
   * otherwise one scale (and zero point) per `groupSize` consecutive input columns of a row.
   */
  groupSize: number;
  /** Asymmetric weight grid: a zero point per group (per row when groupSize is 0). */
  asymmetric: boolean;
  /** Activation bits; 16 disables activation quantization. */
  abits: number;
  /** KV-cache bits; 16 disables KV quantization. */
  kvbits: number;
  /** OBR column split α (paper default 0.5). */
  alpha: number;
  /** Relative Hessian damping λ (paper default 0.01). */
  damp: number;
  /** Calibration text file; undefined = the bundled calibration split. */
  calibText?: string;
  samples: number;
  /** Calibration window length in tokens; undefined = the model's context length. */
  seqlen?: number;
  seed: number;
  /** Ordered execution-provider preference. */
  executionProviders: ExecutionProviderName[];
  /** Output folder; undefined = beside the source model. */
  outDir?: string;
  /** `sequential`: each block calibrated on compressed predecessors (official); `oneshot`: all at once. */
  calibrationMode: 'sequential' | 'oneshot';
  /**
   * OBR compensation solver: `batched` (ADMM over all rows at once, its products on onnxruntime
   * with the job's execution providers; the default) or `exact` (one Cholesky per row, float64).
   * Absent = batched.
   */
  solver?: OBRSolverName;
}

export const OBR_SOLVERS = ['batched', 'exact'] as const;
export type OBRSolverName = (typeof OBR_SOLVERS)[number];

export const DEFAULT_OPTIONS: CompressOptions = {
  recipe: DEFAULT_RECIPE,
  sparsity: { kind: 'unstructured', ratio: 0.5 },
  wbits: 4,
  groupSize: 0,
  asymmetric: false,
  abits: 4,
  kvbits: 4,
  alpha: 0.5,
  damp: 0.01,
  samples: 128,
  seed: 0,
  executionProviders: [...DEFAULT_EXECUTION_PROVIDERS],
  calibrationMode: 'sequential',
  solver: 'batched',
};
