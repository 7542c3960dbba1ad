// The hot per-row kernels (Cholesky, triangular solves, the OBR row compensation, PCG) in one
// self-contained factory; the heaviest run in the compiled WebAssembly SIMD module of
// ./wasm/assembly, passed in as base64. Nothing inside `createRowKernels` refers to anything outside it, so
// its source text (`createRowKernels.toString()`) can be evaluated as-is in a worker thread
// (see ./parallel.ts): that works the same from tsx, from the esbuild bundles and from tests,
// without a separate worker file. Type-only references are erased by the compiler.
// Layout conventions as in ./matrix.ts (row-major Float64Array, explicit sizes).

import { setFlagsFromString } from 'node:v8';
import { KERNELS_WASM_BASE64 } from './wasm/kernelsWasm';

// V8 compiles WebAssembly first with its baseline compiler (Liftoff) and moves a function to
// optimized code only for later calls. A single long call (the factorization behind H⁻¹, a
// triangular inverse, the first rows of a large layer) then runs entirely in baseline code, about
// 2× slower (measured: obr-gptq on 32 rows of a 2048-column layer, 5.8 s → 2.8 s). The kernels
// are small (13 KB), so compile them optimized up front. V8 flags are per process and this runs
// before any kernel is compiled (worker threads start later and share the flag).
setFlagsFromString('--no-liftoff');

/** Per-row OBR problem, see ./obr.ts. */
export interface CompensationProblem {
  /** Dense weights after dead-column zeroing, rows×cols. */
  weight: Float64Array;
  rows: number;
  cols: number;
  /** Damped Hessian cols×cols (P6: the same damped H for every solve). */
  hessian: Float64Array;
  mask: Uint8Array;
  /** Scales fitted on the dense W (P2): rows×groups, row-major (groups = 1 per row when groupSize is 0). */
  scales: Float64Array;
  /** Columns per scale group; 0 or absent = one scale per row. */
  groupSize?: number;
  /** Signed integer zero points, same layout as scales; absent = symmetric (zero 0). */
  zeros?: Float64Array;
  bits: number;
  /** Column split k = ⌊α·n⌋; k = 0 disables the quantization transfer. */
  splitCol: number;
  /**
   * 'auto' (default): a float32 factorization refined to float64 accuracy for rows keeping at
   * least MIXED_MIN_KEPT columns (twice the SIMD throughput), float64 otherwise; 'float64' or
   * 'mixed' force one. Mixed rows whose refinement does not converge fall back to float64.
   */
  precision?: 'auto' | 'float64' | 'mixed';
}

export interface PcgSettings {
  /** Stop when ‖r‖₂ ≤ tol·‖b‖₂ (per solve). */
  tol: number;
  /** Iteration cap per solve; a solve that hits it falls back to the exact Cholesky. */
  maxIter: number;
}

/**
 * One row-parallel step over rows [row0, row1). Arrays that a worker writes must live in
 * SharedArrayBuffers (views on a SharedArrayBuffer are shared, not copied, by postMessage).
 */
export type RowTask =
  | { kind: 'scales'; weight: Float64Array; cols: number; maxq: number; norm: number; grid: number; steps: number; scales: Float64Array; groupSize?: number; zeros?: Float64Array | null }
  | { kind: 'compensate'; problem: CompensationProblem; out: Float64Array; solver: 'direct' | 'pcg'; pcg: PcgSettings }
  | { kind: 'gptq'; weight: Float64Array; cols: number; u: Float64Array; scales: Float64Array; maxq: number; mask: Uint8Array | null; start: number; blockSize: number; codes: Int8Array | null; groupSize?: number; zeros?: Float64Array | null };

/** The slice of the WebAssembly JS API the kernels use (lib "dom" is not loaded here). */
interface WasmMemory {
  buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}
/** The exports of the compiled kernels (src/core/wasm/assembly/index.ts); pointers are byte offsets. */
interface WasmKernels {
  memory: WasmMemory;
  heapBase(): number;
  cholesky(a: number, n: number, lda: number): number;
  invertLower(l: number, n: number, x: number): void;
  compensateRow(h: number, n: number, w: number, mask: number, out: number, k: number, scales: number, zeros: number, gs: number, maxq: number, scratch: number, mixed: number): number;
  cholesky32(a: number, n: number, lda: number): number;
  rowScale(w: number, n: number, maxq: number, norm: number, grid: number, steps: number, t1: number, s1: number, t2: number, s2: number, y2max: number): number;
  asymScale(w: number, n: number, maxq: number, norm: number, grid: number, steps: number, t1: number, s1: number, t2: number, s2: number, y2max: number, zeroOut: number): number;
  gptqRows(w: number, rows: number, n: number, u: number, scales: number, zeros: number, groups: number, gs: number, maxq: number, mask: number, start: number, bs: number, codes: number, err: number, pack: number): void;
  gptqBlock(w: number, rows: number, n: number, u: number, scales: number, zeros: number, groups: number, gs: number, maxq: number, mask: number, i1: number, i2: number, codes: number, err: number, bs: number, pack: number, nmN: number, nmM: number): void;
  gemmSub(c: number, ldc: number, a: number, lda: number, b: number, ldb: number, m: number, k: number, n: number, pack: number): void;
  packDoubles(k: number): number;
  invertLowerBlocked(l: number, n: number, x: number, pack: number): void;
  quadraticFormSum(d: number, rows: number, n: number, h: number): number;
}

/**
 * The kernels for one thread. `wasmBase64` is the compiled SIMD module (./wasm/kernelsWasm.ts);
 * it is a parameter, not an import, because this factory must stay self-contained. Without it
 * (or without WebAssembly SIMD) every kernel runs as plain float64 JavaScript.
 */
