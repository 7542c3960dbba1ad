// (A + ρI)⁻¹ for the batched OBR solver (./admm.ts) in ONE n×n float64 array: the lower Cholesky
// factor L, then L⁻¹, are made in the array that holds the matrix, and the float32 inverse
// L⁻ᵀL⁻¹ is made while that array shrinks. Everything large is a float64 product on the backend
// (multi-threaded DGEMM) in blocks of `nb` columns and row chunks of at most n²/16 entries; only
// the nb×nb diagonal blocks go through the WebAssembly kernels, on small copies.
//
// Why: the solver's factorization was its largest moment at 5632 columns (down_proj of a 1B-class
// model, the one that sets a job's peak, issue #12): L was made in the kernels' memory (n²·8) and
// copied out to a JavaScript array (n²·8 more) beside the caller's H, and the inverse's single
// float32 product held L⁻ᵀ, L⁻¹, onnxruntime's output and its JavaScript copy at once (4·n²·4).
// Here, besides the caller's arrays: the matrix (n²·8) plus the operands of one block step
// (≲ 3·n·nb + n²/16 entries, a fraction of n² at any n), then during the float32 phase the
// shrinking float64 array, the growing float32 L⁻¹ and the inverse's rows so far: n²·8 in sum.
//
// Layout: row-major, explicit sizes (./matrix.ts). Only lower triangles are read or written; the
// matrix's strict upper triangle must be 0 (shiftedMatrix makes it so).
import { rowKernels } from './kernels';

export type MatMul64 = (a: Float64Array, b: Float64Array, m: number, k: number, n: number) => Promise<Float64Array>;
export type MatMul32 = (a: Float32Array, b: Float32Array, m: number, k: number, n: number) => Promise<Float32Array>;

/** Columns of one block step: 256 (DGEMM's inner dimension stays efficient), 128 below 4096 columns
 *  so that a step's operands stay a small part of n² on mid-size layers. */
export function blockColumns(n: number): number {
  return n >= 4096 ? 256 : 128;
}

/** Rows of a chunk whose operand has `cols` float64 columns: at most n²/16 entries (16 MiB at
 *  n = 4096, 15.9 MB at 5632), and at least 64 rows. */
export function chunkRows(cols: number, n: number): number {
  return Math.max(64, Math.floor((n * n) / 16 / Math.max(1, cols)));
}

/** C = A·B (m×k · k×n, float64) in the kernels (their gemmSub on copies; single-threaded), for
 *  backends without a float64 product. */
export const kernelProduct64: MatMul64 = (a, b, m, k, n) => {
  const c = new Float64Array(m * n);
  rowKernels.gemmSubtract(c, a, b, m, k, n);
  for (let i = 0; i < c.length; i++) c[i] = -c[i]!;
  return Promise.resolve(c);
};

/**
 * A lower triangular (or, by its lower triangle, symmetric) n×n float64 matrix stored by rows:
 * row i holds its i + 1 entries of columns 0..i, n(n+1)/2 entries in all (half a dense n×n).
 * The rows live in panels of `panelRows` consecutive rows, each panel its own buffer, so that the
 * panels can be handed back one by one as the matrix is consumed (inverseF32).
 */
export class PackedLower {
  readonly panelRows: number;
  private readonly panels: Array<Float64Array | null> = [];

  constructor(readonly n: number, panelRows = Math.max(64, Math.ceil(n / 16))) {
    this.panelRows = panelRows;
    for (let r0 = 0; r0 < n; r0 += panelRows) {
      const r1 = Math.min(n, r0 + panelRows);
      this.panels.push(new Float64Array(triangle(r1) - triangle(r0)));
    }
  }

  /** Row i: its entries of columns 0..i (a view). */
  row(i: number): Float64Array {
    const p = Math.floor(i / this.panelRows);
    const panel = this.panels[p];
    if (!panel) throw new Error(`PackedLower: row ${i} was dropped`);
    const o = triangle(i) - triangle(p * this.panelRows);
    return panel.subarray(o, o + i + 1);
  }

