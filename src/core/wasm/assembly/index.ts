// AssemblyScript source of the WebAssembly SIMD kernels behind the per-row OBR compensation
// (compiled by scripts/wasm.mjs into ../kernelsWasm.ts; the unit test test/unit/wasm.test.ts
// checks that the committed bytes match this source). Everything is float64, row-major, with
// byte pointers into the module's own memory that the caller (src/core/kernels.ts) lays out.
// Plain functions over memory: no allocation, no runtime (`--runtime stub`).

/** Σ_k p[k]·q[k], k < len, over rows of T (f64 or f32): two v128 accumulators plus a scalar tail. */
@inline
function dotT<T>(p: usize, q: usize, len: i32): T {
  let s0 = v128.splat<T>(<T>0);
  let s1 = v128.splat<T>(<T>0);
  const bytes = (<usize>len) * sizeof<T>();
  let k: usize = 0;
  for (; k + 32 <= bytes; k += 32) {
    s0 = v128.add<T>(s0, v128.mul<T>(v128.load(p + k), v128.load(q + k)));
    s1 = v128.add<T>(s1, v128.mul<T>(v128.load(p + k, 16), v128.load(q + k, 16)));
  }
  if (k + 16 <= bytes) {
    s0 = v128.add<T>(s0, v128.mul<T>(v128.load(p + k), v128.load(q + k)));
    k += 16;
  }
  let s = laneSum<T>(v128.add<T>(s0, s1));
  for (; k < bytes; k += sizeof<T>()) s += load<T>(p + k) * load<T>(q + k);
  return s;
}

/** The sum of a v128's lanes of T, in lane order. */
@inline
function laneSum<T>(v: v128): T {
  if (sizeof<T>() == 8) return v128.extract_lane<T>(v, 0) + v128.extract_lane<T>(v, 1);
  return v128.extract_lane<T>(v, 0) + v128.extract_lane<T>(v, 1) + v128.extract_lane<T>(v, 2) + v128.extract_lane<T>(v, 3);
}

/** Σ_k p[k]·q[k] over float64 rows. */
@inline
function dot(p: usize, q: usize, len: i32): f64 {
  return dotT<f64>(p, q, len);
}

/** y[0..len) −= e·x[0..len) (f64x2 plus a scalar tail). */
@inline
function axpyNeg(y: usize, x: usize, e: f64, len: i32): void {
  if (len <= 0) return;
  const v = f64x2.splat(e);
  const bytes = (<usize>len) << 3;
  let t: usize = 0;
  for (; t + 16 <= bytes; t += 16) v128.store(y + t, f64x2.sub(v128.load(y + t), f64x2.mul(v128.load(x + t), v)));
  if (t < bytes) store<f64>(y + t, load<f64>(y + t) - load<f64>(x + t) * e);
}

/**
 * In-place lower Cholesky factorization A = L Lᵀ of the leading n×n block of the matrix of T
 * (f64 or f32) at `a` (row stride `lda` elements; only the lower triangle is read). On success the
 * lower triangle holds L and the strict upper triangle of the block is zeroed; returns 0 when a
 * pivot is not positive (or not finite), 1 otherwise.
 * Left-looking by blocks of 16 rows (Cholesky–Banachiewicz): rows i of a block need
 * L[i, j] = (A[i, j] − L[i, :j]·L[j, :j]) / L[j, j] for every earlier row j; each pair of earlier
 * rows j, j+1 is loaded once per block and meets the block's rows four at a time in a 4×2 tile of
 * v128 accumulators (8 vector multiply-adds per 6 loads: f64x2, or f32x4 with twice the
 * multiply-adds per load); then the 16×16 diagonal block is finished row by row.
 */
@inline
function choleskyT<T>(a: usize, n: i32, lda: i32): i32 {
  const sz = sizeof<T>();
  const rs = (<usize>lda) * sz;
  for (let i0 = 0; i0 < n; i0 += 16) {
    const i1 = min(n, i0 + 16);
    // j runs over pairs below i0 (i0 is a multiple of 16, so every pair is complete).
    for (let j = 0; j < i0; j += 2) {
      const rj = a + (<usize>j) * rs;
      const rj1 = rj + rs;
      const jb = (<usize>j) * sz;
      const jv = jb & ~15; // whole v128s; j is even, so f64 rows have no rest and f32 rows 0 or 2
      const djj = load<T>(rj + jb);
      const dj1 = load<T>(rj1 + jb + sz);
      const lj1j = load<T>(rj1 + jb);
      for (let s = i0; s < i1; s += 4) {
        const nb = min(4, i1 - s);
        const r0 = a + (<usize>s) * rs;
        const r1 = nb > 1 ? r0 + rs : r0;
        const r2 = nb > 2 ? r0 + 2 * rs : r0;
        const r3 = nb > 3 ? r0 + 3 * rs : r0;
        let a00 = v128.splat<T>(<T>0), a01 = v128.splat<T>(<T>0), a10 = v128.splat<T>(<T>0), a11 = v128.splat<T>(<T>0);
        let a20 = v128.splat<T>(<T>0), a21 = v128.splat<T>(<T>0), a30 = v128.splat<T>(<T>0), a31 = v128.splat<T>(<T>0);
        for (let k: usize = 0; k < jv; k += 16) {
          const y0 = v128.load(rj + k);
          const y1 = v128.load(rj1 + k);
          let x = v128.load(r0 + k);
          a00 = v128.add<T>(a00, v128.mul<T>(x, y0));
          a01 = v128.add<T>(a01, v128.mul<T>(x, y1));
          x = v128.load(r1 + k);
          a10 = v128.add<T>(a10, v128.mul<T>(x, y0));
          a11 = v128.add<T>(a11, v128.mul<T>(x, y1));
          x = v128.load(r2 + k);
          a20 = v128.add<T>(a20, v128.mul<T>(x, y0));
          a21 = v128.add<T>(a21, v128.mul<T>(x, y1));
          x = v128.load(r3 + k);
          a30 = v128.add<T>(a30, v128.mul<T>(x, y0));
          a31 = v128.add<T>(a31, v128.mul<T>(x, y1));
        }
        let s00 = laneSum<T>(a00), s01 = laneSum<T>(a01), s10 = laneSum<T>(a10), s11 = laneSum<T>(a11);
        let s20 = laneSum<T>(a20), s21 = laneSum<T>(a21), s30 = laneSum<T>(a30), s31 = laneSum<T>(a31);
        for (let k: usize = jv; k < jb; k += sz) {
          const y0 = load<T>(rj + k), y1 = load<T>(rj1 + k);
          let x = load<T>(r0 + k); s00 += x * y0; s01 += x * y1;
          x = load<T>(r1 + k); s10 += x * y0; s11 += x * y1;
          x = load<T>(r2 + k); s20 += x * y0; s21 += x * y1;
          x = load<T>(r3 + k); s30 += x * y0; s31 += x * y1;
        }
        let l = (load<T>(r0 + jb) - s00) / djj;
        store<T>(r0 + jb, l);
        store<T>(r0 + jb + sz, (load<T>(r0 + jb + sz) - s01 - l * lj1j) / dj1);
        if (nb > 1) {
          l = (load<T>(r1 + jb) - s10) / djj;
          store<T>(r1 + jb, l);
          store<T>(r1 + jb + sz, (load<T>(r1 + jb + sz) - s11 - l * lj1j) / dj1);
        }
        if (nb > 2) {
          l = (load<T>(r2 + jb) - s20) / djj;
          store<T>(r2 + jb, l);
          store<T>(r2 + jb + sz, (load<T>(r2 + jb + sz) - s21 - l * lj1j) / dj1);
        }
        if (nb > 3) {
          l = (load<T>(r3 + jb) - s30) / djj;
          store<T>(r3 + jb, l);
          store<T>(r3 + jb + sz, (load<T>(r3 + jb + sz) - s31 - l * lj1j) / dj1);
        }
      }
    }
    // The diagonal block, row by row.
    for (let ii = i0; ii < i1; ii++) {
      const ri = a + (<usize>ii) * rs;
      for (let j = i0; j <= ii; j++) {
        const rj = a + (<usize>j) * rs;
        const s = load<T>(ri + (<usize>j) * sz) - dotT<T>(ri, rj, j);
        if (j == ii) {
          if (!(s > 0) || !isFinite<T>(s)) return 0;
          store<T>(ri + (<usize>ii) * sz, sqrt<T>(s));
        } else {
          store<T>(ri + (<usize>j) * sz, s / load<T>(rj + (<usize>j) * sz));
        }
      }
      for (let j = ii + 1; j < n; j++) store<T>(ri + (<usize>j) * sz, <T>0);
    }
  }
  return 1;
}

