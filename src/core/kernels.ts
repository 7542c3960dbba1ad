// The hot per-row kernels (Cholesky, triangular solves, the OBR row compensation, PCG) in one
// self-contained factory. Nothing inside `createRowKernels` refers to anything outside it, so
// its source text (`createRowKernels.toString()`) can be evaluated as-is in a worker thread
// (see ./parallel.ts): that works the same from tsx, from the esbuild bundles and from tests,
// without a separate worker file. Type-only references are erased by the compiler.
// Layout conventions as in ./matrix.ts (row-major Float64Array, explicit sizes).

/** Per-row OBR problem, see ./obr.ts. */
export interface CompensationProblem {
  /** Dense weights after dead-column zeroing, rows×cols. */
  weight: Float64Array;
  rows: number;
  cols: number;
  /** Damped Hessian cols×cols (P6: the same damped H for every solve). */
  hessian: Float64Array;
  mask: Uint8Array;
  scales: Float64Array;
  bits: number;
  /** Column split k = ⌊α·n⌋; k = 0 disables the quantization transfer. */
  splitCol: number;
  /** 'float64' (default): float64 Cholesky per row. 'mixed': float32 SIMD factorization plus
   *  float64 iterative refinement (same accuracy to ~1e-13; measured slower here, kept opt-in). */
  precision?: 'float64' | 'mixed';
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
  | { kind: 'scales'; weight: Float64Array; cols: number; maxq: number; norm: number; grid: number; steps: number; scales: Float64Array }
  | { kind: 'compensate'; problem: CompensationProblem; out: Float64Array; solver: 'direct' | 'pcg'; pcg: PcgSettings }
  | { kind: 'gptq'; weight: Float64Array; cols: number; u: Float64Array; scales: Float64Array; maxq: number; mask: Uint8Array | null; start: number; blockSize: number; codes: Int8Array | null };

/** The slice of the WebAssembly JS API the SIMD kernel uses (lib "dom" is not loaded here). */
interface WasmMemory {
  buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}

export function createRowKernels() {
  function linAlgError(message: string): Error {
    const e = new Error(message);
    e.name = 'LinAlgError';
    return e;
  }

  // ---- WebAssembly SIMD micro-kernel -------------------------------------------------------
  // dot(p0, p1, p2, p3, q0, q1, nbytes, out): the 4×2 tile of dot products Σ_k P_r[k]·Q_c[k]
  // over nbytes/8 doubles (nbytes a multiple of 16) of rows at byte offsets p0…p3 and q0, q1 of
  // the module's own memory, written as 8 doubles at byte offset `out`; f64x2 lanes, so the
  // results equal the scalar loop up to summation order. The module (≈200 bytes) is assembled
  // here from opcodes, so no .wasm file has to be shipped next to the bundles.
  function buildDotModule(): Uint8Array {
    const leb = (v: number): number[] => {
      const out: number[] = [];
      do {
        let b = v & 0x7f;
        v >>>= 7;
        if (v !== 0) b |= 0x80;
        out.push(b);
      } while (v !== 0);
      return out;
    };
    const section = (id: number, body: number[]): number[] => [id, ...leb(body.length), ...body];
    const name = (t: string): number[] => [...leb(t.length), ...Array.from(t, (c) => c.charCodeAt(0))];
    const I32 = 0x7f;
    const V128 = 0x7b;
    const get = (i: number): number[] => [0x20, ...leb(i)];
    const set = (i: number): number[] => [0x21, ...leb(i)];
    const load = (base: number): number[] => [...get(base), ...get(8), 0x6a, 0xfd, 0x00, 0x03, 0x00]; // v128.load (base + k)
    const fadd = [0xfd, 0xf0, 0x01];
    const fmul = [0xfd, 0xf2, 0x01];
    // params 0–3 p0–p3, 4 q0, 5 q1, 6 nbytes, 7 out; locals 8 k, 9–16 accumulators, 17 y0, 18 y1, 19 x
    // `f32`: f32x4 lanes over float rows, lane sums promoted to f64 at the end.
    const tileBody = (f32: boolean): number[] => {
      const add = f32 ? [0xfd, 0xe4, 0x01] : fadd;
      const mul = f32 ? [0xfd, 0xe6, 0x01] : fmul;
      const body: number[] = [0x02, 0x40, 0x03, 0x40, ...get(8), ...get(6), 0x4f, 0x0d, 0x01, ...load(4), ...set(17), ...load(5), ...set(18)];
      for (let r = 0; r < 4; r++) {
        body.push(...load(r), ...set(19));
        for (let c = 0; c < 2; c++) body.push(...get(9 + 2 * r + c), ...get(19), ...get(17 + c), ...mul, ...add, ...set(9 + 2 * r + c));
      }
      body.push(...get(8), 0x41, 0x10, 0x6a, ...set(8), 0x0c, 0x00, 0x0b, 0x0b);
      for (let i = 0; i < 8; i++) {
        body.push(...get(7));
        if (f32) {
          // f32x4.extract_lane l, f64.promote_f32, summed in f64
          for (let l = 0; l < 4; l++) {
            body.push(...get(9 + i), 0xfd, 0x1f, l, 0xbb);
            if (l > 0) body.push(0xa0);
          }
        } else {
          body.push(...get(9 + i), 0xfd, 0x21, 0x00, ...get(9 + i), 0xfd, 0x21, 0x01, 0xa0);
        }
        body.push(0x39, 0x03, ...leb(8 * i));
      }
      body.push(0x0b);
      return [0x02, 0x01, I32, 0x0b, V128, ...body];
    };
    const f64Tile = tileBody(false);
    const f32Tile = tileBody(true);
    return new Uint8Array([
      0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
      ...section(1, [0x01, 0x60, 0x08, I32, I32, I32, I32, I32, I32, I32, I32, 0x00]),
      ...section(3, [0x02, 0x00, 0x00]),
      ...section(5, [0x01, 0x00, 0x01]),
      ...section(7, [0x03, ...name('dot'), 0x00, 0x00, ...name('dot32'), 0x00, 0x01, ...name('mem'), 0x02, 0x00]),
      ...section(10, [0x02, ...leb(f64Tile.length), ...f64Tile, ...leb(f32Tile.length), ...f32Tile]),
    ]);
  }

  type Tile = (p0: number, p1: number, p2: number, p3: number, q0: number, q1: number, nbytes: number, out: number) => void;
  let simd: { dot: Tile; dot32: Tile; memory: WasmMemory } | null | undefined;
  /** Bytes at the start of the module memory reserved for the tile results. */
  const SIMD_OUT_BYTES = 64;

  function simdKernel(): typeof simd {
    if (simd === undefined) {
      try {
        const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
        const instance = new wasm.Instance(new wasm.Module(buildDotModule()), {});
        simd = { dot: instance.exports.dot as never, dot32: instance.exports.dot32 as never, memory: instance.exports.mem as WasmMemory };
      } catch {
        simd = null; // no WebAssembly SIMD here: the scalar loops are used
      }
    }
    return simd;
  }

  /**
   * A scratch n-element Float64Array in the SIMD module's memory (so cholesky can use the
   * kernel on it), or a plain array when WebAssembly SIMD is unavailable. The view is valid
   * until the next call (memory growth detaches older views).
   */
  function scratchMatrix(elements: number): Float64Array {
    const k = simdKernel();
    if (!k) return new Float64Array(elements);
    const need = SIMD_OUT_BYTES + elements * 8;
    const have = k.memory.buffer.byteLength;
    if (need > have) k.memory.grow(Math.ceil((need - have) / 65536));
    return new Float64Array(k.memory.buffer, SIMD_OUT_BYTES, elements);
  }

  /**
   * In-place lower Cholesky factorization A = L Lᵀ of the n×n SPD matrix `a` (row-major, full
   * storage; only the lower triangle is read). On success the lower triangle holds L and the
   * strict upper triangle is zeroed. Returns false when a pivot is not positive.
   * Left-looking by rows (Cholesky–Banachiewicz) in blocks of 16 rows: each pair of earlier rows
   * j, j+1 is loaded once per block and meets the block's rows 4 at a time in registers
   * (4×2 register tile, 8 multiply-adds per 6 loads), so memory traffic drops 16× against the
   * one-row-at-a-time loop; the 16×16 diagonal block is finished row by row.
   */
  function cholesky(a: Float64Array, n: number): boolean {
    const RB = 16;
    const k0 = simdKernel();
    const tile = k0 && a.buffer === k0.memory.buffer ? k0 : null;
    const base = a.byteOffset;
    const res = tile ? new Float64Array(tile.memory.buffer, 0, 8) : a;
    for (let i0 = 0; i0 < n; i0 += RB) {
      const i1 = Math.min(n, i0 + RB);
      for (let j = 0; j < i0; j += 2) {
        const rj = j * n, rj1 = rj + n;
        const djj = a[rj + j], dj1 = a[rj1 + j + 1], lj1j = a[rj1 + j];
        for (let s = i0; s < i1; s += 4) {
          const nb = Math.min(4, i1 - s);
          const r0 = s * n, r1 = nb > 1 ? r0 + n : r0, r2 = nb > 2 ? r0 + 2 * n : r0, r3 = nb > 3 ? r0 + 3 * n : r0;
          let s00 = 0, s01 = 0, s10 = 0, s11 = 0, s20 = 0, s21 = 0, s30 = 0, s31 = 0;
          if (tile) {
            // j is even, so the tile length is a whole number of f64x2 lanes.
            tile.dot(base + r0 * 8, base + r1 * 8, base + r2 * 8, base + r3 * 8, base + rj * 8, base + rj1 * 8, j * 8, 0);
            s00 = res[0]; s01 = res[1]; s10 = res[2]; s11 = res[3]; s20 = res[4]; s21 = res[5]; s30 = res[6]; s31 = res[7];
          } else for (let k = 0; k < j; k++) {
            const y0 = a[rj + k], y1 = a[rj1 + k];
            const x0 = a[r0 + k], x1 = a[r1 + k], x2 = a[r2 + k], x3 = a[r3 + k];
            s00 += x0 * y0; s01 += x0 * y1;
            s10 += x1 * y0; s11 += x1 * y1;
            s20 += x2 * y0; s21 += x2 * y1;
            s30 += x3 * y0; s31 += x3 * y1;
          }
          let l = (a[r0 + j] - s00) / djj; a[r0 + j] = l; a[r0 + j + 1] = (a[r0 + j + 1] - s01 - l * lj1j) / dj1;
          if (nb > 1) { l = (a[r1 + j] - s10) / djj; a[r1 + j] = l; a[r1 + j + 1] = (a[r1 + j + 1] - s11 - l * lj1j) / dj1; }
          if (nb > 2) { l = (a[r2 + j] - s20) / djj; a[r2 + j] = l; a[r2 + j + 1] = (a[r2 + j + 1] - s21 - l * lj1j) / dj1; }
          if (nb > 3) { l = (a[r3 + j] - s30) / djj; a[r3 + j] = l; a[r3 + j + 1] = (a[r3 + j + 1] - s31 - l * lj1j) / dj1; }
        }
      }
      for (let ii = i0; ii < i1; ii++) {
        const ri = ii * n;
        for (let j = i0; j <= ii; j++) {
          const rj = j * n;
          let s0 = 0, s1 = 0;
          let k = 0;
          for (; k + 1 < j; k += 2) { s0 += a[ri + k] * a[rj + k]; s1 += a[ri + k + 1] * a[rj + k + 1]; }
          if (k < j) s0 += a[ri + k] * a[rj + k];
          const s = a[ri + j] - s0 - s1;
          if (j === ii) { if (!(s > 0) || !Number.isFinite(s)) return false; a[ri + ii] = Math.sqrt(s); }
          else a[ri + j] = s / a[rj + j];
        }
        for (let j = ii + 1; j < n; j++) a[ri + j] = 0;
      }
    }
    return true;
  }
  /**
   * cholesky on a Float32Array (storage in float32, every sum accumulated in float64 except
   * inside the f32x4 SIMD tile); used by the mixed-precision row solver, whose iterative
   * refinement in float64 restores full accuracy.
   */
  function cholesky32(a: Float32Array, n: number): boolean {
    const RB = 16;
    const k0 = simdKernel();
    const tile = k0 && a.buffer === k0.memory.buffer ? k0 : null;
    const base = a.byteOffset;
    const res = tile ? new Float64Array(tile.memory.buffer, 0, 8) : new Float64Array(8);
    for (let i0 = 0; i0 < n; i0 += RB) {
      const i1 = Math.min(n, i0 + RB);
      for (let j = 0; j < i0; j += 2) {
        const rj = j * n, rj1 = rj + n;
        const djj = a[rj + j], dj1 = a[rj1 + j + 1], lj1j = a[rj1 + j];
        for (let s = i0; s < i1; s += 4) {
          const nb = Math.min(4, i1 - s);
          const r0 = s * n, r1 = nb > 1 ? r0 + n : r0, r2 = nb > 2 ? r0 + 2 * n : r0, r3 = nb > 3 ? r0 + 3 * n : r0;
          let s00 = 0, s01 = 0, s10 = 0, s11 = 0, s20 = 0, s21 = 0, s30 = 0, s31 = 0;
          if (tile) {
            // j is even, so the tile length is a whole number of f64x2 lanes.
            // f32x4 lanes cover j & ~3 elements; the last 0 or 2 (j is even) are added here.
            const j4 = j & ~3;
            tile.dot32(base + r0 * 4, base + r1 * 4, base + r2 * 4, base + r3 * 4, base + rj * 4, base + rj1 * 4, j4 * 4, 0);
            s00 = res[0]; s01 = res[1]; s10 = res[2]; s11 = res[3]; s20 = res[4]; s21 = res[5]; s30 = res[6]; s31 = res[7];
            for (let k = j4; k < j; k++) {
              const y0 = a[rj + k], y1 = a[rj1 + k];
              const x0 = a[r0 + k], x1 = a[r1 + k], x2 = a[r2 + k], x3 = a[r3 + k];
              s00 += x0 * y0; s01 += x0 * y1;
              s10 += x1 * y0; s11 += x1 * y1;
              s20 += x2 * y0; s21 += x2 * y1;
              s30 += x3 * y0; s31 += x3 * y1;
            }
          } else for (let k = 0; k < j; k++) {
            const y0 = a[rj + k], y1 = a[rj1 + k];
            const x0 = a[r0 + k], x1 = a[r1 + k], x2 = a[r2 + k], x3 = a[r3 + k];
            s00 += x0 * y0; s01 += x0 * y1;
            s10 += x1 * y0; s11 += x1 * y1;
            s20 += x2 * y0; s21 += x2 * y1;
            s30 += x3 * y0; s31 += x3 * y1;
          }
          let l = (a[r0 + j] - s00) / djj; a[r0 + j] = l; a[r0 + j + 1] = (a[r0 + j + 1] - s01 - l * lj1j) / dj1;
          if (nb > 1) { l = (a[r1 + j] - s10) / djj; a[r1 + j] = l; a[r1 + j + 1] = (a[r1 + j + 1] - s11 - l * lj1j) / dj1; }
          if (nb > 2) { l = (a[r2 + j] - s20) / djj; a[r2 + j] = l; a[r2 + j + 1] = (a[r2 + j + 1] - s21 - l * lj1j) / dj1; }
          if (nb > 3) { l = (a[r3 + j] - s30) / djj; a[r3 + j] = l; a[r3 + j + 1] = (a[r3 + j + 1] - s31 - l * lj1j) / dj1; }
        }
      }
      for (let ii = i0; ii < i1; ii++) {
        const ri = ii * n;
        for (let j = i0; j <= ii; j++) {
          const rj = j * n;
          let s0 = 0, s1 = 0;
          let k = 0;
          for (; k + 1 < j; k += 2) { s0 += a[ri + k] * a[rj + k]; s1 += a[ri + k + 1] * a[rj + k + 1]; }
          if (k < j) s0 += a[ri + k] * a[rj + k];
          const s = a[ri + j] - s0 - s1;
          if (j === ii) { if (!(s > 0) || !Number.isFinite(s)) return false; a[ri + ii] = Math.sqrt(s); }
          else a[ri + j] = s / a[rj + j];
        }
        for (let j = ii + 1; j < n; j++) a[ri + j] = 0;
      }
    }
    return true;
  }
  /** Float32 scratch in the SIMD module's memory (see scratchMatrix); null without SIMD. */
  function scratchMatrix32(elements: number): Float32Array | null {
    const k = simdKernel();
    if (!k) return null;
    const need = SIMD_OUT_BYTES + elements * 4;
    const have = k.memory.buffer.byteLength;
    if (need > have) k.memory.grow(Math.ceil((need - have) / 65536));
    return new Float32Array(k.memory.buffer, SIMD_OUT_BYTES, elements);
  }

  /**
   * Solves A x = b (A = leading m×m block of `a64`, row stride ld) with the float32 Cholesky
   * factor `l32` of A (same stride) plus float64 iterative refinement: x ← x + A⁻¹(b − A x)
   * until the correction stops shrinking. Result in b. Returns false when refinement does not
   * converge (κ(A)·2⁻²⁴ too close to 1): the caller then solves in float64.
   */
  function solveMixed(l32: Float32Array, a64: Float64Array, m: number, ld: number, b: Float64Array, x: Float64Array, r: Float64Array): boolean {
    let bmax = 0;
    for (let i = 0; i < m; i++) {
      x[i] = b[i];
      bmax = Math.max(bmax, Math.abs(b[i]));
    }
    if (bmax === 0) return true;
    const tri = (v: Float64Array): void => {
      for (let i = 0; i < m; i++) {
        const ri = i * ld;
        let s = v[i];
        for (let k = 0; k < i; k++) s -= l32[ri + k] * v[k];
        v[i] = s / l32[ri + i];
      }
      for (let i = m - 1; i >= 0; i--) {
        v[i] /= l32[i * ld + i];
        const vi = v[i];
        const ri = i * ld;
        for (let k = 0; k < i; k++) v[k] -= l32[ri + k] * vi;
      }
    };
    tri(x);
    let last = Infinity;
    for (let it = 0; it < 12; it++) {
      let xmax = 0;
      for (let i = 0; i < m; i++) {
        const ri = i * ld;
        let s0 = 0, s1 = 0;
        let j = 0;
        for (; j + 1 < m; j += 2) {
          s0 += a64[ri + j] * x[j];
          s1 += a64[ri + j + 1] * x[j + 1];
        }
        if (j < m) s0 += a64[ri + j] * x[j];
        r[i] = b[i] - s0 - s1;
        xmax = Math.max(xmax, Math.abs(x[i]));
      }
      tri(r);
      let dmax = 0;
      for (let i = 0; i < m; i++) {
        x[i] += r[i];
        dmax = Math.max(dmax, Math.abs(r[i]));
      }
      if (dmax <= 1e-13 * xmax) break;
      if (dmax > 0.5 * last) {
        // Stagnation: converged to float64 accuracy if the correction is tiny, else diverging.
        if (dmax > 1e-9 * xmax) return false;
        break;
      }
      last = dmax;
    }
    for (let i = 0; i < m; i++) b[i] = x[i];
    return true;
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

  /** Blocks of at least this many columns use the mixed-precision row solver. */
  const MIXED_MIN_COLS = 256;

  /**
   * One row of compensateRowsDirect in mixed precision; false = fall back to float64 for it.
   * Same gathers and formulas as the float64 path (see there).
   */
  function mixedRow(p: CompensationProblem, r: number, perm: Int32Array, nr: number, nr2: number, evicted: Int32Array, ne: number, a32: Float32Array, a64: Float64Array, out: Float64Array, rhs: Float64Array, rhs0: Float64Array, ehat: Float64Array, xs: Float64Array, rs: Float64Array): boolean {
    const { weight: w, cols: n, hessian: h, scales } = p;
    const maxq = 2 ** (p.bits - 1) - 1;
    const o = r * n;
    for (let i = 0; i < nr; i++) {
      const hi = perm[i] * n;
      const ai = i * nr;
      for (let j = 0; j < nr; j++) a64[ai + j] = h[hi + perm[j]];
      for (let j = 0; j <= i; j++) a32[ai + j] = a64[ai + j];
    }
    const l32 = a32.subarray(0, nr * nr);
    if (!cholesky32(l32, nr)) return false;
    for (let i = 0; i < nr; i++) {
      const hi = perm[i] * n;
      let s = 0;
      for (let t = 0; t < ne; t++) {
        const e = evicted[t];
        s += h[hi + e] * w[o + e];
      }
      rhs[i] = s;
    }
    if (ne > 0) {
      if (!solveMixed(l32, a64, nr, nr, rhs, xs, rs)) return false;
    } else rhs.fill(0, 0, nr);
    for (let i = 0; i < nr; i++) rhs[i] += w[o + perm[i]];
    const ne2 = nr - nr2;
    if (ne2 > 0 && nr2 > 0) {
      const s = scales[r];
      for (let t = 0; t < ne2; t++) {
        const v = rhs[nr2 + t];
        ehat[t] = v - symmetricCode(v, s, maxq) * s;
      }
      for (let i = 0; i < nr2; i++) {
        const ai = i * nr + nr2;
        let acc = 0;
        for (let t = 0; t < ne2; t++) acc += a64[ai + t] * ehat[t];
        rhs0[i] = acc;
      }
      if (!solveMixed(l32, a64, nr2, nr, rhs0, xs, rs)) return false;
      for (let i = 0; i < nr2; i++) rhs[i] += rhs0[i];
    }
    for (let i = 0; i < nr; i++) out[o + perm[i]] = rhs[i];
    return true;
  }

  /**
   * Computes rows [row0, row1) of W_c = W⊙M + Δ into `out` (rows×cols, same layout).
   * `signal` is checked between rows.
   */
  function compensateRowsDirect(p: CompensationProblem, out: Float64Array, row0 = 0, row1 = p.rows, signal?: AbortSignal): void {
    const { weight: w, cols: n, hessian: h, mask, scales, splitCol: k } = p;
    const maxq = 2 ** (p.bits - 1) - 1;
    const perm = new Int32Array(n);
    const evicted = new Int32Array(n);
    // Mixed precision (float32 SIMD factorization + float64 refinement) for blocks large enough
    // to gain from it; plain float64 otherwise or when refinement fails for a row.
    const mixed = p.precision === 'mixed' && n >= MIXED_MIN_COLS && simdKernel() !== null;
    const a32 = mixed ? scratchMatrix32(n * n) : null;
    const a64 = mixed ? new Float64Array(n * n) : null;
    let a = mixed ? new Float64Array(0) : scratchMatrix(n * n);
    const rhs = new Float64Array(n);
    const ehat = new Float64Array(n);
    const dense = new Float64Array(n);
    const xs = new Float64Array(n);
    const rs = new Float64Array(n);
    const rhs0 = new Float64Array(n);
    for (let r = row0; r < row1; r++) {
      if (signal?.aborted) throw signal.reason ?? new Error('aborted');
      const o = r * n;
      // perm = [R2 (kept, ≥ k), E2 (kept, < k)], each ascending; evicted = E.
      let nr2 = 0;
      let ne = 0;
      for (let j = k; j < n; j++) if (mask[o + j]) perm[nr2++] = j;
      let nr = nr2;
      for (let j = 0; j < Math.min(k, n); j++) if (mask[o + j]) perm[nr++] = j;
      for (let j = 0; j < n; j++) if (!mask[o + j]) evicted[ne++] = j;
      for (let j = 0; j < n; j++) out[o + j] = 0;
      if (nr === 0) continue;
      if (a32 && a64 && mixedRow(p, r, perm, nr, nr2, evicted, ne, a32, a64, out, rhs, rhs0, ehat, xs, rs)) continue;
      if (a.length < n * n) a = new Float64Array(n * n);
      // A = H[perm, perm] (nr×nr, stride nr).
      for (let i = 0; i < nr; i++) {
        const hi = perm[i] * n;
        const ai = i * nr;
        for (let j = 0; j <= i; j++) a[ai + j] = h[hi + perm[j]];
      }
      if (!cholesky(a.subarray(0, nr * nr), nr)) {
        throw linAlgError(`OBR: retained Hessian block of row ${r} is not positive definite; raise --damp`);
      }
      const l = a.subarray(0, nr * nr);
      // Pruning compensation: rhs = H[perm, E] w_E = (H·(w⊙(1−m)))[perm] as contiguous dot
      // products over whole rows of H (no gathers), d1 = A⁻¹ rhs.
      if (ne > 0) {
        for (let j = 0; j < n; j++) dense[j] = mask[o + j] ? 0 : w[o + j];
        for (let i = 0; i < nr; i++) rhs[i] = rowDot(h, perm[i] * n, dense, n);
      }
      if (ne > 0) choleskySolveInPlace(l, nr, rhs);
      else rhs.fill(0, 0, nr);
      // w̄ = w_R + d1, written in perm order into rhs.
      for (let i = 0; i < nr; i++) rhs[i] += w[o + perm[i]];
      // Quantization transfer E2 → R2 (positions [nr2, nr) → [0, nr2)).
      const ne2 = nr - nr2;
      if (ne2 > 0 && nr2 > 0) {
        const s = scales[r];
        for (let t = 0; t < ne2; t++) {
          const v = rhs[nr2 + t];
          ehat[t] = v - symmetricCode(v, s, maxq) * s;
        }
        // b = A_R2E2 ê_E2 = (H·ê scattered to the E2 columns)[R2], again as row dot products.
        const b = new Float64Array(nr2);
        dense.fill(0);
        for (let t = 0; t < ne2; t++) dense[perm[nr2 + t]] = ehat[t];
        for (let i = 0; i < nr2; i++) b[i] = rowDot(h, perm[i] * n, dense, n);
        // Leading nr2×nr2 block of L (row stride nr) is chol(A_R2R2).
        solveLowerInPlace(l, nr2, b, nr);
        solveLowerTransposedInPlace(l, nr2, b, nr);
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
        const ri = i * ld;
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        let j = 0;
        for (; j + 3 < m; j += 4) {
          s0 += a[ri + j] * p[j];
          s1 += a[ri + j + 1] * p[j + 1];
          s2 += a[ri + j + 2] * p[j + 2];
          s3 += a[ri + j + 3] * p[j + 3];
        }
        for (; j < m; j++) s0 += a[ri + j] * p[j];
        const s = s0 + s1 + s2 + s3;
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
    const { weight: w, cols: n, hessian: h, mask, scales, splitCol: k } = p;
    const maxq = 2 ** (p.bits - 1) - 1;
    const perm = new Int32Array(n);
    const evicted = new Int32Array(n);
    const a = new Float64Array(n * n);
    const rhs = new Float64Array(n);
    const ehat = new Float64Array(n);
    const b = new Float64Array(n);
    const work = new Float64Array(6 * n);
    let iterations = 0;
    for (let r = row0; r < row1; r++) {
      if (signal?.aborted) throw signal.reason ?? new Error('aborted');
      const o = r * n;
      let nr2 = 0;
      let ne = 0;
      for (let j = k; j < n; j++) if (mask[o + j]) perm[nr2++] = j;
      let nr = nr2;
      for (let j = 0; j < Math.min(k, n); j++) if (mask[o + j]) perm[nr++] = j;
      for (let j = 0; j < n; j++) if (!mask[o + j]) evicted[ne++] = j;
      for (let j = 0; j < n; j++) out[o + j] = 0;
      if (nr === 0) continue;
      for (let i = 0; i < nr; i++) {
        const hi = perm[i] * n;
        const ai = i * nr;
        for (let j = 0; j < nr; j++) a[ai + j] = h[hi + perm[j]];
      }
      for (let i = 0; i < nr; i++) {
        const hi = perm[i] * n;
        let s = 0;
        for (let t = 0; t < ne; t++) {
          const e = evicted[t];
          s += h[hi + e] * w[o + e];
        }
        rhs[i] = s;
      }
      const solve = (m: number, vec: Float64Array): void => {
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
      };
      if (ne > 0) solve(nr, rhs);
      else rhs.fill(0, 0, nr);
      for (let i = 0; i < nr; i++) rhs[i] += w[o + perm[i]];
      const ne2 = nr - nr2;
      if (ne2 > 0 && nr2 > 0) {
        const s = scales[r];
        for (let t = 0; t < ne2; t++) {
          const v = rhs[nr2 + t];
          ehat[t] = v - symmetricCode(v, s, maxq) * s;
        }
        for (let i = 0; i < nr2; i++) {
          const ai = i * nr + nr2;
          let acc = 0;
          for (let t = 0; t < ne2; t++) acc += a[ai + t] * ehat[t];
          b[i] = acc;
        }
        solve(nr2, b);
        for (let i = 0; i < nr2; i++) rhs[i] += b[i];
      }
      for (let i = 0; i < nr; i++) out[o + perm[i]] = rhs[i];
    }
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

  /**
   * Per-row symmetric scales of rows [row0, row1) of W (rows×cols) into `scales` (§1.7 step 2):
   * xmax_r = max(|min(w,0)|, max(w,0)) (all-zero rows use 1); with `steps` > 1 the MSE shrink
   * search picks scale = p·xmax/maxq, p = 1 − i/grid, i < steps, minimizing Σ|Q(w)−w|^norm
   * (first minimum wins); scales are floored at 1e-5.
   */
  function symmetricRowScalesRange(w: Float64Array, cols: number, maxq: number, norm: number, grid: number, steps: number, scales: Float64Array, row0: number, row1: number): void {
    const table = powerTable(norm);
    for (let r = row0; r < row1; r++) {
      const o = r * cols;
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
      scales[r] = bestScale;
    }
  }

  /**
   * GPTQ on rows [row0, row1) of W (rows×cols), columns [start, cols), in place: for each column
   * j, q = Q(w_j)·M_j, err = (w_j − q)/U_jj, later columns −= err·U[j, later]. Immediate inside
   * a block of `bs` columns; the block's errors reach the trailing columns in one batched update
   * (GPTQ's lazy batch; mathematically identical). Rows are independent given U, the scales and
   * the mask, so any row split gives the same result.
   */
  function gptqRows(w: Float64Array, cols: number, u: Float64Array, scales: Float64Array, maxq: number, mask: Uint8Array | null, start: number, bs: number, codes: Int8Array | null, row0: number, row1: number): void {
    const batch = 16; // rows sharing each loaded row of U in the trailing update
    const err = new Float64Array(batch * bs);
    for (let i1 = start; i1 < cols; i1 += bs) {
      const i2 = Math.min(cols, i1 + bs);
      for (let r0 = row0; r0 < row1; r0 += batch) {
        const r1 = Math.min(row1, r0 + batch);
        for (let r = r0; r < r1; r++) {
          const o = r * cols;
          const s = scales[r];
          const eo = (r - r0) * bs - i1;
          for (let j = i1; j < i2; j++) {
            const v = w[o + j];
            let q = 0;
            let code = 0;
            if (!mask || mask[o + j] === 1) {
              code = symmetricCode(v, s, maxq);
              q = code * s;
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
        // Trailing update W[r0:r1, i2:] −= Err · U[i1:i2, i2:], one row of U at a time for the batch.
        if (i2 < cols) {
          for (let j = i1; j < i2; j++) {
            const ru = j * cols;
            for (let r = r0; r < r1; r++) {
              const e = err[(r - r0) * bs + j - i1];
              if (e === 0) continue;
              const o = r * cols;
              for (let t = i2; t < cols; t++) w[o + t] -= e * u[ru + t];
            }
          }
        }
      }
    }
  }

  /** RTN of columns [col0, col1) of rows [row0, row1) onto the row scales, codes written. */
  function quantizeRange(src: Float64Array, out: Float64Array, codes: Int8Array, cols: number, scales: Float64Array, maxq: number, col0: number, col1: number, row0: number, row1: number): void {
    for (let r = row0; r < row1; r++) {
      const o = r * cols;
      const s = scales[r];
      for (let j = col0; j < col1; j++) {
        const q = symmetricCode(src[o + j], s, maxq);
        codes[o + j] = q;
        out[o + j] = q * s;
      }
    }
  }

  /** Runs one row-parallel step on rows [row0, row1) (the worker and the calling thread share this). */
  function runTask(task: RowTask, row0: number, row1: number): void {
    switch (task.kind) {
      case 'scales':
        symmetricRowScalesRange(task.weight, task.cols, task.maxq, task.norm, task.grid, task.steps, task.scales, row0, row1);
        return;
      case 'compensate':
        if (task.solver === 'pcg') compensateRowsPcg(task.problem, task.out, row0, row1, undefined, task.pcg);
        else compensateRowsDirect(task.problem, task.out, row0, row1);
        return;
      case 'gptq':
        gptqRows(task.weight, task.cols, task.u, task.scales, task.maxq, task.mask, task.start, task.blockSize, task.codes, row0, row1);
        return;
    }
  }

  return { simdAvailable: (): boolean => simdKernel() !== null, cholesky32, scratchMatrix32, runTask, scratchMatrix, symmetricRowScalesRange, gptqRows, quantizeRange, cholesky, solveLowerInPlace, solveLowerTransposedInPlace, choleskySolveInPlace, roundHalfEven, symmetricCode, compensateRowsDirect, pcgSolveInPlace, compensateRowsPcg };
}

export type RowKernels = ReturnType<typeof createRowKernels>;

/** The kernels for this thread. */
export const rowKernels: RowKernels = createRowKernels();
