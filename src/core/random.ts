// Seeded random numbers and synthetic layers for tests and benchmarks (never Math.random).

/** mulberry32: small, fast, deterministic 32-bit PRNG. Returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal sampler (Box–Muller) over a seeded uniform source. */
export function seededNormal(seed: number): () => number {
  const u = seededRandom(seed);
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    let a = u();
    while (a <= 1e-300) a = u();
    const b = u();
    const r = Math.sqrt(-2 * Math.log(a));
    spare = r * Math.sin(2 * Math.PI * b);
    return r * Math.cos(2 * Math.PI * b);
  };
}

export interface SyntheticLayer {
  rows: number;
  cols: number;
  weight: Float64Array;
  /** X ∈ R^{cols×tokens}, row-major. */
  inputs: Float64Array;
  tokens: number;
  /** H = X Xᵀ (undamped). */
  hessian: Float64Array;
  /** Mean per-channel energy ‖X_j‖²/tokens. */
  channelEnergy: Float64Array;
}

/**
 * A layer with correlated inputs, shaped like rotated LLM activations: X = (F·Z + N)·diag(c),
 * F a cols×rank factor loading (a few strong shared directions), N independent noise, c
 * per-channel scales spread over about one decade (optionally a few outlier channels scaled by
 * `outlierScale`). W has Gaussian rows with mild outliers.
 */
export function syntheticLayer(rows: number, cols: number, seed: number, options: { tokens?: number; rank?: number; noise?: number; outlierChannels?: number; outlierScale?: number } = {}): SyntheticLayer {
  const tokens = options.tokens ?? Math.max(2 * cols, 256);
  const rank = options.rank ?? Math.max(4, Math.floor(cols / 8));
  const noise = options.noise ?? 0.5;
  const g = seededNormal(seed);
  const f = new Float64Array(cols * rank);
  for (let i = 0; i < f.length; i++) f[i] = g();
  // Decaying factor strengths → a spread spectrum rather than a flat one.
  const strength = new Float64Array(rank);
  for (let t = 0; t < rank; t++) strength[t] = 3 / Math.sqrt(1 + t);
  const z = new Float64Array(rank * tokens);
  for (let i = 0; i < z.length; i++) z[i] = g();
  const c = new Float64Array(cols);
  for (let j = 0; j < cols; j++) c[j] = Math.exp(1.2 * g() * 0.5);
  // Outlier input channels (as LLM activations have before rotation): every ⌊cols/count⌋-th
  // channel, offset 3, scaled up. The default (none) leaves the random stream unchanged.
  const outliers = options.outlierChannels ?? 0;
  for (let t = 0; t < outliers; t++) c[(3 + t * Math.floor(cols / outliers)) % cols] *= options.outlierScale ?? 20;
  const x = new Float64Array(cols * tokens);
  for (let j = 0; j < cols; j++) {
    const xo = j * tokens;
    for (let t = 0; t < rank; t++) {
      const a = f[j * rank + t] * strength[t];
      const zo = t * tokens;
      for (let s = 0; s < tokens; s++) x[xo + s] += a * z[zo + s];
    }
    for (let s = 0; s < tokens; s++) x[xo + s] = (x[xo + s] + noise * g()) * c[j];
  }
  const hessian = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) {
    const xi = i * tokens;
    for (let j = 0; j <= i; j++) {
      const xj = j * tokens;
      let s = 0;
      for (let t = 0; t < tokens; t++) s += x[xi + t] * x[xj + t];
      hessian[i * cols + j] = s;
      hessian[j * cols + i] = s;
    }
  }
  const channelEnergy = new Float64Array(cols);
  for (let j = 0; j < cols; j++) channelEnergy[j] = hessian[j * cols + j] / tokens;
  const weight = new Float64Array(rows * cols);
  for (let i = 0; i < weight.length; i++) {
    const v = g() * 0.02;
    weight[i] = i % 97 === 0 ? v * 4 : v;
  }
  return { rows, cols, weight, inputs: x, tokens, hessian, channelEnergy };
}