/** choleskyT on float64 storage. */
export function cholesky(a: usize, n: i32, lda: i32): i32 {
  return choleskyT<f64>(a, n, lda);
}

/** choleskyT on float32 storage (the mixed-precision row kernel's factor). */
export function cholesky32(a: usize, n: i32, lda: i32): i32 {
  return choleskyT<f32>(a, n, lda);
}

/** L y = b in place (b: n doubles), L the leading n×n lower block at `l` with row stride lda. */
export function solveLower(l: usize, n: i32, lda: i32, b: usize): void {
  const rs = (<usize>lda) << 3;
  for (let i = 0; i < n; i++) {
    const ri = l + (<usize>i) * rs;
    const ib = (<usize>i) << 3;
    store<f64>(b + ib, (load<f64>(b + ib) - dot(ri, b, i)) / load<f64>(ri + ib));
  }
}

/** Lᵀ x = y in place (column i of Lᵀ above the diagonal is row i of L: an axpy per row). */
export function solveLowerTransposed(l: usize, n: i32, lda: i32, y: usize): void {
  const rs = (<usize>lda) << 3;
  for (let i = n - 1; i >= 0; i--) {
    const ri = l + (<usize>i) * rs;
    const ib = (<usize>i) << 3;
    const yi = load<f64>(y + ib) / load<f64>(ri + ib);
    store<f64>(y + ib, yi);
    const v = f64x2.splat(yi);
    let k: usize = 0;
    for (; k + 16 <= ib; k += 16) v128.store(y + k, f64x2.sub(v128.load(y + k), f64x2.mul(v128.load(ri + k), v)));
    if (k < ib) store<f64>(y + k, load<f64>(y + k) - load<f64>(ri + k) * yi);
  }
}

/**
 * X = L⁻¹ for the lower n×n factor at `l` (row stride n) into `x` (n×n, row stride n; its
 * strict upper triangle is zeroed). Row i of L X = I gives X[i, :] = (e_i − Σ_{k<i} L[i, k]·X[k, :]) / L[i, i],
 * and X[k, :] is zero beyond column k, so each term is a contiguous axpy of length k + 1.
 * Rows are done 8 at a time: the terms from finished rows k < i0 are added in column chunks of
 * 256, so each chunk of X[k, :] is read from memory once for the 8 rows (the one-row version
 * streams the whole triangle of X per row and is memory-bound); then the 8 rows finish in order.
 */
export function invertLower(l: usize, n: i32, x: usize): void {
  const rs = (<usize>n) << 3;
  memory.fill(x, 0, (<usize>n) * rs);
  for (let i0 = 0; i0 < n; i0 += 8) {
    const i1 = min(n, i0 + 8);
    for (let t0 = 0; t0 < i0; t0 += 256) {
      for (let k = t0; k < i0; k++) {
        const t1 = min(k + 1, t0 + 256);
        const xk = x + (<usize>k) * rs + ((<usize>t0) << 3);
        for (let r = i0; r < i1; r++) {
          const c = load<f64>(l + (<usize>r) * rs + ((<usize>k) << 3));
          if (c != 0) axpyNeg(x + (<usize>r) * rs + ((<usize>t0) << 3), xk, c, t1 - t0);
        }
      }
    }
    for (let i = i0; i < i1; i++) {
      const xi = x + (<usize>i) * rs;
      const li = l + (<usize>i) * rs;
      for (let k = i0; k < i; k++) {
        const c = load<f64>(li + ((<usize>k) << 3));
        if (c != 0) axpyNeg(xi, x + (<usize>k) * rs, c, k + 1);
      }
      const ib = (<usize>i) << 3;
      const d = 1 / load<f64>(li + ib);
      const v = f64x2.splat(d);
      let t: usize = 0;
      for (; t + 16 <= ib; t += 16) v128.store(xi + t, f64x2.mul(v128.load(xi + t), v));
      if (t < ib) store<f64>(xi + t, load<f64>(xi + t) * d);
      store<f64>(xi + ib, d);
    }
  }
}

/** clamp(round-half-even(v / s), −maxq−1, maxq) · s, the symmetric grid value of v (+0 for 0). */
@inline
function gridValue(v: f64, s: f64, maxq: f64): f64 {
  const q = min(max(nearest(v / s), -maxq - 1), maxq);
  return (q + 0.0) * s;
}

/**
 * (clamp(round-half-even(v / s) + z, −maxq−1, maxq) − z) · s, the value of v on the asymmetric
 * grid with integer zero point z (codes and zeros in the signed range, see src/core/quantize.ts).
 */
@inline
function gridValueZ(v: f64, s: f64, z: f64, maxq: f64): f64 {
  const q = min(max(nearest(v / s) + z, -maxq - 1), maxq);
  return (q - z + 0.0) * s;
}


/**
 * The MSE clip search of one row (§1.7 step 2): the scale p·xmax/maxq, p = 1 − i/grid, i < steps,
 * minimizing Σ|Q(w) − w|^norm (first minimum wins; floored at 1e-5; all-zero rows use xmax = 1).
 * With x = |w|/s and lim = maxq (w ≥ 0) or maxq + 1 (w < 0): entries with x ≤ lim + ½ are not
 * clipped and cost s^norm·t^norm, t = |x − round(x)| ∈ [0, ½]; the others cost s^norm·(x − lim)^norm.
 * Both powers come from tables (linear interpolation; `t1`: t^norm at t = i/s1, `t2`: y^norm at
 * y = i/s2 for y < y2max), exact pow beyond the second table. w: n doubles.
 */