  /** Number of panels (rows [p·panelRows, (p + 1)·panelRows) each). */
  get panelCount(): number {
    return this.panels.length;
  }

  /** Hands panel p's buffer back (its rows can no longer be read). */
  dropPanel(p: number): void {
    this.panels[p] = null;
  }
}

/** Entries of rows 0..i−1 of a lower triangle: i(i + 1)/2. */
function triangle(i: number): number {
  return (i * (i + 1)) / 2;
}

/** Copy of the r×c block at (i0, j0), contiguous (r×c, row-major); entries above the diagonal are 0. */
function block(a: PackedLower, i0: number, j0: number, r: number, c: number): Float64Array {
  const out = new Float64Array(r * c);
  for (let i = 0; i < r; i++) {
    const len = Math.min(c, i0 + i + 1 - j0);
    if (len > 0) out.set(a.row(i0 + i).subarray(j0, j0 + len), i * c);
  }
  return out;
}

/** Copy of the lower triangle (diagonal included) of the b×b diagonal block at (o, o); zeros above. */
function lowerBlock(a: PackedLower, o: number, b: number): Float64Array {
  const out = new Float64Array(b * b);
  for (let i = 0; i < b; i++) out.set(a.row(o + i).subarray(o, o + i + 1), i * b);
  return out;
}

/** Writes the lower triangle (diagonal included) of the b×b `x` into the diagonal block at (o, o). */
function setLowerBlock(a: PackedLower, o: number, b: number, x: Float64Array): void {
  for (let i = 0; i < b; i++) a.row(o + i).set(x.subarray(i * b, i * b + i + 1), o);
}

/** L⁻¹ of the b×b lower `l` in the kernels, as a new array with zeros above the diagonal. */
function invertSmallLower(l: Float64Array, b: number): Float64Array {
  const x = rowKernels.invertLower(l, b);
  for (let i = 0; i < b; i++) x.fill(0, i * b + i + 1, (i + 1) * b);
  return x;
}

/**
 * The lower Cholesky factor of the SPD matrix held by its lower triangle in `a`, IN PLACE.
 * Left-looking by block columns of nb: for the block column [k0, k1) with Lk = L[k0:k1, :k0],
 *   D = A[k0:k1, k0:k1] − Lk Lkᵀ                 one product (nb × k0 × nb), then L11 = chol(D) in
 *                                                 the kernels (on a copy of nb² entries);
 *   L[r, k0:k1] = (A[r, k0:k1] − L[r, :k0] Lkᵀ) L11⁻ᵀ = [L[r, :k0], A[r, k0:k1]] · G   for rows r ≥ k1,
 *                 G = [−(L11⁻¹ Lk)ᵀ; L11⁻ᵀ] (k1 × nb), one product per chunk of rows (its operand,
 *                 the rows' first k1 entries, at most n²/16 entries).
 * The same flops as an unblocked Cholesky (n³/3), nearly all in DGEMM. Returns false when a pivot
 * is not positive (A not positive definite). Each step's temporaries live in its own function's
 * frame, so that none is kept past its step by a suspended one.
 */
export async function choleskyInPlace(a: PackedLower, mm64: MatMul64, nb = blockColumns(a.n)): Promise<boolean> {
  const n = a.n;
  for (let k0 = 0; k0 < n; k0 += nb) {
    const k1 = Math.min(n, k0 + nb);
    let g: Float64Array | null = await factorBlockColumn(a, k0, k1, mm64);
    if (!g) return false;
    const rows = chunkRows(k1, n);
    for (let r0 = k1; r0 < n; r0 += rows) await updatePanelRows(a, r0, Math.min(n, r0 + rows), k0, k1, g, mm64);
    g = null;
  }
  return true;
}

/** L11 of the block column [k0, k1) into place, and its G (k1 × nb; empty for the last block
 *  column); null when a pivot is not positive. */
