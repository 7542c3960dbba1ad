// Straightforward float64 reference implementations for the core tests, written independently
// of src/core (Gaussian elimination, textbook loops) so a shared bug cannot hide.

/** Solves A x = b (A n×n row-major, any nonsingular) by Gaussian elimination with partial pivoting. */
export function refSolve(a: Float64Array, n: number, b: Float64Array): Float64Array {
  const m = a.slice();
  const x = b.slice();
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r * n + c]) > Math.abs(m[p * n + c])) p = r;
    if (p !== c) {
      for (let j = 0; j < n; j++) [m[c * n + j], m[p * n + j]] = [m[p * n + j], m[c * n + j]];
      [x[c], x[p]] = [x[p], x[c]];
    }
    for (let r = c + 1; r < n; r++) {
      const f = m[r * n + c] / m[c * n + c];
      if (f === 0) continue;
      for (let j = c; j < n; j++) m[r * n + j] -= f * m[c * n + j];
      x[r] -= f * x[c];
    }
  }
  for (let r = n - 1; r >= 0; r--) {
    let s = x[r];
    for (let j = r + 1; j < n; j++) s -= m[r * n + j] * x[j];
    x[r] = s / m[r * n + r];
  }
  return x;
}

export function refInverse(a: Float64Array, n: number): Float64Array {
  const inv = new Float64Array(n * n);
  for (let c = 0; c < n; c++) {
    const e = new Float64Array(n);
    e[c] = 1;
    const col = refSolve(a, n, e);
    for (let r = 0; r < n; r++) inv[r * n + c] = col[r];
  }
  return inv;
}

/** Upper Cholesky U with A = Uᵀ U (textbook). */
export function refUpperCholesky(a: Float64Array, n: number): Float64Array {
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    let s = a[i * n + i];
    for (let k = 0; k < i; k++) s -= u[k * n + i] ** 2;
    u[i * n + i] = Math.sqrt(s);
    for (let j = i + 1; j < n; j++) {
      let t = a[i * n + j];
      for (let k = 0; k < i; k++) t -= u[k * n + i] * u[k * n + j];
      u[i * n + j] = t / u[i * n + i];
    }
  }
  return u;
}

export function refDamp(h: Float64Array, n: number, lambda: number): Float64Array {
  const out = h.slice();
  let mean = 0;
  for (let i = 0; i < n; i++) mean += h[i * n + i];
  mean /= n;
  for (let i = 0; i < n; i++) out[i * n + i] += lambda * mean;
  return out;
}

export function refRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

export function refQ(v: number, s: number, maxq: number): number {
  return Math.min(maxq, Math.max(-maxq - 1, refRound(v / s))) * s;
}

/**
 * A grid laid out as in src/core/quantize.ts, for the references: scales (and signed zero points)
 * of rows×groups, column j of row r in group ⌊j/groupSize⌋ (groupSize 0 = the whole row).
 */
export interface RefLayout {
  groupSize: number;
  zeros?: Float64Array;
}

/** Index of the scale (and zero) of entry (r, j) of a rows×n matrix under `layout`. */
export function refGroupIndex(layout: RefLayout, n: number, r: number, j: number): number {
  if (!layout.groupSize) return r;
  return r * Math.ceil(n / layout.groupSize) + Math.floor(j / layout.groupSize);
}

/** Value of v on the grid with scale s and SIGNED zero z: s·(clamp(round(v/s) + z, −maxq−1, maxq) − z). */
export function refQz(v: number, s: number, z: number, maxq: number): number {
  return (Math.min(maxq, Math.max(-maxq - 1, refRound(v / s) + z)) - z) * s;
}

/** The quantizer of entry (r, j): refQ with the entry's group scale and zero point. */
export function refGridQ(scales: Float64Array, layout: RefLayout, n: number, r: number, j: number, v: number, maxq: number): number {
  const g = refGroupIndex(layout, n, r, j);
  return refQz(v, scales[g], layout.zeros ? layout.zeros[g] : 0, maxq);
}

/** Σ|Q(w) − w|^2.4 of a group on the UNSIGNED asymmetric grid (codes 0 … top, zero zu), exact powers. */
function refUnsignedError(ws: ArrayLike<number>, s: number, zu: number, top: number): number {
  let e = 0;
  for (let j = 0; j < ws.length; j++) {
    const q = Math.min(top, Math.max(0, refRound(ws[j] / s) + zu));
    e += Math.abs(s * (q - zu) - ws[j]) ** 2.4;
  }
  return e;
}