export function rowScale(w: usize, n: i32, maxq: f64, norm: f64, grid: f64, steps: i32, t1: usize, s1: f64, t2: usize, s2: f64, y2max: f64): f64 {
  let xmax: f64 = 0;
  for (let j = 0; j < n; j++) xmax = max(xmax, abs(load<f64>(w + ((<usize>j) << 3))));
  if (xmax == 0) xmax = 1;
  let best = Infinity;
  let bestScale = max(xmax / maxq, 1e-5);
  for (let i = 0; i < steps; i++) {
    const p = 1 - (<f64>i) / grid;
    const scale = max((p * xmax) / maxq, 1e-5);
    const inv = 1 / scale;
    let unclipped: f64 = 0;
    let clipped: f64 = 0;
    for (let j = 0; j < n; j++) {
      const v = load<f64>(w + ((<usize>j) << 3));
      const x = abs(v) * inv;
      const lim = v < 0 ? maxq + 1 : maxq;
      if (x > lim + 0.5) {
        const y = x - lim;
        if (y < y2max) {
          const u = y * s2;
          const k = <i32>u;
          const p0 = load<f64>(t2 + ((<usize>k) << 3));
          clipped += p0 + (load<f64>(t2 + ((<usize>k) << 3), 8) - p0) * (u - <f64>k);
        } else {
          clipped += Math.pow(y, norm);
        }
      } else {
        const u = abs(x - nearest(x)) * s1;
        const k = <i32>u;
        const p0 = load<f64>(t1 + ((<usize>k) << 3));
        unclipped += p0 + (load<f64>(t1 + ((<usize>k) << 3), 8) - p0) * (u - <f64>k);
      }
    }
    const err = (unclipped + clipped) * Math.pow(scale, norm);
    if (err < best) {
      best = err;
      bestScale = scale;
    }
  }
  return bestScale;
}

/**
 * The MSE clip search of one asymmetric group (the reference min/max quantizer with its shrink
 * search, GPTQ's Quantizer.find_params with mse=True): xmin = min(w, 0), xmax = max(w, 0)
 * (−1, 1 when both are 0); for p = 1 − i/grid, i < steps, the range [p·xmin, p·xmax] gives
 * scale = max(p·(xmax − xmin)/maxq, 1e-5) and zero = round(−p·xmin/scale) ∈ [0, maxq]; the pair
 * minimizing Σ|s·(clamp(round(w/s) + zero, 0, maxq) − zero) − w|^norm wins (first minimum).
 * maxq here is the UNSIGNED top code 2^b − 1. With x = w/s, entries whose code is not clamped
 * cost s^norm·t^norm, t = |x − round(x)|; clamped ones s^norm·y^norm with y the distance of x
 * to the clamped end (maxq − zero, or −zero). Tables as in rowScale. Returns the scale and
 * stores the unsigned zero point (as f64) at `zeroOut`.
 */
export function asymScale(w: usize, n: i32, maxq: f64, norm: f64, grid: f64, steps: i32, t1: usize, s1: f64, t2: usize, s2: f64, y2max: f64, zeroOut: usize): f64 {
  let lo: f64 = 0;
  let hi: f64 = 0;
  for (let j = 0; j < n; j++) {
    const v = load<f64>(w + ((<usize>j) << 3));
    lo = min(lo, v);
    hi = max(hi, v);
  }
  if (lo == 0 && hi == 0) {
    lo = -1;
    hi = 1;
  }
  let best = Infinity;
  let bestScale = max((hi - lo) / maxq, 1e-5);
  let bestZero = nearest(-lo / bestScale);
  for (let i = 0; i < steps; i++) {
    const p = 1 - (<f64>i) / grid;
    const a = p * lo;
    const scale = max((p * hi - a) / maxq, 1e-5);
    const zero = nearest(-a / scale);
    const inv = 1 / scale;
    const top = maxq - zero;
    const bottom = -zero;
    let unclipped: f64 = 0;
    let clipped: f64 = 0;
    for (let j = 0; j < n; j++) {
      const x = load<f64>(w + ((<usize>j) << 3)) * inv;
      const q = nearest(x);
      let y: f64 = -1;
      if (q > top) y = x - top;
      else if (q < bottom) y = bottom - x;
      if (y >= 0) {
        if (y < y2max) {
          const u = y * s2;
          const k = <i32>u;
          const p0 = load<f64>(t2 + ((<usize>k) << 3));
          clipped += p0 + (load<f64>(t2 + ((<usize>k) << 3), 8) - p0) * (u - <f64>k);
        } else {
          clipped += Math.pow(y, norm);
        }
      } else {
        const u = abs(x - q) * s1;
        const k = <i32>u;
        const p0 = load<f64>(t1 + ((<usize>k) << 3));
        unclipped += p0 + (load<f64>(t1 + ((<usize>k) << 3), 8) - p0) * (u - <f64>k);
      }
    }
    const err = (unclipped + clipped) * Math.pow(scale, norm);
    if (err < best) {
      best = err;
      bestScale = scale;
      bestZero = zero;
    }
  }
  store<f64>(zeroOut, bestZero + 0.0);
  return bestScale;
}

/** Columns of B per packed panel in gemmSub: a 128-row panel is 128·256·8 = 256 KiB (L2). */
const PANEL: i32 = 256;

/** C[0..w) −= the first w lanes of (lo, hi), a row of a 4-column tile (w < 4 at the right edge). */
@inline
function subEdge(c: usize, lo: v128, hi: v128, w: i32): void {
  store<f64>(c, load<f64>(c) - f64x2.extract_lane(lo, 0));
  if (w > 1) store<f64>(c + 8, load<f64>(c + 8) - f64x2.extract_lane(lo, 1));
  if (w > 2) store<f64>(c + 16, load<f64>(c + 16) - f64x2.extract_lane(hi, 0));
}

/** C[0..4) −= (lo, hi), or its first w entries. */
@inline
function subRow(c: usize, lo: v128, hi: v128, w: i32): void {
  if (w == 4) {
    v128.store(c, f64x2.sub(v128.load(c), lo));
    v128.store(c, f64x2.sub(v128.load(c, 16), hi), 16);
  } else subEdge(c, lo, hi, w);
}

/**
 * C (m×n, row stride ldc) −= A (m×k, row stride lda) · B (k×n, row stride ldb), float64, the dense
 * product behind GPTQ's lazy-batch update W[:, i2:] −= Err · U[i1:i2, i2:]. Each entry's sum
 * Σ_p A[i, p]·B[p, j] is accumulated from 0 in p order and subtracted once (kernels.ts's
 * JavaScript fallback uses the same order, so the two agree bit for bit).
 * B is packed by panels of PANEL columns into `pack` (k·PANEL doubles) as strips of 4 columns
 * laid out [strip][p][4] (zero-padded at the right edge), so the inner loop reads it
 * sequentially; a 4×4 tile of C lives in eight f64x2 accumulators for the whole k (2 vector
 * loads of B and 4 broadcasts of A per 16 multiply-adds).
 */
