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
export function refObrCompensate(w: Float64Array, rows: number, n: number, hd: Float64Array, mask: Uint8Array, scales: Float64Array, maxq: number, k: number): Float64Array {
  const wc = new Float64Array(rows * n);
  for (let c = 0; c < rows; c++) {
    const R: number[] = [];
    const E: number[] = [];
    for (let j = 0; j < n; j++) (mask[c * n + j] ? R : E).push(j);
    if (R.length === 0) continue;
    const A = pick(hd, n, R, R);
    const d1 = E.length ? refSolve(A, R.length, matVec(pick(hd, n, R, E), R.length, E.length, E.map((j) => w[c * n + j]))) : new Float64Array(R.length);
    const wbar = R.map((j, i) => w[c * n + j] + d1[i]);
    const ehat = wbar.map((v) => v - refQ(v, scales[c], maxq));
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

/** Plain (non-lazy) masked GPTQ from column `start`, columns processed one at a time on the whole matrix. */
export function refGptq(w0: Float64Array, rows: number, n: number, u: Float64Array, scales: Float64Array, maxq: number, mask: Uint8Array | null, start: number): Float64Array {
  const w = w0.slice();
  for (let j = start; j < n; j++) {
    for (let r = 0; r < rows; r++) {
      const v = w[r * n + j];
      const q = mask && !mask[r * n + j] ? 0 : refQ(v, scales[r], maxq);
      const e = (v - q) / u[j * n + j];
      w[r * n + j] = q;
      for (let t = j + 1; t < n; t++) w[r * n + t] -= e * u[j * n + t];
    }
  }
  return w;
}