/**
 * Brute-force MSE searches of one group (exact powers, p = 1 − i/100, i < 80, first minimum):
 * symmetric, scale p·absmax/maxq; asymmetric (written on the unsigned grid 0 … 2^b − 1 and shifted
 * at the end), range [p·min(w,0), p·max(w,0)], zero = round(−p·min/scale). `err` is the minimum.
 */
export function refSymmetricSearch(ws: ArrayLike<number>, maxq: number): { scale: number; err: number } {
  let xmax = 0;
  for (let j = 0; j < ws.length; j++) xmax = Math.max(xmax, Math.abs(ws[j]));
  if (xmax === 0) xmax = 1;
  let best = { scale: 0, err: Infinity };
  for (let i = 0; i < 80; i++) {
    const scale = Math.max(((1 - i / 100) * xmax) / maxq, 1e-5);
    let e = 0;
    for (let j = 0; j < ws.length; j++) e += Math.abs(refQ(ws[j], scale, maxq) - ws[j]) ** 2.4;
    if (e < best.err) best = { scale, err: e };
  }
  return best;
}

export function refAsymmetricSearch(ws: ArrayLike<number>, maxq: number): { scale: number; zero: number; err: number } {
  const top = 2 * maxq + 1;
  let lo = 0;
  let hi = 0;
  for (let j = 0; j < ws.length; j++) {
    lo = Math.min(lo, ws[j]);
    hi = Math.max(hi, ws[j]);
  }
  if (lo === 0 && hi === 0) [lo, hi] = [-1, 1];
  let best = { scale: 0, zero: 0, err: Infinity };
  for (let i = 0; i < 80; i++) {
    const p = 1 - i / 100;
    const scale = Math.max((p * hi - p * lo) / top, 1e-5);
    const zu = refRound((-p * lo) / scale);
    const e = refUnsignedError(ws, scale, zu, top);
    if (e < best.err) best = { scale, zero: zu - (maxq + 1), err: e };
  }
  return best;
}

/** Σ|Q(w) − w|^2.4 of a group for a given scale and signed zero (exact powers). */
export function refGroupError(ws: ArrayLike<number>, s: number, z: number, maxq: number): number {
  let e = 0;
  for (let j = 0; j < ws.length; j++) e += Math.abs(refQz(ws[j], s, z, maxq) - ws[j]) ** 2.4;
  return e;
}

/** tr((A−B) H (A−B)ᵀ), plain triple loop. */
export function refLoss(a: Float64Array, b: Float64Array, rows: number, n: number, h: Float64Array): number {
  let t = 0;
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < n; i++) {
      const di = a[r * n + i] - b[r * n + i];
      if (di === 0) continue;
      for (let j = 0; j < n; j++) t += di * h[i * n + j] * (a[r * n + j] - b[r * n + j]);
    }
  }
  return t;
}

/** Sub-matrix H[I, J]. */
export function pick(h: Float64Array, n: number, rowsIdx: number[], colsIdx: number[]): Float64Array {
  const out = new Float64Array(rowsIdx.length * colsIdx.length);
  rowsIdx.forEach((i, a) => colsIdx.forEach((j, b) => (out[a * colsIdx.length + b] = h[i * n + j])));
  return out;
}

export function matVec(a: Float64Array, rows: number, cols: number, x: ArrayLike<number>): Float64Array {
  const y = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    let s = 0;
    for (let j = 0; j < cols; j++) s += a[i * cols + j] * x[j];
    y[i] = s;
  }
  return y;
}

/**
 * OBR compensation exactly as the §2.6 pseudo-code: per row, two separate solves (one with
 * A = H_RR, one with A[I2, I2]), split at column k. `hd` is the damped Hessian.
 */