export function gemmSub(c: usize, ldc: i32, a: usize, lda: i32, b: usize, ldb: i32, m: i32, k: i32, n: i32, pack: usize): void {
  const ca = (<usize>ldc) << 3;
  const aa = (<usize>lda) << 3;
  const ba = (<usize>ldb) << 3;
  const stripBytes = (<usize>k) << 5;
  for (let j0 = 0; j0 < n; j0 += PANEL) {
    const nc = min(PANEL, n - j0);
    const strips = (nc + 3) >> 2;
    for (let s = 0; s < strips; s++) {
      const col = j0 + (s << 2);
      const w = min(4, n - col);
      const dst = pack + (<usize>s) * stripBytes;
      let src = b + ((<usize>col) << 3);
      for (let p = 0; p < k; p++) {
        const d = dst + ((<usize>p) << 5);
        if (w == 4) {
          v128.store(d, v128.load(src));
          v128.store(d, v128.load(src, 16), 16);
        } else {
          for (let t = 0; t < 4; t++) store<f64>(d + ((<usize>t) << 3), t < w ? load<f64>(src + ((<usize>t) << 3)) : 0);
        }
        src += ba;
      }
    }
    for (let i = 0; i < m; i += 4) {
      const nr = min(4, m - i);
      // Missing rows of a last partial tile repeat row i (computed, never stored).
      const a0 = a + (<usize>i) * aa;
      const a1 = nr > 1 ? a0 + aa : a0;
      const a2 = nr > 2 ? a0 + 2 * aa : a0;
      const a3 = nr > 3 ? a0 + 3 * aa : a0;
      const c0 = c + (<usize>i) * ca + ((<usize>j0) << 3);
      for (let s = 0; s < strips; s++) {
        const bp = pack + (<usize>s) * stripBytes;
        let x00 = f64x2.splat(0), x01 = f64x2.splat(0), x10 = f64x2.splat(0), x11 = f64x2.splat(0);
        let x20 = f64x2.splat(0), x21 = f64x2.splat(0), x30 = f64x2.splat(0), x31 = f64x2.splat(0);
        for (let p = 0; p < k; p++) {
          const q = bp + ((<usize>p) << 5);
          const b0 = v128.load(q);
          const b1 = v128.load(q, 16);
          const o = (<usize>p) << 3;
          const e0 = v128.load64_splat(a0 + o);
          x00 = f64x2.add(x00, f64x2.mul(e0, b0));
          x01 = f64x2.add(x01, f64x2.mul(e0, b1));
          const e1 = v128.load64_splat(a1 + o);
          x10 = f64x2.add(x10, f64x2.mul(e1, b0));
          x11 = f64x2.add(x11, f64x2.mul(e1, b1));
          const e2 = v128.load64_splat(a2 + o);
          x20 = f64x2.add(x20, f64x2.mul(e2, b0));
          x21 = f64x2.add(x21, f64x2.mul(e2, b1));
          const e3 = v128.load64_splat(a3 + o);
          x30 = f64x2.add(x30, f64x2.mul(e3, b0));
          x31 = f64x2.add(x31, f64x2.mul(e3, b1));
        }
        const w = min(4, nc - (s << 2));
        const cs = c0 + ((<usize>s) << 5);
        subRow(cs, x00, x01, w);
        if (nr > 1) subRow(cs + ca, x10, x11, w);
        if (nr > 2) subRow(cs + 2 * ca, x20, x21, w);
        if (nr > 3) subRow(cs + 3 * ca, x30, x31, w);
      }
    }
  }
}

/**
 * One lazy block of GPTQ with fixed (static) group scales on `rows` rows of W (row stride n, in
 * place), columns [i1, i2): for each row and each column j of the block, q = Q(w_j)·M_j,
 * err = (w_j − q)/U_jj, the block's later columns −= err·U[j, later] (immediate, per row); then
 * the block's errors reach every trailing column in ONE product,
 * W[:, i2:] −= Err · U[i1:i2, i2:] (gemmSub; GPTQ's lazy batch, mathematically identical).
 * Column j uses its group's scale (and zero point): group ⌊j/gs⌋ of `groups` per row (gs = n:
 * one scale per row). Codes are signed, q = s·(code − zero); pruned entries get code = zero (0).
 * With nmM > 0 (SparseGPT's N:M masks), at every nmM-th column of the block each row prunes the
 * nmN lowest w²/U_jj² of the next nmM columns (current values; ties: lower column first).
 * u: n×n upper factor of H⁻¹ (rows [i1, n) read); scales: rows×groups doubles; zeros:
 * rows×groups doubles or 0 (symmetric); mask: rows×n bytes or 0 (no mask); codes: rows×n i8 or
 * 0; err: rows×bs doubles (row stride bs ≥ i2 − i1); pack: bs·PANEL doubles.
 */
export function gptqBlock(w: usize, rows: i32, n: i32, u: usize, scales: usize, zeros: usize, groups: i32, gs: i32, maxq: f64, mask: usize, i1: i32, i2: i32, codes: usize, err: usize, bs: i32, pack: usize, nmN: i32, nmM: i32): void {
  const rs = (<usize>n) << 3;
  const gsBytes = (<usize>groups) << 3;
  for (let r = 0; r < rows; r++) {
    const wr = w + (<usize>r) * rs;
    const sr = scales + (<usize>r) * gsBytes;
    const zr = zeros + (<usize>r) * gsBytes;
    const mr = mask + (<usize>r) * (<usize>n);
    let g = i1 / gs;
    let gEnd = min(n, (g + 1) * gs);
    let s = load<f64>(sr + ((<usize>g) << 3));
    let z: f64 = zeros != 0 ? load<f64>(zr + ((<usize>g) << 3)) : 0;
    const er = err + (<usize>r) * (<usize>bs) * 8;
    for (let j = i1; j < i2; j++) {
      if (j == gEnd) {
        g++;
        gEnd = min(n, gEnd + gs);
        s = load<f64>(sr + ((<usize>g) << 3));
        if (zeros != 0) z = load<f64>(zr + ((<usize>g) << 3));
      }
      if (nmM > 0 && (j - i1) % nmM == 0) pruneLowest(wr, u, n, mr, j, min(nmM, i2 - j), nmN);
      const jb = (<usize>j) << 3;
      const v = load<f64>(wr + jb);
      let code: f64 = z;
      if (mask == 0 || load<u8>(mr + <usize>j) == 1) {
        code = min(max(nearest(v / s) + z, -maxq - 1), maxq) + 0.0;
      }
      const q = (code - z) * s;
      store<f64>(wr + jb, q);
      if (codes != 0) store<i8>(codes + (<usize>r) * (<usize>n) + <usize>j, <i8>code);
      const e = (v - q) / load<f64>(u + (<usize>j) * rs + jb);
      store<f64>(er + (<usize>(j - i1) << 3), e);
      if (e != 0) axpyNeg(wr + jb + 8, u + (<usize>j) * rs + jb + 8, e, i2 - j - 1);
    }
  }
  if (i2 < n) gemmSub(w + ((<usize>i2) << 3), n, err, bs, u + (<usize>i1) * rs + ((<usize>i2) << 3), n, rows, i2 - i1, n - i2, pack);
}

/**
 * SparseGPT's N:M choice at column j of one row: among columns [j, j + width), zero the mask of
 * the `count` lowest scores w²/U_cc² (current weights), lower column first on ties — the same set
 * as sorting by (score, column) and taking the first `count`.
 */
function pruneLowest(wr: usize, u: usize, n: i32, mr: usize, j: i32, width: i32, count: i32): void {
  const rs = (<usize>n) << 3;
  for (let t = 0; t < min(count, width); t++) {
    let best = -1;
    let bestScore: f64 = 0;
    for (let c = j; c < j + width; c++) {
      if (load<u8>(mr + <usize>c) == 0) continue;
      const v = load<f64>(wr + ((<usize>c) << 3));
      const d = load<f64>(u + (<usize>c) * rs + ((<usize>c) << 3));
      const score = (v * v) / (d * d);
      if (best < 0 || score < bestScore) {
        best = c;
        bestScore = score;
      }
    }
    if (best < 0) return;
    store<u8>(mr + <usize>best, 0);
  }
}

/**
 * GPTQ over columns [start, n) of `rows` rows of W: gptqBlock on each block of `bs` columns.
 * err: rows×bs doubles; pack: bs·PANEL doubles (see gptqBlock).
 */
export function gptqRows(w: usize, rows: i32, n: i32, u: usize, scales: usize, zeros: usize, groups: i32, gs: i32, maxq: f64, mask: usize, start: i32, bs: i32, codes: usize, err: usize, pack: usize): void {
  for (let i1 = start; i1 < n; i1 += bs) gptqBlock(w, rows, n, u, scales, zeros, groups, gs, maxq, mask, i1, min(n, i1 + bs), codes, err, bs, pack, 0, 0);
}