async function factorBlockColumn(a: PackedLower, k0: number, k1: number, mm64: MatMul64): Promise<Float64Array | null> {
  const b = k1 - k0;
  const d = lowerBlock(a, k0, b);
  const lk = k0 > 0 ? block(a, k0, 0, b, k0) : null;
  if (lk) {
    const lkt = new Float64Array(k0 * b);
    for (let i = 0; i < b; i++) for (let j = 0; j < k0; j++) lkt[j * b + i] = lk[i * k0 + j]!;
    const p = await mm64(lk, lkt, b, k0, b);
    for (let i = 0; i < b; i++) for (let j = 0; j <= i; j++) d[i * b + j] -= p[i * b + j]!;
  }
  // The diagonal block in the kernels' memory, where their Cholesky runs.
  const scratch = rowKernels.scratchMatrix(b * b);
  scratch.set(d);
  if (!rowKernels.cholesky(scratch, b)) return null;
  const l11 = scratch.slice();
  setLowerBlock(a, k0, b, l11);
  if (k1 === a.n) return new Float64Array(0);
  const x11 = invertSmallLower(l11, b);
  const g = new Float64Array(k1 * b);
  if (lk) {
    const mk = await mm64(x11, lk, b, b, k0); // L11⁻¹ Lk, nb × k0
    for (let i = 0; i < b; i++) for (let j = 0; j < k0; j++) g[j * b + i] = -mk[i * k0 + j]!;
  }
  for (let i = 0; i < b; i++) for (let j = 0; j <= i; j++) g[(k0 + j) * b + i] = x11[i * b + j]!;
  return g;
}

/** L[r0:r1, k0:k1] = [L[r, :k0], A[r, k0:k1]] · G, one product. */
async function updatePanelRows(a: PackedLower, r0: number, r1: number, k0: number, k1: number, g: Float64Array, mm64: MatMul64): Promise<void> {
  const b = k1 - k0;
  const y = await mm64(block(a, r0, 0, r1 - r0, k1), g, r1 - r0, k1, b);
  for (let i = 0; i < r1 - r0; i++) a.row(r0 + i).set(y.subarray(i * b, (i + 1) * b), k0);
}

/**
 * L⁻¹ of the lower triangular L in `l`, IN PLACE. By block columns of nb from the last to the
 * first (LAPACK's dtrtri order): with X22 = L⁻¹ of the trailing block (already in place),
 *   X11 = L11⁻¹ (the kernels, on a copy of nb² entries), X21 = −X22 (L21 X11):
 * Q = L21 X11 as one product ((n − k1) × nb × nb), then X21 by row chunks, each
 * X21[r, :] = −X22[r, k1:r₁] · Q[:r₁ − k1] on a copy of the chunk's part of X22 (≤ n²/16 entries).
 * n³/3 flops, nearly all in DGEMM.
 */
export async function invertLowerInPlace(l: PackedLower, mm64: MatMul64, nb = blockColumns(l.n)): Promise<void> {
  const n = l.n;
  for (let j0 = Math.floor((n - 1) / nb) * nb; j0 >= 0; j0 -= nb) {
    const j1 = Math.min(n, j0 + nb);
    let x11: Float64Array | null = invertSmallLower(lowerBlock(l, j0, j1 - j0), j1 - j0);
    if (j1 < n) {
      let q: Float64Array | null = await mm64(block(l, j1, j0, n - j1, j1 - j0), x11, n - j1, j1 - j0, j1 - j0);
      const rows = chunkRows(n - j1, n);
      for (let r0 = j1; r0 < n; r0 += rows) await inverseRows(l, r0, Math.min(n, r0 + rows), j0, j1, q, mm64);
      q = null;
    }
    setLowerBlock(l, j0, j1 - j0, x11);
    x11 = null;
  }
}

/** X[r0:r1, j0:j1] = −X22[r0:r1, j1:r1] · Q[:r1 − j1], one product. */
async function inverseRows(l: PackedLower, r0: number, r1: number, j0: number, j1: number, q: Float64Array, mm64: MatMul64): Promise<void> {
  const b = j1 - j0;
  const y = await mm64(block(l, r0, j1, r1 - r0, r1 - j1), q, r1 - r0, r1 - j1, b);
  for (let i = 0; i < r1 - r0; i++) {
    const row = l.row(r0 + i);
    for (let j = 0; j < b; j++) row[j0 + j] = -y[i * b + j]!;
  }
}