export function refObrCompensate(w: Float64Array, rows: number, n: number, hd: Float64Array, mask: Uint8Array, scales: Float64Array, maxq: number, k: number, layout: RefLayout = { groupSize: 0 }): Float64Array {
  const wc = new Float64Array(rows * n);
  for (let c = 0; c < rows; c++) {
    const R: number[] = [];
    const E: number[] = [];
    for (let j = 0; j < n; j++) (mask[c * n + j] ? R : E).push(j);
    if (R.length === 0) continue;
    const A = pick(hd, n, R, R);
    const d1 = E.length ? refSolve(A, R.length, matVec(pick(hd, n, R, E), R.length, E.length, E.map((j) => w[c * n + j]))) : new Float64Array(R.length);
    const wbar = R.map((j, i) => w[c * n + j] + d1[i]);
    // ê = w̄ − Q(w̄) with each column's group quantizer (§2.4; one group per row by default).
    const ehat = wbar.map((v, i) => v - refGridQ(scales, layout, n, c, R[i], v, maxq));
    const p = R.filter((j) => j < k).length;
    const I1 = Array.from({ length: p }, (_, i) => i);
    const I2 = Array.from({ length: R.length - p }, (_, i) => p + i);
    const out = wbar.slice();
    if (I1.length && I2.length) {
      const b = matVec(pick(A, R.length, I2, I1), I2.length, I1.length, I1.map((i) => ehat[i]));
      const d2 = refSolve(pick(A, R.length, I2, I2), I2.length, b);
      I2.forEach((i, t) => (out[i] += d2[t]));
    }
    R.forEach((j, i) => (wc[c * n + j] = out[i]));
  }
  return wc;
}

/** Plain (non-lazy) masked GPTQ from column `start`, columns processed one at a time on the whole matrix; static group scales (layout) fixed before the sweep. */
export function refGptq(w0: Float64Array, rows: number, n: number, u: Float64Array, scales: Float64Array, maxq: number, mask: Uint8Array | null, start: number, layout: RefLayout = { groupSize: 0 }): Float64Array {
  const w = w0.slice();
  for (let j = start; j < n; j++) {
    for (let r = 0; r < rows; r++) {
      const v = w[r * n + j];
      const q = mask && !mask[r * n + j] ? 0 : refGridQ(scales, layout, n, r, j, v, maxq);
      const e = (v - q) / u[j * n + j];
      w[r * n + j] = q;
      for (let t = j + 1; t < n; t++) w[r * n + t] -= e * u[j * n + t];
    }
  }
  return w;
}

/**
 * Plain (non-lazy) SparseGPT + GPTQ (OBR_Wrapper.baseline_with_sparsegpt_gptq_obs, P15) in
 * float64: per block of `bs` columns, unstructured masks prune the block's entries with
 * w²/U_jj² ≤ the ⌊count·ratio⌋-th smallest over ALL rows (a full sort); then each column j of the
 * block, on every row: N:M masks prune the N lowest w²/U_cc² of the next M columns at every M-th
 * column (sort by score, then column), q = Q(w)·M, e = (w − q)/U_jj, and EVERY later column of
 * the matrix −= e·U[j, later] at once (no lazy batch). Returns Ŵ and the mask (1 = kept).
 */
export function refSparseGpt(
  w0: Float64Array,
  rows: number,
  n: number,
  u: Float64Array,
  scales: Float64Array,
  maxq: number,
  sparsity: { kind: 'unstructured'; ratio: number } | { kind: 'nm'; n: number; m: number },
  bs: number,
  layout: RefLayout = { groupSize: 0 },
): { weight: Float64Array; mask: Uint8Array } {
  const w = w0.slice();
  const mask = new Uint8Array(rows * n).fill(1);
  const score = (r: number, c: number): number => w[r * n + c] ** 2 / u[c * n + c] ** 2;
  for (let i1 = 0; i1 < n; i1 += bs) {
    const i2 = Math.min(n, i1 + bs);
    if (sparsity.kind === 'unstructured') {
      const all: number[] = [];
      for (let r = 0; r < rows; r++) for (let j = i1; j < i2; j++) all.push(score(r, j));
      const sorted = [...all].sort((a, b) => a - b);
      const at = Math.floor(all.length * sparsity.ratio + 1e-9);
      if (at < all.length) for (let r = 0; r < rows; r++) for (let j = i1; j < i2; j++) if (score(r, j) <= sorted[at]) mask[r * n + j] = 0;
    }
    for (let j = i1; j < i2; j++) {
      for (let r = 0; r < rows; r++) {
        if (sparsity.kind === 'nm' && (j - i1) % sparsity.m === 0) {
          const cand = Array.from({ length: Math.min(sparsity.m, i2 - j) }, (_, t) => j + t);
          cand.sort((a, b) => score(r, a) - score(r, b) || a - b);
          for (const c of cand.slice(0, sparsity.n)) mask[r * n + c] = 0;
        }
        const v = w[r * n + j];
        const q = mask[r * n + j] ? refGridQ(scales, layout, n, r, j, v, maxq) : 0;
        const e = (v - q) / u[j * n + j];
        w[r * n + j] = q;
        for (let t = j + 1; t < n; t++) w[r * n + t] -= e * u[j * n + t];
      }
    }
  }
  return { weight: w, mask };
}