/** Block width of invertLowerBlocked (columns per block column). */
const NB: i32 = 128;

/**
 * X = L⁻¹ (n×n, row stride n, strict upper triangle zero) for the lower factor at `l` (row
 * stride n), by block columns of NB: for each block column J, forward substitution down the
 * blocks K ≥ J, X[K, J] = L_KK⁻¹ R[K, J] (R starts as the identity's columns J), then every
 * block row below K gets R[>K, J] −= L[>K, K]·X[K, J] in one gemmSub. Equal to invertLower up to
 * float64 round-off; the bulk of the n³/3 work is gemmSub. pack: NB·PANEL doubles.
 */
export function invertLowerBlocked(l: usize, n: i32, x: usize, pack: usize): void {
  const rs = (<usize>n) << 3;
  memory.fill(x, 0, (<usize>n) * rs);
  for (let i = 0; i < n; i++) store<f64>(x + (<usize>i) * rs + ((<usize>i) << 3), 1);
  for (let c0 = 0; c0 < n; c0 += NB) {
    const c1 = min(n, c0 + NB);
    const w = c1 - c0;
    for (let k0 = c0; k0 < n; k0 += NB) {
      const k1 = min(n, k0 + NB);
      // X[k, J] = (R[k, J] − Σ_{k0 ≤ t < k} L[k, t]·X[t, J]) / L[k, k], row by row.
      for (let k = k0; k < k1; k++) {
        const xk = x + (<usize>k) * rs + ((<usize>c0) << 3);
        const lk = l + (<usize>k) * rs;
        for (let t = k0; t < k; t++) {
          const c = load<f64>(lk + ((<usize>t) << 3));
          if (c != 0) axpyNeg(xk, x + (<usize>t) * rs + ((<usize>c0) << 3), c, w);
        }
        const dinv = 1 / load<f64>(lk + ((<usize>k) << 3));
        const v = f64x2.splat(dinv);
        const bytes = (<usize>w) << 3;
        let t: usize = 0;
        for (; t + 16 <= bytes; t += 16) v128.store(xk + t, f64x2.mul(v128.load(xk + t), v));
        if (t < bytes) store<f64>(xk + t, load<f64>(xk + t) * dinv);
      }
      if (k1 < n) gemmSub(x + (<usize>k1) * rs + ((<usize>c0) << 3), n, l + (<usize>k1) * rs + ((<usize>k0) << 3), n, x + (<usize>k0) * rs + ((<usize>c0) << 3), n, n - k1, k1 - k0, w, pack);
    }
  }
}

/** Doubles of gemmSub's packing buffer for k rows of B. */
export function packDoubles(k: i32): i32 {
  return k * PANEL;
}

/**
 * Σ_r d_rᵀ H d_r over `rows` rows of D (row stride n) with H n×n symmetric: for each row i of H,
 * the dot products H_i·d_r of four rows of D at a time share the loads of H_i (f64x2).
 */
export function quadraticFormSum(d: usize, rows: i32, n: i32, h: usize): f64 {
  const rs = (<usize>n) << 3;
  let total: f64 = 0;
  for (let r0 = 0; r0 < rows; r0 += 4) {
    const nb = min(4, rows - r0);
    const d0 = d + (<usize>r0) * rs;
    const d1 = nb > 1 ? d0 + rs : d0;
    const d2 = nb > 2 ? d0 + 2 * rs : d0;
    const d3 = nb > 3 ? d0 + 3 * rs : d0;
    let t0: f64 = 0, t1: f64 = 0, t2: f64 = 0, t3: f64 = 0;
    for (let i = 0; i < n; i++) {
      const hi = h + (<usize>i) * rs;
      const ib = (<usize>i) << 3;
      let a0 = f64x2.splat(0), a1 = f64x2.splat(0), a2 = f64x2.splat(0), a3 = f64x2.splat(0);
      let k: usize = 0;
      for (; k + 16 <= rs; k += 16) {
        const x = v128.load(hi + k);
        a0 = f64x2.add(a0, f64x2.mul(x, v128.load(d0 + k)));
        a1 = f64x2.add(a1, f64x2.mul(x, v128.load(d1 + k)));
        a2 = f64x2.add(a2, f64x2.mul(x, v128.load(d2 + k)));
        a3 = f64x2.add(a3, f64x2.mul(x, v128.load(d3 + k)));
      }
      let s0 = f64x2.extract_lane(a0, 0) + f64x2.extract_lane(a0, 1);
      let s1 = f64x2.extract_lane(a1, 0) + f64x2.extract_lane(a1, 1);
      let s2 = f64x2.extract_lane(a2, 0) + f64x2.extract_lane(a2, 1);
      let s3 = f64x2.extract_lane(a3, 0) + f64x2.extract_lane(a3, 1);
      if (k < rs) {
        const x = load<f64>(hi + k);
        s0 += x * load<f64>(d0 + k);
        s1 += x * load<f64>(d1 + k);
        s2 += x * load<f64>(d2 + k);
        s3 += x * load<f64>(d3 + k);
      }
      t0 += load<f64>(d0 + ib) * s0;
      if (nb > 1) t1 += load<f64>(d1 + ib) * s1;
      if (nb > 2) t2 += load<f64>(d2 + ib) * s2;
      if (nb > 3) t3 += load<f64>(d3 + ib) * s3;
    }
    total += t0 + t1 + t2 + t3;
  }
  return total;
}

// ---- Mixed precision: float32 factor, float64 answers ------------------------------------

/** Σ_k l[k]·x[k] with l float32 and x float64, in float64 (pairs of floats promoted to f64x2). */
@inline
function dotMixed(l: usize, x: usize, len: i32): f64 {
  let s0 = f64x2.splat(0);
  let k: i32 = 0;
  for (; k + 2 <= len; k += 2) {
    const lv = f64x2.promote_low_f32x4(v128.load64_zero(l + ((<usize>k) << 2)));
    s0 = f64x2.add(s0, f64x2.mul(lv, v128.load(x + ((<usize>k) << 3))));
  }
  let s = f64x2.extract_lane(s0, 0) + f64x2.extract_lane(s0, 1);
  if (k < len) s += <f64>load<f32>(l + ((<usize>k) << 2)) * load<f64>(x + ((<usize>k) << 3));
  return s;
}

/** (L Lᵀ)⁻¹ applied to the float64 vector v in place, L the float32 factor (leading m×m, stride lda). */
function solveWith32(l: usize, m: i32, lda: i32, v: usize): void {
  const rs = (<usize>lda) << 2;
  for (let i = 0; i < m; i++) {
    const ri = l + (<usize>i) * rs;
    const ib = (<usize>i) << 3;
    store<f64>(v + ib, (load<f64>(v + ib) - dotMixed(ri, v, i)) / <f64>load<f32>(ri + ((<usize>i) << 2)));
  }
  for (let i = m - 1; i >= 0; i--) {
    const ri = l + (<usize>i) * rs;
    const ib = (<usize>i) << 3;
    const yi = load<f64>(v + ib) / <f64>load<f32>(ri + ((<usize>i) << 2));
    store<f64>(v + ib, yi);
    const yv = f64x2.splat(yi);
    let k: i32 = 0;
    for (; k + 2 <= i; k += 2) {
      const lv = f64x2.promote_low_f32x4(v128.load64_zero(ri + ((<usize>k) << 2)));
      const p = v + ((<usize>k) << 3);
      v128.store(p, f64x2.sub(v128.load(p), f64x2.mul(lv, yv)));
    }
    if (k < i) store<f64>(v + ((<usize>k) << 3), load<f64>(v + ((<usize>k) << 3)) - <f64>load<f32>(ri + ((<usize>k) << 2)) * yi);
  }
}