/**
 * L⁻ᵀL⁻¹ (float32, n×n dense, symmetric) from L⁻¹ in `l` (consumed: its panels are handed back).
 * First L⁻¹ in float32 into a dense n×n array, panel by panel from the last, each float64 panel
 * dropped once copied (float64 left + float32 made ≤ n²·4 + one panel, as resident memory: the
 * float32 array's pages are touched as they are written). Then the product IN that array, row
 * chunks [r0, r1) from the first: out[r0:r1, :] = (L⁻¹[r0:, r0:r1])ᵀ · L⁻¹[r0:, :] (rows of L⁻ᵀ
 * vanish left of r0) reads only rows ≥ r0, so each chunk's result replaces rows that no later
 * chunk reads. The operands are the float32 roundings of the float64 L⁻¹, as one n×n product of
 * L⁻ᵀ and L⁻¹ in float32 would read them (the sums run in another order); n³ flops.
 */
export async function inverseF32(l: PackedLower, matmul: MatMul32): Promise<Float32Array> {
  const n = l.n;
  const out = new Float32Array(n * n);
  for (let p = l.panelCount - 1; p >= 0; p--) {
    for (let i = p * l.panelRows; i < Math.min(n, (p + 1) * l.panelRows); i++) out.set(l.row(i), i * n);
    l.dropPanel(p);
  }
  const rows = chunkRows(n, n);
  for (let r0 = 0; r0 < n; r0 += rows) await inverseProductRows(out, n, r0, Math.min(n, r0 + rows), matmul);
  return out;
}

/** Rows [r0, r1) of L⁻ᵀL⁻¹ into `out`, which holds L⁻¹ (float32) from row r0 on. */
async function inverseProductRows(out: Float32Array, n: number, r0: number, r1: number, matmul: MatMul32): Promise<void> {
  const r = r1 - r0;
  const w = n - r0;
  const at = new Float32Array(r * w);
  for (let k = 0; k < w; k++) {
    const src = (r0 + k) * n + r0;
    for (let i = 0; i < r && i <= k; i++) at[i * w + k] = out[src + i]!;
  }
  const y = await matmul(at, out.subarray(r0 * n), r, w, n);
  out.set(y.subarray(0, r * n), r0 * n);
}

/**
 * U with A⁻¹ = UᵀU (upper; as upperCholeskyOfInverse in ./matrix.ts computes it, to float64
 * round-off) for the m×m SPD A given by its entries at(i, j) (read for i ≥ j only), written into
 * `into` (m×m, zeros below the diagonal; a fresh array by default). As there: K = chol(P A P) with
 * P reversing the index order, U = (P K P)⁻¹, i.e. U[i, j] = K⁻¹[m−1−i, m−1−j]; here K and K⁻¹
 * are made in place in one packed triangle (choleskyInPlace, invertLowerInPlace) instead of the
 * kernels' dense m×m factor, its copies and a 2·m² inverse region, and the triangle's panels are
 * handed back as U is written. Null when A is not positive definite.
 */
export async function upperCholeskyOfInverseInPlace(at: (i: number, j: number) => number, m: number, mm64: MatMul64, into: Float64Array = new Float64Array(m * m)): Promise<Float64Array | null> {
  const k = new PackedLower(m);
  for (let i = 0; i < m; i++) {
    const row = k.row(i);
    for (let j = 0; j <= i; j++) row[j] = at(m - 1 - j, m - 1 - i);
  }
  if (!(await choleskyInPlace(k, mm64))) return null;
  await invertLowerInPlace(k, mm64);
  for (let p = k.panelCount - 1; p >= 0; p--) {
    for (let r = p * k.panelRows; r < Math.min(m, (p + 1) * k.panelRows); r++) {
      const row = k.row(r);
      const o = (m - 1 - r) * m + m - 1;
      for (let c = 0; c <= r; c++) into[o - c] = row[c]!;
    }
    k.dropPanel(p);
  }
  return into;
}