export function createRowKernels(wasmBase64: string | null = null) {
  function linAlgError(message: string): Error {
    const e = new Error(message);
    e.name = 'LinAlgError';
    return e;
  }

  // ---- WebAssembly kernels ------------------------------------------------------------
  let wasm: WasmKernels | null | undefined;
  function wasmKernels(): WasmKernels | null {
    if (wasm === undefined) {
      wasm = null;
      if (wasmBase64) {
        try {
          const api = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
          const bytes = Uint8Array.from((globalThis as unknown as { Buffer: { from(s: string, e: string): Uint8Array } }).Buffer.from(wasmBase64, 'base64'));
          wasm = new api.Instance(new api.Module(bytes), {}).exports as unknown as WasmKernels;
        } catch {
          wasm = null; // no WebAssembly SIMD here: the JavaScript loops are used
        }
      }
    }
    return wasm;
  }
  /** Largest module memory the kernels ask for (wasm32 addresses; leave headroom under 4 GiB). */
  const WASM_MAX_BYTES = 3 * 2 ** 30;
  /**
   * Byte offset of a region of `bytes` bytes at the start of the module's free memory (16-byte
   * aligned), growing the memory when needed; null without the kernels or when it would not fit.
   * Views on the memory are invalidated by growth: create them after the last call.
   */
  function wasmRegion(bytes: number): number | null {
    const k = wasmKernels();
    if (!k) return null;
    const base = k.heapBase();
    const need = base + bytes;
    if (need > WASM_MAX_BYTES) return null;
    const have = k.memory.buffer.byteLength;
    if (need > have) k.memory.grow(Math.ceil((need - have) / 65536));
    return base;
  }

  /**
   * Drops the module instance when its memory has grown past `keepBytes`, so a long-lived thread
   * (the worker process between jobs) does not hold a large layer's buffers; the next call
   * re-instantiates the module (about a millisecond). WebAssembly memory cannot shrink otherwise.
   */
  function trim(keepBytes = 64 * 2 ** 20): void {
    if (wasm && wasm.memory.buffer.byteLength > keepBytes) wasm = undefined;
  }

  /** Byte counts rounded up to whole v128 lanes, so regions laid out one after another stay aligned. */
  const pad = (bytes: number): number => Math.ceil(bytes / 16) * 16;

  /**
   * Triangular inverses at least this large use the kernels' blocked one (block columns of 128,
   * the bulk as gemmSub): at 2048, 0.49 s instead of 1.0 s (CPU seconds; the row-by-row
   * kernel's axpys over the growing triangle are memory-bound).
   */
  const BLOCKED_MIN = 256;

  /**
   * A scratch n-element Float64Array in the kernels' memory (so cholesky runs in WebAssembly on
   * it), or a plain array without them. The view is valid until the next call.
   */
  function scratchMatrix(elements: number): Float64Array {
    const base = wasmRegion(elements * 8);
    if (base === null) return new Float64Array(elements);
    return new Float64Array(wasmKernels()!.memory.buffer, base, elements);
  }

  /**
   * In-place lower Cholesky factorization A = L Lᵀ of the n×n SPD matrix `a` (row-major, full
   * storage; only the lower triangle is read). On success the lower triangle holds L and the
   * strict upper triangle is zeroed. Returns false when a pivot is not positive.
   * In WebAssembly (blocked, f64x2, see ./wasm/assembly) when `a` lives in the kernels' memory
   * (scratchMatrix); otherwise the same left-looking algorithm in JavaScript.
   */
  function cholesky(a: Float64Array, n: number): boolean {
    const k = wasmKernels();
    if (k && a.buffer === k.memory.buffer && a.length >= n * n) return k.cholesky(a.byteOffset, n, n) === 1;
    for (let i = 0; i < n; i++) {
      const ri = i * n;
      for (let j = 0; j <= i; j++) {
        const rj = j * n;
        let s0 = 0, s1 = 0;
        let t = 0;
        for (; t + 1 < j; t += 2) { s0 += a[ri + t] * a[rj + t]; s1 += a[ri + t + 1] * a[rj + t + 1]; }
        if (t < j) s0 += a[ri + t] * a[rj + t];
        const s = a[ri + j] - s0 - s1;
        if (j === i) { if (!(s > 0) || !Number.isFinite(s)) return false; a[ri + i] = Math.sqrt(s); }
        else a[ri + j] = s / a[rj + j];
      }
      for (let j = i + 1; j < n; j++) a[ri + j] = 0;
    }
    return true;
  }

  /** L⁻¹ (new array, lower) of the n×n lower triangular `l`; in WebAssembly when it fits (blocked from BLOCKED_MIN). */
  function invertLower(l: Float64Array, n: number): Float64Array {
    // `l` may be a view on the kernels' memory (scratchMatrix), which growth would detach.
    const src = l.buffer === wasmKernels()?.memory.buffer ? l.slice(0, n * n) : l;
    const k0 = wasmKernels();
    const base = k0 ? wasmRegion(2 * n * n * 8 + k0.packDoubles(128) * 8) : null;
    if (base !== null) {
      const k = wasmKernels()!;
      new Float64Array(k.memory.buffer, base, n * n).set(src.subarray(0, n * n));
      if (n >= BLOCKED_MIN) k.invertLowerBlocked(base, n, base + n * n * 8, base + 2 * n * n * 8);
      else k.invertLower(base, n, base + n * n * 8);
      return new Float64Array(k.memory.buffer, base + n * n * 8, n * n).slice();
    }
    const x = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      const ri = i * n;
      for (let k = 0; k < i; k++) {
        const c = -src[ri + k];
        if (c === 0) continue;
        const rk = k * n;
        for (let t = 0; t <= k; t++) x[ri + t] += c * x[rk + t];
      }
      const d = 1 / src[ri + i];
      for (let t = 0; t < i; t++) x[ri + t] *= d;
      x[ri + i] = d;
    }
    return x;
  }

  /** Solves L y = b in place (b has length n), L lower triangular n×n row-major. */
  function solveLowerInPlace(l: Float64Array, n: number, b: Float64Array, ld = n): void {
    for (let i = 0; i < n; i++) {
      const ri = i * ld;
      let s = b[i];
      for (let k = 0; k < i; k++) s -= l[ri + k] * b[k];
      b[i] = s / l[ri + i];
    }
  }

  /** Solves Lᵀ x = y in place, L lower triangular n×n (leading block of a matrix with row stride ld). */
  function solveLowerTransposedInPlace(l: Float64Array, n: number, y: Float64Array, ld = n): void {
    for (let i = n - 1; i >= 0; i--) {
      y[i] /= l[i * ld + i];
      const yi = y[i];
      // Column i of Lᵀ above the diagonal is row i of L: subtract yi·L[i, k] from y[k], k < i.
      const ri = i * ld;
      for (let k = 0; k < i; k++) y[k] -= l[ri + k] * yi;
    }
  }

  /** Solves A x = b for SPD A given its lower Cholesky factor; b is overwritten with x. */
  function choleskySolveInPlace(l: Float64Array, n: number, b: Float64Array, ld = n): void {
    solveLowerInPlace(l, n, b, ld);
    solveLowerTransposedInPlace(l, n, b, ld);
  }

  /** Round half to even, as torch.round does (ties are rare but must be consistent everywhere). */
  function roundHalfEven(x: number): number {
    let r = Math.round(x);
    if (r - x === 0.5 && r % 2 !== 0) r -= 1;
    return r + 0; // −0 → +0: pruned/rounded-to-zero weights are exactly +0

  }

  /** Code of one value on a symmetric grid: clamp(round(w/scale), −(maxq+1), maxq). */
  function symmetricCode(w: number, scale: number, maxq: number): number {
    const q = roundHalfEven(w / scale);
    return q > maxq ? maxq : q < -maxq - 1 ? -maxq - 1 : q;
  }

  /**
   * Code of one value on the grid with integer zero point z (signed range, as the codes):
   * clamp(round(w/scale) + z, −(maxq+1), maxq); the value is scale·(code − z). z = 0 is the
   * symmetric grid (same result as symmetricCode).
   */
  function groupCode(w: number, scale: number, z: number, maxq: number): number {
    const q = roundHalfEven(w / scale) + z;
    return q > maxq ? maxq : q < -maxq - 1 ? -maxq - 1 : q;
  }

  /**
   * Columns per scale group for a groupSize setting (0/absent = the whole row) and groups per row:
   * column j of row r uses scales[r·groups + ⌊j/gs⌋]; the last group may be partial.
   */
  function groupLayout(cols: number, groupSize: number | undefined): { gs: number; groups: number } {
    const gs = groupSize && groupSize > 0 ? groupSize : cols;
    return { gs, groups: Math.ceil(cols / gs) };
  }

  /** Σ_j a[offset + j]·x[j], j < n (4 independent partial sums). */
  function rowDot(a: Float64Array, offset: number, x: Float64Array, n: number): number {
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let j = 0;
    for (; j + 3 < n; j += 4) {
      s0 += a[offset + j] * x[j];
      s1 += a[offset + j + 1] * x[j + 1];
      s2 += a[offset + j + 2] * x[j + 2];
      s3 += a[offset + j + 3] * x[j + 3];
    }
    for (; j < n; j++) s0 += a[offset + j] * x[j];
    return s0 + s1 + s2 + s3;
  }

  /**
   * Σ_r (a_r − b_r)ᵀ H (a_r − b_r) over the rows of A, B (rows×n; b = null means zeros), H n×n
   * symmetric: the layer loss tr(ΔW H ΔWᵀ). In WebAssembly (64-row batches) when H fits.
   */
  function quadraticFormSum(a: Float64Array, b: Float64Array | null, rows: number, n: number, h: Float64Array): number {
    const batch = 64;
    const base = wasmRegion((n * n + batch * n) * 8);
    let total = 0;
    if (base !== null) {
      const kx = wasmKernels()!;
      const memory = kx.memory.buffer;
      new Float64Array(memory, base, n * n).set(h.subarray(0, n * n));
      const dPtr = base + n * n * 8;
      const dv = new Float64Array(memory, dPtr, batch * n);
      for (let r0 = 0; r0 < rows; r0 += batch) {
        const nb = Math.min(batch, rows - r0);
        const o = r0 * n;
        if (b) for (let i = 0; i < nb * n; i++) dv[i] = a[o + i] - b[o + i];
        else dv.set(a.subarray(o, o + nb * n));
        total += kx.quadraticFormSum(dPtr, nb, n, base);
      }
      return total;
    }
    const d = new Float64Array(n);
    for (let r = 0; r < rows; r++) {
      const o = r * n;
      for (let j = 0; j < n; j++) d[j] = b ? a[o + j] - b[o + j] : a[o + j];
      for (let i = 0; i < n; i++) if (d[i] !== 0) total += d[i] * rowDot(h, i * n, d, n);
    }
    return total;
  }

  /** Rows keeping at least this many columns use the mixed-precision row kernel under 'auto'. */
  const MIXED_MIN_KEPT = 256;
  /** Rows this thread solved in mixed precision, and mixed attempts that fell back to float64. */
  const mixedStats = { mixed: 0, fallback: 0 };

  /**
   * compensateRowsDirect entirely in WebAssembly: H is copied into the kernels' memory once per
   * call, then each row is one compensateRow (gather, factor, both solves; see ./wasm/assembly).
   * Returns false (nothing written) when the kernels are unavailable or H does not fit.
   */
  function compensateRowsWasm(p: CompensationProblem, out: Float64Array, row0: number, row1: number, signal?: AbortSignal): boolean {
    const { weight: w, cols: n, hessian: h, mask, scales, splitCol: k } = p;
    const zeros = p.zeros ?? null;
    const { gs, groups } = groupLayout(n, p.groupSize);
    let maxKept = 0;
    for (let r = row0; r < row1; r++) {
      let kept = 0;
      for (let j = r * n, e = j + n; j < e; j++) kept += mask[j] ? 1 : 0;
      if (kept > maxKept) maxKept = kept;
    }
    const mode = p.precision ?? 'auto';
    const mixed = mode === 'mixed' || (mode === 'auto' && maxKept >= MIXED_MIN_KEPT);
    const hBytes = n * n * 8;
    const rowBytes = n * 8;
    const scratchBytes = pad(4 * n) + 6 * rowBytes + maxKept * maxKept * (mixed ? 12 : 8);
    const groupBytes = pad(groups * 8);
    const base = wasmRegion(hBytes + 2 * rowBytes + pad(n) + 2 * groupBytes + scratchBytes);
    if (base === null) return false;
    const kx = wasmKernels()!;
    const hPtr = base, wPtr = hPtr + hBytes, outPtr = wPtr + rowBytes, maskPtr = outPtr + rowBytes, sPtr = maskPtr + pad(n), zPtr = sPtr + groupBytes, scratch = zPtr + groupBytes;
    const memory = kx.memory.buffer;
    new Float64Array(memory, hPtr, n * n).set(h.subarray(0, n * n));
    const wv = new Float64Array(memory, wPtr, n);
    const ov = new Float64Array(memory, outPtr, n);
    const mv = new Uint8Array(memory, maskPtr, n);
    const sv = new Float64Array(memory, sPtr, groups);
    const zv = new Float64Array(memory, zPtr, groups);
    const maxq = 2 ** (p.bits - 1) - 1;
    for (let r = row0; r < row1; r++) {
      if (signal?.aborted) throw signal.reason ?? new Error('aborted');
      const o = r * n;
      wv.set(w.subarray(o, o + n));
      mv.set(mask.subarray(o, o + n));
      sv.set(scales.subarray(r * groups, (r + 1) * groups));
      if (zeros) zv.set(zeros.subarray(r * groups, (r + 1) * groups));
      const zArg = zeros ? zPtr : 0;
      if (mixed) {
        if (kx.compensateRow(hPtr, n, wPtr, maskPtr, outPtr, k, sPtr, zArg, gs, maxq, scratch, 1) === 1) {
          mixedStats.mixed++;
          out.set(ov, o);
          continue;
        }
        mixedStats.fallback++;
      }
      if (kx.compensateRow(hPtr, n, wPtr, maskPtr, outPtr, k, sPtr, zArg, gs, maxq, scratch, 0) !== 1) {
        throw linAlgError(`OBR: retained Hessian block of row ${r} is not positive definite; raise --damp`);
      }
      out.set(ov, o);
    }
    return true;
  }

  /**
   * The index sets of one row (mask row at offset o): perm = [R2 (kept, ≥ k), E2 (kept, < k)],
   * each ascending, with |R2| = nr2 and |R| = nr; evicted = E (ne entries).
   */
  function rowSets(mask: Uint8Array, o: number, n: number, k: number, perm: Int32Array, evicted: Int32Array): { nr2: number; nr: number; ne: number } {
    let nr2 = 0;
    let ne = 0;
    for (let j = k; j < n; j++) if (mask[o + j]) perm[nr2++] = j;
    let nr = nr2;
    for (let j = 0; j < Math.min(k, n); j++) if (mask[o + j]) perm[nr++] = j;
    for (let j = 0; j < n; j++) if (!mask[o + j]) evicted[ne++] = j;
    return { nr2, nr, ne };
  }

  /**
   * Computes rows [row0, row1) of W_c = W⊙M + Δ into `out` (rows×cols, same layout).
   * `signal` is checked between rows.
   */
  function compensateRowsDirect(p: CompensationProblem, out: Float64Array, row0 = 0, row1 = p.rows, signal?: AbortSignal): void {
    if (row1 > row0 && compensateRowsWasm(p, out, row0, row1, signal)) return;
    compensateRowsWith(p, out, row0, row1, signal, (a, nr, r) => {
      // In place: the lower triangle becomes L; its leading nr2×nr2 block is chol(A_R2R2).
      const l = a.subarray(0, nr * nr);
      if (!cholesky(l, nr)) throw linAlgError(`OBR: retained Hessian block of row ${r} is not positive definite; raise --damp`);
      return (m, vec) => {
        solveLowerInPlace(l, m, vec, nr);
        solveLowerTransposedInPlace(l, m, vec, nr);
      };
    });
  }

  /** Solves A_mm x = vec in place for the leading m×m block of a row's A = H[R, R]. */
  type RowSolver = (m: number, vec: Float64Array) => void;

  /**
   * The OBR row compensation in JavaScript (§2.3–2.4), rows [row0, row1) of W_c = W⊙M + Δ into
   * `out`, with the solver that `solverFor` builds from each row's A = H[perm, perm] (nr×nr,
   * stride nr, both triangles; the solver may overwrite it). `signal` is checked between rows.
   */
  function compensateRowsWith(p: CompensationProblem, out: Float64Array, row0: number, row1: number, signal: AbortSignal | undefined, solverFor: (a: Float64Array, nr: number, r: number) => RowSolver): void {
    const { weight: w, cols: n, hessian: h, mask, scales, splitCol: k } = p;
    const zeros = p.zeros ?? null;
    const { gs, groups } = groupLayout(n, p.groupSize);
    const maxq = 2 ** (p.bits - 1) - 1;
    const perm = new Int32Array(n);
    const evicted = new Int32Array(n);
    let a = scratchMatrix(n * n);
    const rhs = new Float64Array(n);
    const dense = new Float64Array(n);
    for (let r = row0; r < row1; r++) {
      if (signal?.aborted) throw signal.reason ?? new Error('aborted');
      const o = r * n;
      const { nr2, nr, ne } = rowSets(mask, o, n, k, perm, evicted);
      for (let j = 0; j < n; j++) out[o + j] = 0;
      if (nr === 0) continue;
      if (a.length < n * n) a = new Float64Array(n * n);
      for (let i = 0; i < nr; i++) {
        const hi = perm[i] * n;
        const ai = i * nr;
        for (let j = 0; j < nr; j++) a[ai + j] = h[hi + perm[j]];
      }
      const solve = solverFor(a, nr, r);
      // Pruning compensation: rhs = H[perm, E] w_E = (H·(w⊙(1−m)))[perm] as contiguous dot
      // products over whole rows of H (no gathers), d1 = A⁻¹ rhs.
      if (ne > 0) {
        for (let j = 0; j < n; j++) dense[j] = mask[o + j] ? 0 : w[o + j];
        for (let i = 0; i < nr; i++) rhs[i] = rowDot(h, perm[i] * n, dense, n);
        solve(nr, rhs);
      } else rhs.fill(0, 0, nr);
      // w̄ = w_R + d1, written in perm order into rhs.
      for (let i = 0; i < nr; i++) rhs[i] += w[o + perm[i]];
      // Quantization transfer E2 → R2 (positions [nr2, nr) → [0, nr2)).
      const ne2 = nr - nr2;
      if (ne2 > 0 && nr2 > 0) {
        // b = A_R2E2 ê_E2 = (H·ê scattered to the E2 columns)[R2], again as row dot products;
        // ê uses the quantizer of each column's group (fitted on the dense row, P2).
        dense.fill(0);
        for (let t = 0; t < ne2; t++) {
          const v = rhs[nr2 + t];
          const j = perm[nr2 + t];
          const gi = r * groups + ((j / gs) | 0);
          const s = scales[gi];
          if (zeros) {
            const z = zeros[gi];
            dense[j] = v - (groupCode(v, s, z, maxq) - z) * s;
          } else dense[j] = v - symmetricCode(v, s, maxq) * s;
        }
        const b = new Float64Array(nr2);
        for (let i = 0; i < nr2; i++) b[i] = rowDot(h, perm[i] * n, dense, n);
        solve(nr2, b);
        for (let i = 0; i < nr2; i++) rhs[i] += b[i];
      }
      for (let i = 0; i < nr; i++) out[o + perm[i]] = rhs[i];
    }
  }


  /**
   * Jacobi-preconditioned conjugate gradients on the leading m×m block of `a` (row stride ld):
   * solves A x = b in place of b. Returns the iterations used, or −1 when it did not converge.
   * CG minimizes the error in the A-norm over the Krylov space, which is exactly the excess row
   * loss over the exact compensation (§2.4 exactness facts), so its stopping rule bounds the loss
   * gap directly.
   */
  function pcgSolveInPlace(a: Float64Array, m: number, ld: number, b: Float64Array, work: Float64Array, settings: PcgSettings): number {
    const x = work.subarray(0, m);
    const r = work.subarray(m, 2 * m);
    const z = work.subarray(2 * m, 3 * m);
    const p = work.subarray(3 * m, 4 * m);
    const q = work.subarray(4 * m, 5 * m);
    const dinv = work.subarray(5 * m, 6 * m);
    let bnorm = 0;
    for (let i = 0; i < m; i++) {
      dinv[i] = 1 / a[i * ld + i];
      x[i] = 0;
      r[i] = b[i];
      bnorm += b[i] * b[i];
    }
    if (bnorm === 0) return 0;
    const stop = settings.tol * settings.tol * bnorm;
    let rz = 0;
    for (let i = 0; i < m; i++) {
      z[i] = r[i] * dinv[i];
      p[i] = z[i];
      rz += r[i] * z[i];
    }
    for (let it = 1; it <= settings.maxIter; it++) {
      // q = A p (symmetric, full storage; contiguous rows).
      let pq = 0;
      for (let i = 0; i < m; i++) {
        const s = rowDot(a, i * ld, p, m);
        q[i] = s;
        pq += p[i] * s;
      }
      const alpha = rz / pq;
      let rr = 0;
      let rzNew = 0;
      for (let i = 0; i < m; i++) {
        x[i] += alpha * p[i];
        const ri = r[i] - alpha * q[i];
        r[i] = ri;
        rr += ri * ri;
        const zi = ri * dinv[i];
        z[i] = zi;
        rzNew += ri * zi;
      }
      if (rr <= stop) {
        for (let i = 0; i < m; i++) b[i] = x[i];
        return it;
      }
      const beta = rzNew / rz;
      rz = rzNew;
      for (let i = 0; i < m; i++) p[i] = z[i] + beta * p[i];
    }
    return -1;
  }

  /**
   * Same result as compensateRowsDirect (to the PCG tolerance), replacing the per-row Cholesky
   * (|R|³/3 flops) by conjugate gradients on the gathered retained block (|R|² flops per
   * iteration). Both solves run on the one gathered matrix A_perm = H[[R2,E2],[R2,E2]]: the second
   * uses its leading |R2|×|R2| block. Returns the total CG iterations (for diagnostics).
   */
  function compensateRowsPcg(p: CompensationProblem, out: Float64Array, row0 = 0, row1 = p.rows, signal?: AbortSignal, settings: PcgSettings = { tol: 1e-7, maxIter: 400 }): number {
    const work = new Float64Array(6 * p.cols);
    let iterations = 0;
    compensateRowsWith(p, out, row0, row1, signal, (a, nr, r) => (m, vec) => {
      const it = pcgSolveInPlace(a, m, nr, vec, work, settings);
      if (it >= 0) {
        iterations += it;
        return;
      }
      // Did not converge: exact fallback on a copy of the leading block.
      const l = new Float64Array(m * m);
      for (let i = 0; i < m; i++) for (let j = 0; j <= i; j++) l[i * m + j] = a[i * nr + j];
      if (!cholesky(l, m)) throw linAlgError(`OBR: retained Hessian block of row ${r} is not positive definite; raise --damp`);
      choleskySolveInPlace(l, m, vec);
      iterations += settings.maxIter;
    });
    return iterations;
  }


  const TABLE_STEPS2 = 2 * 8192; // table points per unit of t, t ∈ [0, ½]
  const powerTables = new Map<number, Float64Array>();

  /** t^norm at t = i/TABLE_STEPS2, i = 0 … TABLE_STEPS2/2 (+1 guard entry for interpolation). */
  function powerTable(norm: number): Float64Array {
    let t = powerTables.get(norm);
    if (!t) {
      t = new Float64Array(TABLE_STEPS2 / 2 + 2);
      for (let i = 0; i < t.length; i++) t[i] = (i / TABLE_STEPS2) ** norm;
      powerTables.set(norm, t);
    }
    return t;
  }

  const CLIP_STEPS = 2048; // table points per unit of y = |w|/s − lim for clipped entries
  const CLIP_MAX = 64; // y beyond this uses the exact power
  const clipTables = new Map<number, Float64Array>();
  /** y^norm at y = i/CLIP_STEPS, i ≤ CLIP_MAX·CLIP_STEPS (+1 guard entry). */
  function clipTable(norm: number): Float64Array {
    let t = clipTables.get(norm);
    if (!t) {
      t = new Float64Array(CLIP_MAX * CLIP_STEPS + 2);
      for (let i = 0; i < t.length; i++) t[i] = (i / CLIP_STEPS) ** norm;
      clipTables.set(norm, t);
    }
    return t;
  }

  /** symmetricRowScalesRange in WebAssembly (rowScale); false when the kernels are unavailable. */
  function rowScalesWasm(w: Float64Array, cols: number, maxq: number, norm: number, grid: number, steps: number, scales: Float64Array, row0: number, row1: number): boolean {
    const t1 = powerTable(norm);
    const t2 = clipTable(norm);
    const base = wasmRegion(pad(t1.length * 8) + pad(t2.length * 8) + cols * 8);
    if (base === null) return false;
    const kx = wasmKernels()!;
    const t1Ptr = base, t2Ptr = t1Ptr + pad(t1.length * 8), wPtr = t2Ptr + pad(t2.length * 8);
    const memory = kx.memory.buffer;
    new Float64Array(memory, t1Ptr, t1.length).set(t1);
    new Float64Array(memory, t2Ptr, t2.length).set(t2);
    const wv = new Float64Array(memory, wPtr, cols);
    for (let r = row0; r < row1; r++) {
      wv.set(w.subarray(r * cols, (r + 1) * cols));
      scales[r] = kx.rowScale(wPtr, cols, maxq, norm, grid, steps, t1Ptr, TABLE_STEPS2, t2Ptr, CLIP_STEPS, CLIP_MAX);
    }
    return true;
  }

  /**
   * Per-row symmetric scales of rows [row0, row1) of W (rows×cols) into `scales` (§1.7 step 2):
   * xmax_r = max(|min(w,0)|, max(w,0)) (all-zero rows use 1); with `steps` > 1 the MSE shrink
   * search picks scale = p·xmax/maxq, p = 1 − i/grid, i < steps, minimizing Σ|Q(w)−w|^norm
   * (first minimum wins); scales are floored at 1e-5.
   */
  function symmetricRowScalesRange(w: Float64Array, cols: number, maxq: number, norm: number, grid: number, steps: number, scales: Float64Array, row0: number, row1: number): void {
    const table = powerTable(norm);
    if (steps > 1 && row1 > row0 && rowScalesWasm(w, cols, maxq, norm, grid, steps, scales, row0, row1)) return;
    for (let r = row0; r < row1; r++) scales[r] = symmetricScaleJs(w, r * cols, cols, maxq, norm, grid, steps, table);
  }

  /** The MSE clip search of §1.7 step 2 on w[o, o + n) in JavaScript (see symmetricRowScalesRange). */
  function symmetricScaleJs(w: Float64Array, o: number, cols: number, maxq: number, norm: number, grid: number, steps: number, table: Float64Array): number {
    let lo = 0;
    let hi = 0;
    for (let j = 0; j < cols; j++) {
      const v = w[o + j];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    let xmax = Math.max(-lo, hi);
    if (xmax === 0) xmax = 1;
    let best = Infinity;
    let bestScale = Math.max(xmax / maxq, 1e-5);
    for (let i = 0; i < steps; i++) {
      const p = 1 - i / grid;
      const scale = Math.max((p * xmax) / maxq, 1e-5);
      // Σ|Q(w)−w|^norm: unclipped entries have |Q(w)−w| = scale·t with t = |w/s − round(w/s)|
      // ∈ [0, ½] (ties give ½ either way), so their sum is scale^norm·Σ t^norm, with t^norm
      // read from a table (relative error < 1e-6, below the fp32 noise of the reference);
      // clipped entries use the exact power.
      const inv = 1 / scale;
      let unclipped = 0;
      let clipped = 0;
      for (let j = 0; j < cols; j++) {
        const v = w[o + j];
        const x = v * inv;
        const q = Math.round(x);
        if (q > maxq) clipped += (v - maxq * scale) ** norm;
        else if (q < -maxq - 1) clipped += (-(maxq + 1) * scale - v) ** norm;
        else {
          const u = Math.abs(x - q) * TABLE_STEPS2;
          const k = u | 0;
          unclipped += table[k] + (table[k + 1] - table[k]) * (u - k);
        }
      }
      const err = unclipped * scale ** norm + clipped;
      if (err < best) {
        best = err;
        bestScale = scale;
      }
    }
    return bestScale;
  }

  /**
   * The asymmetric MSE clip search on w[o, o + n) in JavaScript (the reference min/max quantizer
   * with its shrink search; see asymScale in ./wasm/assembly): both ends of [min(w, 0), max(w, 0)]
   * shrink by the same p, the zero point is re-rounded for each p. `maxq` is the signed top code
   * 2^(b−1) − 1; returns the scale and the SIGNED zero point (unsigned zero − 2^(b−1)).
   */
  function asymScaleJs(w: Float64Array, o: number, n: number, maxq: number, norm: number, grid: number, steps: number, table: Float64Array): { scale: number; zero: number } {
    const top = 2 * maxq + 1;
    let lo = 0;
    let hi = 0;
    for (let j = 0; j < n; j++) {
      const v = w[o + j];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (lo === 0 && hi === 0) {
      lo = -1;
      hi = 1;
    }
    let best = Infinity;
    let bestScale = Math.max((hi - lo) / top, 1e-5);
    let bestZero = roundHalfEven(-lo / bestScale);
    for (let i = 0; i < steps; i++) {
      const p = 1 - i / grid;
      const a = p * lo;
      const scale = Math.max((p * hi - a) / top, 1e-5);
      const zero = roundHalfEven(-a / scale);
      const inv = 1 / scale;
      const up = top - zero;
      const down = -zero;
      let unclipped = 0;
      let clipped = 0;
      for (let j = 0; j < n; j++) {
        const v = w[o + j];
        const x = v * inv;
        const q = Math.round(x);
        if (q > up) clipped += (v - up * scale) ** norm;
        else if (q < down) clipped += (down * scale - v) ** norm;
        else {
          const u = Math.abs(x - q) * TABLE_STEPS2;
          const k = u | 0;
          unclipped += table[k] + (table[k + 1] - table[k]) * (u - k);
        }
      }
      const err = unclipped * scale ** norm + clipped;
      if (err < best) {
        best = err;
        bestScale = scale;
        bestZero = zero;
      }
    }
    return { scale: bestScale, zero: bestZero - (maxq + 1) };
  }

  /** groupScalesRange in WebAssembly (rowScale / asymScale per group); false without the kernels. */
  function groupScalesWasm(w: Float64Array, cols: number, maxq: number, norm: number, grid: number, steps: number, gs: number, groups: number, scales: Float64Array, zeros: Float64Array | null, row0: number, row1: number): boolean {
    const t1 = powerTable(norm);
    const t2 = clipTable(norm);
    const base = wasmRegion(pad(t1.length * 8) + pad(t2.length * 8) + pad(cols * 8) + 16);
    if (base === null) return false;
    const kx = wasmKernels()!;
    const t1Ptr = base, t2Ptr = t1Ptr + pad(t1.length * 8), wPtr = t2Ptr + pad(t2.length * 8), zPtr = wPtr + pad(cols * 8);
    const memory = kx.memory.buffer;
    new Float64Array(memory, t1Ptr, t1.length).set(t1);
    new Float64Array(memory, t2Ptr, t2.length).set(t2);
    const wv = new Float64Array(memory, wPtr, cols);
    const zv = new Float64Array(memory, zPtr, 1);
    for (let r = row0; r < row1; r++) {
      wv.set(w.subarray(r * cols, (r + 1) * cols));
      for (let g = 0; g < groups; g++) {
        const c0 = g * gs;
        const width = Math.min(cols, c0 + gs) - c0;
        const gp = wPtr + c0 * 8;
        if (zeros) {
          scales[r * groups + g] = kx.asymScale(gp, width, 2 * maxq + 1, norm, grid, steps, t1Ptr, TABLE_STEPS2, t2Ptr, CLIP_STEPS, CLIP_MAX, zPtr);
          zeros[r * groups + g] = zv[0] - (maxq + 1);
        } else {
          scales[r * groups + g] = kx.rowScale(gp, width, maxq, norm, grid, steps, t1Ptr, TABLE_STEPS2, t2Ptr, CLIP_STEPS, CLIP_MAX);
        }
      }
    }
    return true;
  }

  /**
   * Group scales of rows [row0, row1) of W (rows×cols) into `scales` (rows×groups, see
   * groupLayout), fitted on the weights given (the dense W, P2): each group gets the symmetric
   * search of symmetricRowScalesRange on its own columns, or with `zeros` (same layout, signed
   * integer zero points written) the asymmetric search of asymScaleJs. groupSize 0 (or ≥ cols)
   * with no zeros is exactly symmetricRowScalesRange (today's per-row scales, bit for bit).
   */
  function groupScalesRange(w: Float64Array, cols: number, maxq: number, norm: number, grid: number, steps: number, groupSize: number, scales: Float64Array, zeros: Float64Array | null, row0: number, row1: number): void {
    const { gs, groups } = groupLayout(cols, groupSize);
    if (!zeros && groups === 1) return symmetricRowScalesRange(w, cols, maxq, norm, grid, steps, scales, row0, row1);
    if (steps > 1 && row1 > row0 && groupScalesWasm(w, cols, maxq, norm, grid, steps, gs, groups, scales, zeros, row0, row1)) return;
    const table = powerTable(norm);
    for (let r = row0; r < row1; r++) {
      for (let g = 0; g < groups; g++) {
        const c0 = g * gs;
        const width = Math.min(cols, c0 + gs) - c0;
        if (zeros) {
          const f = asymScaleJs(w, r * cols + c0, width, maxq, norm, grid, steps, table);
          scales[r * groups + g] = f.scale;
          zeros[r * groups + g] = f.zero;
        } else scales[r * groups + g] = symmetricScaleJs(w, r * cols + c0, width, maxq, norm, grid, steps, table);
      }
    }
  }

  /**
   * C −= A·B in JavaScript, the fallback of the kernels' gemmSub with the SAME summation order (so
   * the two agree bit for bit): C is m×n at c[cOff] (row stride ldc), A m×k at a[aOff] (stride
   * lda), B k×n at b[bOff] (stride ldb); each entry's Σ_p A[i, p]·B[p, j] is accumulated from 0 in
   * p order, then subtracted once.
   */
  function gemmSubJs(c: Float64Array, cOff: number, ldc: number, a: Float64Array, aOff: number, lda: number, b: Float64Array, bOff: number, ldb: number, m: number, k: number, n: number): void {
    const acc = new Float64Array(n);
    for (let i = 0; i < m; i++) {
      acc.fill(0);
      const ai = aOff + i * lda;
      for (let p = 0; p < k; p++) {
        const e = a[ai + p];
        const bp = bOff + p * ldb;
        for (let t = 0; t < n; t++) acc[t] += e * b[bp + t];
      }
      const ci = cOff + i * ldc;
      for (let t = 0; t < n; t++) c[ci + t] -= acc[t];
    }
  }

  /**
   * C (m×n) −= A (m×k) · B (k×n), all row-major and contiguous: the kernels' gemmSub when they are
   * loaded (operands copied into their memory), else gemmSubJs; the two agree bit for bit.
   */
  function gemmSubtract(c: Float64Array, a: Float64Array, b: Float64Array, m: number, k: number, n: number): void {
    const kx0 = wasmKernels();
    const base = kx0 ? wasmRegion((m * n + m * k + k * n + kx0.packDoubles(k)) * 8) : null;
    if (base === null) return gemmSubJs(c, 0, n, a, 0, k, b, 0, n, m, k, n);
    const kx = wasmKernels()!;
    const cPtr = base, aPtr = cPtr + m * n * 8, bPtr = aPtr + m * k * 8, pPtr = bPtr + k * n * 8;
    const memory = kx.memory.buffer;
    const cv = new Float64Array(memory, cPtr, m * n);
    cv.set(c.subarray(0, m * n));
    new Float64Array(memory, aPtr, m * k).set(a.subarray(0, m * k));
    new Float64Array(memory, bPtr, k * n).set(b.subarray(0, k * n));
    kx.gemmSub(cPtr, n, aPtr, k, bPtr, n, m, k, n, pPtr);
    c.set(cv);
  }

  /**
   * SparseGPT's N:M choice at column j of the row at w[o]: among columns [j, j + width), zero the
   * mask of the `count` lowest w²/U_cc² (current weights), lower column first on ties (the set a
   * sort by (score, column) gives; the kernels' pruneLowest does the same).
   */
  function pruneLowestJs(w: Float64Array, o: number, u: Float64Array, cols: number, mask: Uint8Array, j: number, width: number, count: number): void {
    for (let t = 0; t < Math.min(count, width); t++) {
      let best = -1;
      let bestScore = 0;
      for (let c = j; c < j + width; c++) {
        if (mask[o + c] === 0) continue;
        const d = u[c * cols + c];
        const score = (w[o + c] * w[o + c]) / (d * d);
        if (best < 0 || score < bestScore) {
          best = c;
          bestScore = score;
        }
      }
      if (best < 0) return;
      mask[o + best] = 0;
    }
  }

  /**
   * One lazy block [i1, i2) of GPTQ on rows [row0, row1) of W (rows×cols) in JavaScript, the
   * fallback of the kernels' gptqBlock (same operations in the same order, bit for bit): per row,
   * for each column j of the block, q = Q(w_j)·M_j, err = (w_j − q)/U_jj, the block's later
   * columns −= err·U[j, later]; then W[rows, i2:] −= Err · U[i1:i2, i2:] in one product.
   * err: (row1 − row0)×bs scratch; nmM > 0: N:M pruning as in pruneLowestJs (needs `mask`).
   */
  function gptqBlockJs(w: Float64Array, cols: number, u: Float64Array, scales: Float64Array, zeros: Float64Array | null, groups: number, gs: number, maxq: number, mask: Uint8Array | null, i1: number, i2: number, codes: Int8Array | null, err: Float64Array, bs: number, row0: number, row1: number, nmN: number, nmM: number): void {
    for (let r = row0; r < row1; r++) {
      const o = r * cols;
      // Static groups: column j uses scales[r·groups + ⌊j/gs⌋], fitted before the sweep.
      const sr = r * groups;
      let g = (i1 / gs) | 0;
      let gEnd = Math.min(cols, (g + 1) * gs);
      let s = scales[sr + g];
      let z = zeros ? zeros[sr + g] : 0;
      const eo = (r - row0) * bs - i1;
      for (let j = i1; j < i2; j++) {
        if (j === gEnd) {
          g++;
          gEnd = Math.min(cols, gEnd + gs);
          s = scales[sr + g];
          if (zeros) z = zeros[sr + g];
        }
        if (nmM > 0 && mask && (j - i1) % nmM === 0) pruneLowestJs(w, o, u, cols, mask, j, Math.min(nmM, i2 - j), nmN);
        const v = w[o + j];
        let q = 0;
        let code = z;
        if (!mask || mask[o + j] === 1) {
          // z = 0 on a symmetric grid, where (code − 0)·s is exactly code·s.
          code = zeros ? groupCode(v, s, z, maxq) : symmetricCode(v, s, maxq);
          q = (code - z) * s;
        }
        w[o + j] = q;
        if (codes) codes[o + j] = code;
        const e = (v - q) / u[j * cols + j];
        err[eo + j] = e;
        if (e !== 0) {
          const ru = j * cols;
          for (let t = j + 1; t < i2; t++) w[o + t] -= e * u[ru + t];
        }
      }
    }
    if (i2 < cols) gemmSubJs(w, row0 * cols + i2, cols, err, 0, bs, u, i1 * cols + i2, cols, row1 - row0, i2 - i1, cols - i2);
  }

  /**
   * One GPTQ sweep laid out in the kernels' memory: U (its rows [from, cols) copied in), `rows`
   * rows of W, scales, zeros, mask, codes, the rows×bs error block and gemmSub's packing buffer.
   * Null without the kernels or when it does not fit. The views are valid until the next call
   * that may grow the memory (no kernel call does).
   */
  function gptqMemory(rows: number, cols: number, groups: number, bs: number, u: Float64Array, from: number) {
    const kx0 = wasmKernels();
    if (!kx0) return null;
    const uBytes = cols * cols * 8, wBytes = rows * cols * 8, sBytes = pad(rows * groups * 8), eBytes = pad(rows * bs * 8), pBytes = pad(kx0.packDoubles(bs) * 8), mBytes = pad(rows * cols);
    const base = wasmRegion(uBytes + wBytes + 2 * sBytes + eBytes + pBytes + 2 * mBytes);
    if (base === null) return null;
    const kx = wasmKernels()!;
    const uPtr = base, wPtr = uPtr + uBytes, sPtr = wPtr + wBytes, zPtr = sPtr + sBytes, ePtr = zPtr + sBytes, pPtr = ePtr + eBytes, mPtr = pPtr + pBytes, cPtr = mPtr + mBytes;
    const memory = kx.memory.buffer;
    new Float64Array(memory, uPtr + from * cols * 8, (cols - from) * cols).set(u.subarray(from * cols, cols * cols));
    return {
      kx, uPtr, wPtr, sPtr, zPtr, ePtr, pPtr, mPtr, cPtr,
      u: new Float64Array(memory, uPtr, cols * cols),
      w: new Float64Array(memory, wPtr, rows * cols),
      scales: new Float64Array(memory, sPtr, rows * groups),
      zeros: new Float64Array(memory, zPtr, rows * groups),
      mask: new Uint8Array(memory, mPtr, rows * cols),
      codes: new Int8Array(memory, cPtr, rows * cols),
    };
  }

  /**
   * GPTQ on rows [row0, row1) of W (rows×cols), columns [start, cols), in place: for each column
   * j, q = Q(w_j)·M_j, err = (w_j − q)/U_jj, later columns −= err·U[j, later]. Immediate inside
   * a block of `bs` columns (row by row); the block's errors reach the trailing columns in one
   * dense product W[:, i2:] −= Err·U[i1:i2, i2:] over all the rows (GPTQ's lazy batch;
   * mathematically identical, float64 rounding aside). Rows are independent given U, the scales
   * and the mask, so any row split gives the same result. In WebAssembly (rows copied in and
   * out, U once per call) when it fits, else the same operations in JavaScript.
   */
  function gptqRows(w: Float64Array, cols: number, u: Float64Array, scales: Float64Array, maxq: number, mask: Uint8Array | null, start: number, bs: number, codes: Int8Array | null, row0: number, row1: number, groupSize = 0, zeros: Float64Array | null = null): void {
    const { gs, groups } = groupLayout(cols, groupSize);
    const rows = row1 - row0;
    if (rows <= 0 || start >= cols) return;
    const m = gptqMemory(rows, cols, groups, bs, u, start);
    if (m) {
      m.w.set(w.subarray(row0 * cols, row1 * cols));
      m.scales.set(scales.subarray(row0 * groups, row1 * groups));
      if (zeros) m.zeros.set(zeros.subarray(row0 * groups, row1 * groups));
      if (mask) m.mask.set(mask.subarray(row0 * cols, row1 * cols));
      if (codes) m.codes.set(codes.subarray(row0 * cols, row1 * cols));
      m.kx.gptqRows(m.wPtr, rows, cols, m.uPtr, m.sPtr, zeros ? m.zPtr : 0, groups, gs, maxq, mask ? m.mPtr : 0, start, bs, codes ? m.cPtr : 0, m.ePtr, m.pPtr);
      w.set(m.w, row0 * cols);
      if (codes) codes.set(m.codes, row0 * cols);
      return;
    }
    const err = new Float64Array(rows * bs);
    for (let i1 = start; i1 < cols; i1 += bs) gptqBlockJs(w, cols, u, scales, zeros, groups, gs, maxq, mask, i1, Math.min(cols, i1 + bs), codes, err, bs, row0, row1, 0, 0);
  }

  /** The k-th smallest value (0-based) of `a`, which is reordered (Hoare quickselect, median-of-three pivot). */
  function kthSmallest(a: Float64Array, k: number): number {
    let lo = 0;
    let hi = a.length - 1;
    while (hi > lo) {
      const x = a[lo], y = a[(lo + hi) >>> 1], z = a[hi];
      const pivot = x < y ? (y < z ? y : x < z ? z : x) : x < z ? x : y < z ? z : y;
      let i = lo;
      let j = hi;
      while (i <= j) {
        while (a[i] < pivot) i++;
        while (a[j] > pivot) j--;
        if (i <= j) {
          const t = a[i];
          a[i] = a[j];
          a[j] = t;
          i++;
          j--;
        }
      }
      // Now a[lo..j] ≤ pivot ≤ a[i..hi], and everything strictly between j and i equals the pivot.
      if (k <= j) hi = j;
      else if (k >= i) lo = i;
      else return a[k];
    }
    return a[k];
  }

  /**
   * SparseGPT's unstructured choice for block [i1, i2) over ALL rows: scores w²/U_jj² of the
   * block's current weights, threshold = the ⌊count·ratio⌋-th smallest, entries ≤ it pruned
   * (mask 0). As OBR_Wrapper.baseline_with_sparsegpt_gptq_obs (pitfall P15).
   */
  function blockMask(w: Float64Array, u: Float64Array, mask: Uint8Array, rows: number, cols: number, i1: number, i2: number, ratio: number): void {
    const count = i2 - i1;
    const tmp = new Float64Array(rows * count);
    for (let r = 0; r < rows; r++) {
      for (let j = i1; j < i2; j++) {
        const d = u[j * cols + j];
        const v = w[r * cols + j];
        tmp[r * count + j - i1] = (v * v) / (d * d);
      }
    }
    const at = Math.floor(tmp.length * ratio + 1e-9);
    if (at >= tmp.length) return;
    const thresh = kthSmallest(tmp.slice(), at);
    for (let r = 0; r < rows; r++) for (let j = i1; j < i2; j++) if (tmp[r * count + j - i1] <= thresh) mask[r * cols + j] = 0;
  }

  /**
   * The joint SparseGPT pruning + GPTQ sweep (see src/core/gptq.ts sparseGptInPlace) as a sweep
   * object: `step()` runs the next block of `bs` columns on all rows (unstructured: the block's
   * mask from all rows' current weights, then gptqBlock; N:M: chosen per row inside gptqBlock)
   * and returns false after the last; `finish()` writes W (= Ŵ) and `codes` back and returns
   * the mask (1 = kept). In WebAssembly, W held in the kernels' memory for the whole sweep, when
   * it fits; else in JavaScript. One thread: the unstructured mask of a block depends on every
   * row's weights after the previous block.
   */
  function sparseGptSweep(w: Float64Array, rows: number, cols: number, u: Float64Array, scales: Float64Array, maxq: number, sparsity: { kind: 'unstructured'; ratio: number } | { kind: 'nm'; n: number; m: number } | { kind: 'dense' }, codes: Int8Array | null, bs: number, groupSize: number, zeros: Float64Array | null) {
    const { gs, groups } = groupLayout(cols, groupSize);
    const nmN = sparsity.kind === 'nm' ? sparsity.n : 0;
    const nmM = sparsity.kind === 'nm' ? sparsity.m : 0;
    const m = rows > 0 ? gptqMemory(rows, cols, groups, bs, u, 0) : null;
    let mask: Uint8Array;
    let ww: Float64Array;
    let uu: Float64Array;
    let err: Float64Array | null = null;
    if (m) {
      m.w.set(w.subarray(0, rows * cols));
      m.scales.set(scales.subarray(0, rows * groups));
      if (zeros) m.zeros.set(zeros.subarray(0, rows * groups));
      m.mask.fill(1);
      if (codes) m.codes.set(codes.subarray(0, rows * cols));
      mask = m.mask;
      ww = m.w;
      uu = m.u;
    } else {
      mask = new Uint8Array(rows * cols).fill(1);
      ww = w;
      uu = u;
      err = new Float64Array(rows * bs);
    }
    let i1 = 0;
    return {
      step(): boolean {
        if (i1 >= cols) return false;
        const i2 = Math.min(cols, i1 + bs);
        if (sparsity.kind === 'unstructured') blockMask(ww, uu, mask, rows, cols, i1, i2, sparsity.ratio);
        if (m) m.kx.gptqBlock(m.wPtr, rows, cols, m.uPtr, m.sPtr, zeros ? m.zPtr : 0, groups, gs, maxq, m.mPtr, i1, i2, codes ? m.cPtr : 0, m.ePtr, bs, m.pPtr, nmN, nmM);
        else gptqBlockJs(ww, cols, uu, scales, zeros, groups, gs, maxq, mask, i1, i2, codes, err!, bs, 0, rows, nmN, nmM);
        i1 = i2;
        return i1 < cols;
      },
      finish(): Uint8Array {
        if (!m) return mask;
        w.set(m.w);
        if (codes) codes.set(m.codes);
        return m.mask.slice();
      },
    };
  }

  /**
   * RTN of columns [col0, col1) of rows [row0, row1) onto the group scales (rows×groups, see
   * groupLayout; groupSize 0 = per row) and zero points (null = symmetric); codes written when given.
   */
  function quantizeRange(src: Float64Array, out: Float64Array, codes: Int8Array | null, cols: number, scales: Float64Array, maxq: number, col0: number, col1: number, row0: number, row1: number, groupSize = 0, zeros: Float64Array | null = null): void {
    const { gs, groups } = groupLayout(cols, groupSize);
    for (let r = row0; r < row1; r++) {
      const o = r * cols;
      for (let j = col0; j < col1; j++) {
        const gi = r * groups + ((j / gs) | 0);
        const s = scales[gi];
        let q: number;
        if (zeros) {
          const z = zeros[gi];
          q = groupCode(src[o + j], s, z, maxq);
          out[o + j] = (q - z) * s;
        } else {
          q = symmetricCode(src[o + j], s, maxq);
          out[o + j] = q * s;
        }
        if (codes) codes[o + j] = q;
      }
    }
  }

  /** Runs one row-parallel step on rows [row0, row1) (the worker and the calling thread share this). */
  function runTask(task: RowTask, row0: number, row1: number): void {
    switch (task.kind) {
      case 'scales':
        groupScalesRange(task.weight, task.cols, task.maxq, task.norm, task.grid, task.steps, task.groupSize ?? 0, task.scales, task.zeros ?? null, row0, row1);
        return;
      case 'compensate':
        if (task.solver === 'pcg') compensateRowsPcg(task.problem, task.out, row0, row1, undefined, task.pcg);
        else compensateRowsDirect(task.problem, task.out, row0, row1);
        return;
      case 'gptq':
        gptqRows(task.weight, task.cols, task.u, task.scales, task.maxq, task.mask, task.start, task.blockSize, task.codes, row0, row1, task.groupSize ?? 0, task.zeros ?? null);
        return;
    }
  }

  return { wasmAvailable: (): boolean => wasmKernels() !== null, mixedStats: () => ({ ...mixedStats }), trim, invertLower, quadraticFormSum, runTask, scratchMatrix, symmetricRowScalesRange, groupScalesRange, groupLayout, gptqRows, sparseGptSweep, gemmSubtract, gemmSubJs, kthSmallest, quantizeRange, cholesky, solveLowerInPlace, solveLowerTransposedInPlace, choleskySolveInPlace, roundHalfEven, symmetricCode, groupCode, compensateRowsDirect, pcgSolveInPlace, compensateRowsPcg };
}

export type RowKernels = ReturnType<typeof createRowKernels>;

/** The kernels for this thread. */
export const rowKernels: RowKernels = createRowKernels(KERNELS_WASM_BASE64);