/**
 * x = A⁻¹ b for the leading m×m block of the symmetric float64 matrix `a` (lower triangle, stride
 * lda) using its float32 factor `l` plus float64 iterative refinement: x ← x + (LLᵀ)⁻¹(b − A x)
 * until the correction is below 1e-12·|x| (the answers then agree with the float64 kernel to about
 * 1e-14 relative: refinement converges by a factor κ·2⁻²⁴ per step). b is overwritten with x; r is m
 * doubles of scratch. Returns 0 when refinement stalls above that (A too ill-conditioned for a
 * float32 factor); the caller then solves in float64.
 */
function solveRefined(l: usize, a: usize, m: i32, lda: i32, b: usize, x: usize, r: usize): i32 {
  const bytes = (<usize>m) << 3;
  const ars = (<usize>lda) << 3;
  memory.copy(x, b, bytes);
  solveWith32(l, m, lda, x);
  let last: f64 = Infinity;
  for (let it = 0; it < 30; it++) {
    // r = b − A x with A symmetric from its lower triangle: row i gives A[i, :i]·x[:i] + A[i, i]·x[i]
    // and, by symmetry, A[i, :i]ᵀ·x[i] to the earlier entries.
    memory.copy(r, b, bytes);
    for (let i = 0; i < m; i++) {
      const ai = a + (<usize>i) * ars;
      const ib = (<usize>i) << 3;
      const xi = load<f64>(x + ib);
      store<f64>(r + ib, load<f64>(r + ib) - dot(ai, x, i) - load<f64>(ai + ib) * xi);
      axpyNeg(r, ai, xi, i);
    }
    solveWith32(l, m, lda, r);
    let dmax: f64 = 0;
    let xmax: f64 = 0;
    for (let i = 0; i < m; i++) {
      const ib = (<usize>i) << 3;
      const d = load<f64>(r + ib);
      const xv = load<f64>(x + ib) + d;
      store<f64>(x + ib, xv);
      dmax = max(dmax, abs(d));
      xmax = max(xmax, abs(xv));
    }
    if (!isFinite(dmax)) return 0;
    if (dmax <= 1e-12 * xmax) break;
    if (dmax > 0.5 * last) {
      if (dmax > 1e-11 * xmax) return 0; // not converging to float64 accuracy
      break;
    }
    last = dmax;
  }
  memory.copy(b, x, bytes);
  return 1;
}

/**
 * The OBR compensation of one row (§2.3–2.4 of docs/obr-algorithm.md):
 * R = kept columns ordered [R2 (≥ k), E2 (< k)], each ascending; A = H[R, R] factored once;
 * d1 = A⁻¹ H[R, E] w_E (pruning); w̄ = w_R + d1; ê = w̄_E2 − Q(w̄_E2); the leading block of the
 * factor is chol(A_R2R2), so d2 = A_R2R2⁻¹ A_R2E2 ê reuses it; out_R = w̄ (+ d2 on R2), out_E = 0.
 * mixed = 0: everything in float64. mixed = 1: the factorization in float32 (cholesky32) and both
 * solves refined to float64 accuracy against the float64 A (solveRefined); the answers agree with
 * the float64 path to about 1e-14 (relative, measured up to 2048 columns).
 * h: n×n damped Hessian; w, out: n doubles; mask: n bytes (1 = kept); scales (and zeros, or 0
 * when symmetric): the row's ⌈n/gs⌉ group scales (gs = n: one per row); maxq: 2^(b−1) − 1; scratch: 16-byte aligned, 4n bytes + 5n doubles + |R|² doubles (+ |R|² floats if mixed).
 * Returns 0 when A (or, mixed, its float32 factor or the refinement) fails, 1 otherwise; the
 * caller retries a failed mixed row in float64.
 */
export function compensateRow(h: usize, n: i32, w: usize, mask: usize, out: usize, k: i32, scales: usize, zeros: usize, gs: i32, maxq: f64, scratch: usize, mixed: i32): i32 {
  const nn = <usize>n;
  const perm = scratch;
  const dense = perm + ((nn * 4 + 15) & ~15);
  const rhs = dense + nn * 8;
  const b = rhs + nn * 8;
  const xs = b + nn * 8;
  const rs = xs + nn * 8;
  const a = rs + nn * 8;
  const rowBytes = nn << 3;
  let nr2 = 0;
  for (let j = k; j < n; j++) {
    if (load<u8>(mask + <usize>j)) {
      store<i32>(perm + ((<usize>nr2) << 2), j);
      nr2++;
    }
  }
  let nr = nr2;
  const kk = min(k, n);
  for (let j = 0; j < kk; j++) {
    if (load<u8>(mask + <usize>j)) {
      store<i32>(perm + ((<usize>nr) << 2), j);
      nr++;
    }
  }
  const ne = n - nr;
  memory.fill(out, 0, rowBytes);
  if (nr == 0) return 1;
  // A = H[perm, perm], lower triangle, row stride nr (and its float32 copy when mixed).
  const ars = (<usize>nr) << 3;
  const a32 = a + (<usize>nr) * ars;
  const a32rs = (<usize>nr) << 2;
  for (let i = 0; i < nr; i++) {
    const hi = h + (<usize>load<i32>(perm + ((<usize>i) << 2))) * rowBytes;
    const ai = a + (<usize>i) * ars;
    for (let j = 0; j <= i; j++) store<f64>(ai + ((<usize>j) << 3), load<f64>(hi + ((<usize>load<i32>(perm + ((<usize>j) << 2))) << 3)));
    if (mixed) {
      const ci = a32 + (<usize>i) * a32rs;
      for (let j = 0; j <= i; j++) store<f32>(ci + ((<usize>j) << 2), <f32>load<f64>(ai + ((<usize>j) << 3)));
    }
  }
  if (mixed ? !cholesky32(a32, nr, nr) : !cholesky(a, nr, nr)) return 0;
  // Pruning: rhs = H[perm, E] w_E = (H·(w ⊙ (1 − m)))[perm], contiguous row dot products.
  if (ne > 0) {
    for (let j = 0; j < n; j++) {
      const jb = (<usize>j) << 3;
      store<f64>(dense + jb, load<u8>(mask + <usize>j) ? 0 : load<f64>(w + jb));
    }
    for (let i = 0; i < nr; i++) store<f64>(rhs + ((<usize>i) << 3), dot(h + (<usize>load<i32>(perm + ((<usize>i) << 2))) * rowBytes, dense, n));
    if (!solveWithFactor(mixed, a, a32, nr, nr, rhs, xs, rs)) return 0;
  } else {
    memory.fill(rhs, 0, (<usize>nr) << 3);
  }
  for (let i = 0; i < nr; i++) {
    const ib = (<usize>i) << 3;
    store<f64>(rhs + ib, load<f64>(rhs + ib) + load<f64>(w + ((<usize>load<i32>(perm + ((<usize>i) << 2))) << 3)));
  }
  // Quantization transfer E2 → R2 (positions [nr2, nr) → [0, nr2)).
  const ne2 = nr - nr2;
  if (ne2 > 0 && nr2 > 0) {
    memory.fill(dense, 0, rowBytes);
    for (let t = nr2; t < nr; t++) {
      const v = load<f64>(rhs + ((<usize>t) << 3));
      const j = load<i32>(perm + ((<usize>t) << 2));
      // ê uses the quantizer of column j's group (P2: fitted on the dense row).
      const gb = (<usize>(j / gs)) << 3;
      const s = load<f64>(scales + gb);
      const value = zeros == 0 ? gridValue(v, s, maxq) : gridValueZ(v, s, load<f64>(zeros + gb), maxq);
      store<f64>(dense + ((<usize>j) << 3), v - value);
    }
    for (let i = 0; i < nr2; i++) store<f64>(b + ((<usize>i) << 3), dot(h + (<usize>load<i32>(perm + ((<usize>i) << 2))) * rowBytes, dense, n));
    if (!solveWithFactor(mixed, a, a32, nr2, nr, b, xs, rs)) return 0;
    for (let i = 0; i < nr2; i++) {
      const ib = (<usize>i) << 3;
      store<f64>(rhs + ib, load<f64>(rhs + ib) + load<f64>(b + ib));
    }
  }
  for (let i = 0; i < nr; i++) store<f64>(out + ((<usize>load<i32>(perm + ((<usize>i) << 2))) << 3), load<f64>(rhs + ((<usize>i) << 3)));
  return 1;
}

/** v ← A⁻¹ v for the leading m×m block: float64 factor in `a`, or (mixed) float32 factor in `a32` refined against the float64 A. */
function solveWithFactor(mixed: i32, a: usize, a32: usize, m: i32, lda: i32, v: usize, x: usize, r: usize): i32 {
  if (mixed) return solveRefined(a32, a, m, lda, v, x, r);
  solveLower(a, m, lda, v);
  solveLowerTransposed(a, m, lda, v);
  return 1;
}

/** First byte the caller may use (after this module's static data). */
export function heapBase(): usize {
  return (__heap_base + 15) & ~15;
}

// ---- Batched ADMM: one iteration's elementwise work (src/core/admm.ts) ---------------------------

/**
 * γ = (G + εI)⁻¹ r for one row's Anderson mixing (admmRows): G the 3×3 Gram matrix at `g`
 * (f64, `cols` columns used), ε = 1e-10·tr G + 1e-300, Gaussian elimination without pivoting in
 * `lu` (9 f64); γ into `gamma` (3 f64), zeros when a pivot is not positive. The same operations
 * in the same order as andersonGamma in src/core/admm.ts.
 */
function andersonGamma(g: usize, cols: i32, r0: f64, r1: f64, r2: f64, lu: usize, gamma: usize): void {
  store<f64>(gamma, r0);
  store<f64>(gamma, r1, 8);
  store<f64>(gamma, r2, 16);
  let trace: f64 = 0;
  for (let a = 0; a < cols; a++) trace += load<f64>(g + (<usize>(a * 4) << 3));
  const eps = 1e-10 * trace + 1e-300;
  for (let a = 0; a < cols; a++) {
    for (let e = 0; e < cols; e++) store<f64>(lu + (<usize>(a * 3 + e) << 3), load<f64>(g + (<usize>(a * 3 + e) << 3)) + (a == e ? eps : 0));
  }
  let ok = trace > 0;
  for (let p = 0; p < cols && ok; p++) {
    const piv = load<f64>(lu + (<usize>(p * 4) << 3));
    if (!(piv > 0)) {
      ok = false;
      break;
    }
    for (let a = p + 1; a < cols; a++) {
      const f = load<f64>(lu + (<usize>(a * 3 + p) << 3)) / piv;
      for (let e = p; e < cols; e++) {
        const q = lu + (<usize>(a * 3 + e) << 3);
        store<f64>(q, load<f64>(q) - f * load<f64>(lu + (<usize>(p * 3 + e) << 3)));
      }
      const q = gamma + (<usize>a << 3);
      store<f64>(q, load<f64>(q) - f * load<f64>(gamma + (<usize>p << 3)));
    }
  }
  if (!ok) {
    store<f64>(gamma, 0);
    store<f64>(gamma, 0, 8);
    store<f64>(gamma, 0, 16);
    return;
  }
  for (let a = cols - 1; a >= 0; a--) {
    let sum = load<f64>(gamma + (<usize>a << 3));
    for (let e = a + 1; e < cols; e++) sum -= load<f64>(lu + (<usize>(a * 3 + e) << 3)) * load<f64>(gamma + (<usize>e << 3));
    store<f64>(gamma + (<usize>a << 3), sum / load<f64>(lu + (<usize>(a * 4) << 3)));
  }
  for (let a = cols; a < 3; a++) store<f64>(gamma + (<usize>a << 3), 0);
}

/**
 * One iteration of the batched ADMM solver's elementwise work over `rows` rows of `w` columns
 * (src/core/admm.ts: iterateRows is the JavaScript twin, the same operations in the same order,
 * so both give the same bits). Element i of row r: g = ρ(v − x); the loss term (x − t)·g (t ≠ 0)
 * or (x − xPrev)·(g + gPrev) (then gPrev ← g, float32); T = λx + (1 − λ)v on the support,
 * v − λx off it; F = T − v. With `hist`: ΔF = f32(F − fPrev) → column `slot` of dF, ΔT → of dT,
 * and per row the dot products of the three ΔF columns with F and with the new column, the
 * Gram update and γ (andersonGamma), then v ← T − ΔT·γ; without: v ← T. Then c ← f32(b + ρv),
 * fPrev ← F, tPrev ← T. Sums run in two lanes (even / odd columns) per row, added at the row's
 * end (then an odd column's term). out[0] += loss terms, out[1] += ‖F‖².
 * Pointers (bytes): x, xPrev, gPrev, c, dF*, dT* float32; v, b, t, tPrev, fPrev, gram (rows×9),
 * scratch (12 f64), out float64; support u8 (rows×w, compacted, 8 bytes of slack at the end).
 */
export function admmRows(
  x: usize, xPrev: usize, gPrev: usize, v: usize, c: usize, b: usize, t: usize, support: usize, tPrev: usize, fPrev: usize,
  dF0: usize, dF1: usize, dF2: usize, dT0: usize, dT1: usize, dT2: usize, gram: usize, scratch: usize,
  rows: i32, w: i32, rho: f64, relax: f64, hist: i32, cols: i32, slot: i32, out: usize,
): void {
  const cF = slot == 0 ? dF0 : slot == 1 ? dF1 : dF2;
  const cT = slot == 0 ? dT0 : slot == 1 ? dT1 : dT2;
  const byT = t != 0;
  const rhoV = f64x2.splat(rho);
  const relaxV = f64x2.splat(relax);
  const keepV = f64x2.splat(1 - relax);
  const zero = f64x2.splat(0);
  const lu = scratch;
  const gamma = scratch + 72;
  let lossTotal: f64 = 0;
  let ffTotal: f64 = 0;
  const pairs = w & ~1;
  for (let r = 0; r < rows; r++) {
    const o = (<usize>r) * (<usize>w);
    let lossV = zero, ffV = zero, s0V = zero, s1V = zero, s2V = zero, n0V = zero, n1V = zero, n2V = zero;
    for (let j = 0; j < pairs; j += 2) {
      const i = o + <usize>j;
      const i4 = i << 2;
      const i8 = i << 3;
      const xv = f64x2.promote_low_f32x4(v128.load64_zero(x + i4));
      const vi = v128.load(v + i8);
      const g = f64x2.mul(rhoV, f64x2.sub(vi, xv));
      if (byT) lossV = f64x2.add(lossV, f64x2.mul(f64x2.sub(xv, v128.load(t + i8)), g));
      else {
        const xp = f64x2.promote_low_f32x4(v128.load64_zero(xPrev + i4));
        const gp = f64x2.promote_low_f32x4(v128.load64_zero(gPrev + i4));
        lossV = f64x2.add(lossV, f64x2.mul(f64x2.sub(xv, xp), f64x2.add(g, gp)));
        v128.store64_lane(gPrev + i4, f32x4.demote_f64x2_zero(g), 0);
      }
      const mask = i64x2.ne(i64x2.extend_low_i32x4_u(i32x4.extend_low_i16x8_u(v128.load8x8_u(support + i))), zero);
      const on = f64x2.add(f64x2.mul(relaxV, xv), f64x2.mul(keepV, vi));
      const off = f64x2.sub(vi, f64x2.mul(relaxV, xv));
      const tv = v128.bitselect(on, off, mask);
      const fv = f64x2.sub(tv, vi);
      ffV = f64x2.add(ffV, f64x2.mul(fv, fv));
      if (hist) {
        const df32 = f32x4.demote_f64x2_zero(f64x2.sub(fv, v128.load(fPrev + i8)));
        v128.store64_lane(cF + i4, df32, 0);
        v128.store64_lane(cT + i4, f32x4.demote_f64x2_zero(f64x2.sub(tv, v128.load(tPrev + i8))), 0);
        const df = f64x2.promote_low_f32x4(df32);
        const a0 = f64x2.promote_low_f32x4(v128.load64_zero(dF0 + i4));
        const a1 = f64x2.promote_low_f32x4(v128.load64_zero(dF1 + i4));
        const a2 = f64x2.promote_low_f32x4(v128.load64_zero(dF2 + i4));
        s0V = f64x2.add(s0V, f64x2.mul(a0, fv));
        s1V = f64x2.add(s1V, f64x2.mul(a1, fv));
        s2V = f64x2.add(s2V, f64x2.mul(a2, fv));
        n0V = f64x2.add(n0V, f64x2.mul(a0, df));
        n1V = f64x2.add(n1V, f64x2.mul(a1, df));
        n2V = f64x2.add(n2V, f64x2.mul(a2, df));
      } else {
        v128.store(v + i8, tv);
        v128.store64_lane(c + i4, f32x4.demote_f64x2_zero(f64x2.add(v128.load(b + i8), f64x2.mul(rhoV, tv))), 0);
      }
      v128.store(fPrev + i8, fv);
      v128.store(tPrev + i8, tv);
    }
    let lossR = f64x2.extract_lane(lossV, 0) + f64x2.extract_lane(lossV, 1);
    let ffR = f64x2.extract_lane(ffV, 0) + f64x2.extract_lane(ffV, 1);
    let s0 = f64x2.extract_lane(s0V, 0) + f64x2.extract_lane(s0V, 1);
    let s1 = f64x2.extract_lane(s1V, 0) + f64x2.extract_lane(s1V, 1);
    let s2 = f64x2.extract_lane(s2V, 0) + f64x2.extract_lane(s2V, 1);
    let n0 = f64x2.extract_lane(n0V, 0) + f64x2.extract_lane(n0V, 1);
    let n1 = f64x2.extract_lane(n1V, 0) + f64x2.extract_lane(n1V, 1);
    let n2 = f64x2.extract_lane(n2V, 0) + f64x2.extract_lane(n2V, 1);
    if (pairs < w) {
      // The odd last column, scalar (the same operations).
      const i = o + <usize>pairs;
      const i4 = i << 2;
      const i8 = i << 3;
      const xv = <f64>load<f32>(x + i4);
      const vi = load<f64>(v + i8);
      const g = rho * (vi - xv);
      if (byT) lossR += (xv - load<f64>(t + i8)) * g;
      else {
        lossR += (xv - <f64>load<f32>(xPrev + i4)) * (g + <f64>load<f32>(gPrev + i4));
        store<f32>(gPrev + i4, <f32>g);
      }
      const tv = load<u8>(support + i) ? relax * xv + (1 - relax) * vi : vi - relax * xv;
      const fv = tv - vi;
      ffR += fv * fv;
      if (hist) {
        const df32 = <f32>(fv - load<f64>(fPrev + i8));
        store<f32>(cF + i4, df32);
        store<f32>(cT + i4, <f32>(tv - load<f64>(tPrev + i8)));
        const df = <f64>df32;
        const a0 = <f64>load<f32>(dF0 + i4);
        const a1 = <f64>load<f32>(dF1 + i4);
        const a2 = <f64>load<f32>(dF2 + i4);
        s0 += a0 * fv;
        s1 += a1 * fv;
        s2 += a2 * fv;
        n0 += a0 * df;
        n1 += a1 * df;
        n2 += a2 * df;
      } else {
        store<f64>(v + i8, tv);
        store<f32>(c + i4, <f32>(load<f64>(b + i8) + rho * tv));
      }
      store<f64>(fPrev + i8, fv);
      store<f64>(tPrev + i8, tv);
    }
    lossTotal += lossR;
    ffTotal += ffR;
    if (!hist) continue;
    const gr = gram + (<usize>r) * 72;
    const sl = <usize>slot;
    if (cols > 0) {
      store<f64>(gr + (sl << 3), n0);
      store<f64>(gr + ((sl * 3) << 3), n0);
    }
    if (cols > 1) {
      store<f64>(gr + ((3 + sl) << 3), n1);
      store<f64>(gr + ((sl * 3 + 1) << 3), n1);
    }
    if (cols > 2) {
      store<f64>(gr + ((6 + sl) << 3), n2);
      store<f64>(gr + ((sl * 3 + 2) << 3), n2);
    }
    andersonGamma(gr, cols, s0, s1, s2, lu, gamma);
    const g0 = load<f64>(gamma), g1 = load<f64>(gamma, 8), g2 = load<f64>(gamma, 16);
    const g0V = f64x2.splat(g0), g1V = f64x2.splat(g1), g2V = f64x2.splat(g2);
    for (let j = 0; j < pairs; j += 2) {
      const i = o + <usize>j;
      const i4 = i << 2;
      const i8 = i << 3;
      let vn = f64x2.sub(v128.load(tPrev + i8), f64x2.mul(f64x2.promote_low_f32x4(v128.load64_zero(dT0 + i4)), g0V));
      vn = f64x2.sub(vn, f64x2.mul(f64x2.promote_low_f32x4(v128.load64_zero(dT1 + i4)), g1V));
      vn = f64x2.sub(vn, f64x2.mul(f64x2.promote_low_f32x4(v128.load64_zero(dT2 + i4)), g2V));
      v128.store(v + i8, vn);
      v128.store64_lane(c + i4, f32x4.demote_f64x2_zero(f64x2.add(v128.load(b + i8), f64x2.mul(rhoV, vn))), 0);
    }
    if (pairs < w) {
      const i = o + <usize>pairs;
      const i4 = i << 2;
      const i8 = i << 3;
      const vn = load<f64>(tPrev + i8) - <f64>load<f32>(dT0 + i4) * g0 - <f64>load<f32>(dT1 + i4) * g1 - <f64>load<f32>(dT2 + i4) * g2;
      store<f64>(v + i8, vn);
      store<f32>(c + i4, <f32>(load<f64>(b + i8) + rho * vn));
    }
  }
  store<f64>(out, load<f64>(out) + lossTotal);
  store<f64>(out + 8, load<f64>(out + 8) + ffTotal);
}
