// Normalized Hadamard matrices and seeded random rotations for QuaRot-style rotation
// (docs/obr-algorithm.md §1.3). Every matrix is a row-major Float64Array of n·n entries, scaled by
// 1/√n so that H Hᵀ = I.
//
// Supported Hadamard orders are base·2^k (Kronecker product H_base ⊗ H_{2^k}, Sylvester for 2^k)
// with the base built by one of:
//   - Paley I   (q + 1),  q prime, q ≡ 3 (mod 4): 4, 8, 12, 20, 24, 32, 44, 48, 60, 68, 72, 80, 84,
//               104, 108, 128, 132, 140, …  (Paley 1933; H = I + S with S the skew Jacobsthal core)
//   - Paley II  2(q + 1), q prime, q ≡ 1 (mod 4): 12, 28, 36, 60, 76, 108, 124, 148, …
//               (Paley 1933; the symmetric core with each entry replaced by a 2×2 block)
//   - Williamson 4m from four symmetric circulant ±1 matrices A, B, C, D of order m with
//               AAᵀ + BBᵀ + CCᵀ + DDᵀ = 4m·I, placed in the Williamson array (Williamson 1944):
//               m = 13 → 52, 23 → 92 (Baumert–Golomb–Hall 1962), 29 → 116, 39 → 156, 43 → 172.
//               First rows as published in M. Hall Jr., Combinatorial Theory, 2nd ed. (Wiley 1986)
//               for m = 13, 23, 29, 43, and in S. London, Constructing new Turyn type sequences,
//               T-sequences and Hadamard matrices (PhD thesis, U. Illinois Chicago, 2013) for m = 39
//               (the same tables SageMath's williamson_type_quadruples_smallcases carries). Every
//               entry is checked by the unit tests (H·Hᵀ = n·I), so a typo can't pass silently.
// QuaRot's sizes (12, 20, 28, 36, 40, 52, 60, 76, 108, 140, 148, 156, 172 times powers of two) are
// all covered: 12, 20, 60, 108, 140 Paley I; 28, 36, 76, 148 Paley II; 40 = 20·2; 52, 156, 172
// Williamson. Llama-2-7B's FF width 11008 = 172·64 uses Williamson 172 ⊗ Sylvester 64, as QuaRot
// does (had172). Among the constructions of an order the smallest base wins (cheapest online
// transform). Orders with no construction here (not 1, 2 or a multiple of 4, e.g. 5, 6, 14, or
// rarer ones) get `orthogonalMatrix`'s seeded random orthogonal matrix, exact but dense, and a note.

/** How a Hadamard matrix of order n = base·power is built (power = 2^k, base = 1 or a Paley order). */
export interface HadamardPlan {
  n: number;
  base: number;
  baseKind: 'sylvester' | 'paley-1' | 'paley-2' | 'williamson';
  /** The Sylvester factor 2^k. */
  power: number;
}

export class HadamardError extends Error {
  override name = 'HadamardError';
}

function isPrime(q: number): boolean {
  if (q < 2 || !Number.isInteger(q)) return false;
  if (q % 2 === 0) return q === 2;
  for (let d = 3; d * d <= q; d += 2) if (q % d === 0) return false;
  return true;
}

/**
 * First rows of four symmetric circulant ±1 matrices A, B, C, D of order m (Williamson
 * quadruples) with AAᵀ + BBᵀ + CCᵀ + DDᵀ = 4m·I; sources in the header. '+' = 1, '-' = −1.
 */
const WILLIAMSON: Readonly<Record<number, readonly [string, string, string, string]>> = {
  13: ['++++-+--+-+++', '+---+-++-+---', '++---+--+---+', '++---+--+---+'],
  23: ['++---+---+-++-+---+---+', '+-++-++--++++++--++-++-', '+++---++-+-++-+-++---++', '+++-+++-+------+-+++-++'],
  29: ['+++---++--+-+----+-+--++---++', '+-+---++--+-++++++-+--++---+-', '++++-++-+---++++++---+-++-+++', '++--+--+-+++-++++-+++-+--+--+'],
  39: ['+++--+-+-----+--++----++--+-----+-+--++', '+++--++-+---+-+--+----+--+-+---+-++--++', '++++---+--++----+-+--+-+----++--+---+++', '+---++-+-+-----+++-++-+++-----+-+-++---'],
  43: ['++---++++-+--+--++--------++--+--+-++++---+', '+++-+-++--+-+-++++-+----+-++++-+-+--++-+-++', '++-++++++----+-+--++-++-++--+-+----++++++-+', '+---++--++++-+-+++-++--++-+++-+-++++--++---'],
};

/** The construction for a base order m, or null. */
function baseKind(m: number): 'paley-1' | 'paley-2' | 'williamson' | null {
  if (m >= 4 && isPrime(m - 1) && (m - 1) % 4 === 3) return 'paley-1';
  if (m >= 12 && m % 2 === 0 && isPrime(m / 2 - 1) && (m / 2 - 1) % 4 === 1) return 'paley-2';
  if (m % 4 === 0 && WILLIAMSON[m / 4]) return 'williamson';
  return null;
}

/**
 * Unnormalized ±1 Williamson-type Hadamard matrix of order 4m (Williamson 1944): the array
 *   [ A  B  C  D]
 *   [−B  A −D  C]
 *   [−C  D  A −B]
 *   [−D −C  B  A]
 * of symmetric circulant blocks. Rows of different block rows are orthogonal because circulants
 * commute and A, B, C, D are symmetric; within a block row the blocks' Gram sum is 4m·I.
 */
function williamsonUnnormalized(m: number): Float64Array {
  const rows = WILLIAMSON[m];
  if (!rows) throw new HadamardError(`no Williamson quadruple of order ${m}`);
  const blocks = rows.map((r) => Array.from(r, (ch) => (ch === '+' ? 1 : -1)));
  for (const b of blocks) if (b.length !== m) throw new HadamardError(`internal: Williamson row of length ${b.length}, expected ${m}`);
  // Block (bi, bj) = sign · circulant(blocks[index]); circulant(a)[i][j] = a[(j − i) mod m].
  const layout: Array<Array<[number, number]>> = [
    [[0, 1], [1, 1], [2, 1], [3, 1]],
    [[1, -1], [0, 1], [3, -1], [2, 1]],
    [[2, -1], [3, 1], [0, 1], [1, -1]],
    [[3, -1], [2, -1], [1, 1], [0, 1]],
  ];
  const n = 4 * m;
  const h = new Float64Array(n * n);
  for (let bi = 0; bi < 4; bi++) {
    for (let bj = 0; bj < 4; bj++) {
      const [which, sign] = layout[bi][bj];
      const a = blocks[which];
      for (let i = 0; i < m; i++) for (let j = 0; j < m; j++) h[(bi * m + i) * n + bj * m + j] = sign * a[(((j - i) % m) + m) % m];
    }
  }
  return h;
}

/**
 * The construction used for order n, or null when none is supported. Prefers the smallest base
 * (largest Sylvester factor), which keeps Kronecker-factored online Hadamards cheap.
 */
export function hadamardPlan(n: number): HadamardPlan | null {
  if (!Number.isInteger(n) || n < 1) return null;
  let power = 1;
  while (n % (power * 2) === 0) power *= 2;
  // power is the largest 2^k dividing n; try bases n/power, 2n/power, 4n/power, … (each even base
  // a Paley candidate with a smaller Sylvester factor).
  for (let p = power; p >= 1; p /= 2) {
    const m = n / p;
    if (m === 1) return { n, base: 1, baseKind: 'sylvester', power: p };
    const kind = baseKind(m);
    if (kind) return { n, base: m, baseKind: kind, power: p };
  }
  return null;
}

export function hasHadamard(n: number): boolean {
  return hadamardPlan(n) !== null;
}

/** Legendre symbol χ(a) mod prime q: 0, 1 or −1. */
function quadraticCharacter(q: number): Int8Array {
  const chi = new Int8Array(q).fill(-1);
  chi[0] = 0;
  for (let x = 1; x < q; x++) chi[(x * x) % q] = 1;
  return chi;
}

/** Unnormalized ±1 base matrix of order m (row-major). */
function baseUnnormalized(m: number, kind: 'paley-1' | 'paley-2' | 'williamson'): Float64Array {
  return kind === 'williamson' ? williamsonUnnormalized(m / 4) : paleyUnnormalized(m, kind);
}

/** Unnormalized ±1 Paley matrix of order m (row-major). */
function paleyUnnormalized(m: number, kind: 'paley-1' | 'paley-2'): Float64Array {
  const q = kind === 'paley-1' ? m - 1 : m / 2 - 1;
  const chi = quadraticCharacter(q);
  // Conference-like core S of order q + 1: S[0][j] = 1 (j ≥ 1), S[i][0] = ∓1, S[i][j] = χ(j − i).
  const o = q + 1;
  const s = new Float64Array(o * o);
  for (let i = 1; i < o; i++) {
    s[j0(0, i, o)] = 1;
    s[j0(i, 0, o)] = kind === 'paley-1' ? -1 : 1;
    for (let j = 1; j < o; j++) s[j0(i, j, o)] = chi[(((j - i) % q) + q) % q];
  }
  if (kind === 'paley-1') {
    // Paley I: H = I + S, with S antisymmetric (q ≡ 3 mod 4).
    for (let i = 0; i < o; i++) s[j0(i, i, o)] += 1;
    return s;
  }
  // Paley II: S symmetric (q ≡ 1 mod 4); replace 0 by [[1,−1],[−1,−1]] and ±1 by ±[[1,1],[1,−1]].
  const h = new Float64Array(m * m);
  for (let i = 0; i < o; i++) {
    for (let j = 0; j < o; j++) {
      const v = s[j0(i, j, o)];
      const blk = v === 0 ? [1, -1, -1, -1] : [v, v, v, -v];
      h[j0(2 * i, 2 * j, m)] = blk[0];
      h[j0(2 * i, 2 * j + 1, m)] = blk[1];
      h[j0(2 * i + 1, 2 * j, m)] = blk[2];
      h[j0(2 * i + 1, 2 * j + 1, m)] = blk[3];
    }
  }
  return h;
}

function j0(i: number, j: number, n: number): number {
  return i * n + j;
}

/** Kronecker product A ⊗ B of square row-major matrices (orders a, b). */
export function kronecker(a: Float64Array, na: number, b: Float64Array, nb: number): Float64Array {
  const n = na * nb;
  const out = new Float64Array(n * n);
  for (let i = 0; i < na; i++) {
    for (let j = 0; j < na; j++) {
      const v = a[i * na + j];
      if (v === 0) continue;
      for (let k = 0; k < nb; k++) {
        const row = (i * nb + k) * n + j * nb;
        const brow = k * nb;
        for (let l = 0; l < nb; l++) out[row + l] = v * b[brow + l];
      }
    }
  }
  return out;
}

/** Unnormalized ±1 Sylvester matrix of order 2^k: H[i][j] = (−1)^popcount(i & j). */
function sylvesterUnnormalized(n: number): Float64Array {
  const h = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let x = i & j;
      let parity = 0;
      while (x) {
        parity ^= 1;
        x &= x - 1;
      }
      h[i * n + j] = parity ? -1 : 1;
    }
  }
  return h;
}

/**
 * The normalized Hadamard matrix of order n (entries ±1/√n, H Hᵀ = I), deterministic.
 * Throws HadamardError for orders without a supported construction (see `hadamardPlan`).
 */
export function hadamardMatrix(n: number): Float64Array {
  const plan = hadamardPlan(n);
  if (!plan) {
    throw new HadamardError(
      `no Hadamard construction for size ${n}: supported sizes are 2^k, (q+1)·2^k (q ≡ 3 mod 4 prime), 2(q+1)·2^k (q ≡ 1 mod 4 prime) and Williamson 52, 92, 116, 156, 172 times 2^k`,
    );
  }
  const syl = sylvesterUnnormalized(plan.power);
  const h = plan.baseKind === 'sylvester' ? syl : kronecker(baseUnnormalized(plan.base, plan.baseKind), plan.base, syl, plan.power);
  const scale = 1 / Math.sqrt(n);
  for (let i = 0; i < h.length; i++) h[i] *= scale;
  return h;
}

// ---- seeded randomness -------------------------------------------------------------------------

/** A seeded uniform [0, 1) generator (SplitMix32-style; deterministic across platforms). */
export function seededUniform(seed: number): () => number {
  let state = (seed | 0) ^ 0x9e3779b9;
  return () => {
    state = (state + 0x9e3779b9) | 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    z ^= z >>> 16;
    return (z >>> 0) / 4294967296;
  };
}

/** n seeded random signs (±1). */
export function randomSigns(n: number, seed: number): Float64Array {
  const u = seededUniform(seed);
  const s = new Float64Array(n);
  for (let i = 0; i < n; i++) s[i] = u() < 0.5 ? -1 : 1;
  return s;
}

/**
 * QuaRot's randomized Hadamard Q = diag(s) · H with seeded signs s (§1.3 step 2): row i of H is
 * multiplied by s_i. Still orthogonal with entries ±1/√n. Throws HadamardError when n has no
 * construction; use `orthogonalMatrix` for a fallback.
 */
export function randomHadamard(n: number, seed: number): Float64Array {
  const h = hadamardMatrix(n);
  const s = randomSigns(n, seed);
  for (let i = 0; i < n; i++) {
    if (s[i] > 0) continue;
    const row = i * n;
    for (let j = 0; j < n; j++) h[row + j] = -h[row + j];
  }
  return h;
}

/**
 * A seeded Haar-random orthogonal matrix: Householder QR of a Gaussian matrix, with the columns of
 * Q sign-fixed by diag(R) (Mezzadri 2007). O(n³); the fallback for sizes without a Hadamard.
 */
export function randomOrthogonal(n: number, seed: number): Float64Array {
  const u = seededUniform(seed);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n * n; i += 2) {
    // Box–Muller; 1 − u() keeps the log argument in (0, 1].
    const r = Math.sqrt(-2 * Math.log(1 - u()));
    const t = 2 * Math.PI * u();
    a[i] = r * Math.cos(t);
    if (i + 1 < n * n) a[i + 1] = r * Math.sin(t);
  }
  // Householder: A = Q R. Reflectors v_k are stored per column; Q is accumulated afterwards.
  const vs: Float64Array[] = [];
  const rdiag = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    let norm = 0;
    for (let i = k; i < n; i++) norm += a[i * n + k] * a[i * n + k];
    norm = Math.sqrt(norm);
    const x0 = a[k * n + k];
    const alpha = x0 >= 0 ? -norm : norm;
    const v = new Float64Array(n - k);
    for (let i = k; i < n; i++) v[i - k] = a[i * n + k];
    v[0] -= alpha;
    let vnorm2 = 0;
    for (let i = 0; i < v.length; i++) vnorm2 += v[i] * v[i];
    rdiag[k] = alpha;
    if (vnorm2 > 0) {
      // A[k:, k:] ← (I − 2 v vᵀ / vᵀv) A[k:, k:]
      for (let j = k; j < n; j++) {
        let dot = 0;
        for (let i = k; i < n; i++) dot += v[i - k] * a[i * n + j];
        const f = (2 * dot) / vnorm2;
        for (let i = k; i < n; i++) a[i * n + j] -= f * v[i - k];
      }
      for (let i = 0; i < v.length; i++) v[i] /= Math.sqrt(vnorm2);
    }
    vs.push(v);
  }
  // Q = H_0 H_1 … H_{n−1} applied to I, from the last reflector back.
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  for (let k = n - 1; k >= 0; k--) {
    const v = vs[k];
    for (let j = 0; j < n; j++) {
      let dot = 0;
      for (let i = k; i < n; i++) dot += v[i - k] * q[i * n + j];
      if (dot === 0) continue;
      for (let i = k; i < n; i++) q[i * n + j] -= 2 * dot * v[i - k];
    }
  }
  // Haar measure: multiply column j by sign(R_jj).
  for (let j = 0; j < n; j++) {
    if (rdiag[j] >= 0) continue;
    for (let i = 0; i < n; i++) q[i * n + j] = -q[i * n + j];
  }
  return q;
}

/** An orthogonal matrix for a rotation, with how it was built. */
export interface Rotation {
  n: number;
  kind: 'hadamard' | 'random-hadamard' | 'random-orthogonal';
  plan: HadamardPlan | null;
  /** Row signs s of a randomized Hadamard Q = diag(s)·H, or null. */
  signs: Float64Array | null;
  /**
   * Unnormalized ±1 base matrix of order plan.base (row-major) for a Hadamard with base > 1, the
   * normalized dense matrix for a random orthogonal rotation, null for a pure Sylvester order.
   */
  core: Float64Array | null;
  /**
   * Row-major n×n, Q Qᵀ = I. For a Hadamard it is built on first read (O(n²) memory); the
   * transforms (`rotateVectors`) never read it.
   */
  readonly matrix: Float64Array;
  /** Set when no Hadamard construction exists and a dense random orthogonal matrix was used. */
  warning?: string;
}

/**
 * A Hadamard of order n (randomized by seeded signs when `randomized`), or, when n has no
 * construction, a seeded random orthogonal matrix with a warning (it rotates as exactly but spreads
 * outliers less evenly and costs a dense n×n product).
 */
export function orthogonalMatrix(n: number, options: { seed: number; randomized: boolean }): Rotation {
  const plan = hadamardPlan(n);
  if (plan) {
    const signs = options.randomized ? randomSigns(n, options.seed) : null;
    let dense: Float64Array | undefined;
    return {
      n,
      kind: options.randomized ? 'random-hadamard' : 'hadamard',
      plan,
      signs,
      core: plan.base > 1 ? baseUnnormalized(plan.base, plan.baseKind as 'paley-1' | 'paley-2' | 'williamson') : null,
      get matrix(): Float64Array {
        dense ??= options.randomized ? randomHadamard(n, options.seed) : hadamardMatrix(n);
        return dense;
      },
    };
  }
  const matrix = randomOrthogonal(n, options.seed);
  return {
    n,
    kind: 'random-orthogonal',
    plan: null,
    signs: null,
    core: matrix,
    matrix,
    warning: `no Hadamard construction for size ${n}; used a seeded random orthogonal matrix instead (exact, but a dense ${n}×${n} matmul and weaker outlier spreading)`,
  };
}

// ---- fast application ---------------------------------------------------------------------------

/** Columns of a strided block transformed together: a [n, TILE] float64 tile stays in L2 for n ≤ 4096. */
const TILE = 32;

/** Where the vectors of `rotateVectors` lie: element k of vector t is data[offset + t·step + k·stride]. */
export interface VectorLayout {
  offset: number;
  /** Distance between consecutive elements of one vector. */
  stride: number;
  /** Number of vectors. */
  count: number;
  /** Distance between the first elements of consecutive vectors. */
  step: number;
}

/**
 * x ← x·R in place for `count` vectors of length R.n laid out as `layout` says. Rows of a
 * row-major [rows, n] matrix W (W ← W·R): {offset: 0, stride: 1, count: rows, step: n}; columns of
 * a row-major [n, cols] matrix W (W ← Rᵀ·W): {offset: 0, stride: cols, count: cols, step: 1}.
 *
 * A Hadamard R = diag(s)·(B ⊗ H_{2^k})/√n (B the ±1 base of order m, H Sylvester) costs
 * O(n·(log₂ n + m)) per vector: the signs, a fast Walsh–Hadamard transform on each contiguous
 * run of 2^k entries (H symmetric, so x·H is the butterfly recursion), then B mixing the m runs
 * (x·(B ⊗ H))[a′, b′] = Σ_a Σ_b x[a, b]·B[a, a′]·H[b, b′]; the 1/√n once at the end. A random
 * orthogonal R is a dense product (O(n²) per vector), used only at sizes with no Hadamard
 * (head counts such as 5 or 14). Vectors go TILE at a time through a float64 [n, TILE] tile, so
 * float32 data is rounded once, and the tile stays in cache for every stage. With `prescale` (length
 * R.n) the vectors are x ⊙ prescale first: x ← (x·diag(prescale))·R, e.g. a folded norm weight.
 */
export function rotateVectors(r: Rotation, data: Float32Array | Float64Array, layout: VectorLayout, prescale?: Float64Array): void {
  const { offset, stride, count, step } = layout;
  const n = r.n;
  const w0 = Math.max(1, Math.min(TILE, count));
  const tile = new Float64Array(n * w0);
  const m = r.plan ? r.plan.base : n;
  const scratch = r.core ? new Float64Array(m * w0) : null;
  const scale = r.plan ? 1 / Math.sqrt(n) : 1;
  let signs = r.signs;
  if (prescale) {
    if (prescale.length !== n) throw new HadamardError(`internal: prescale of length ${prescale.length} for a rotation of size ${n}`);
    signs = signs ? prescale.map((v, k) => v * signs![k]) : prescale;
  }
  for (let t0 = 0; t0 < count; t0 += w0) {
    const tw = Math.min(w0, count - t0);
    const first = offset + t0 * step;
    // Gather [n, tw] with the signs applied (x·diag(s)); read along whichever axis is contiguous.
    if (step === 1 || stride !== 1) {
      for (let k = 0; k < n; k++) {
        const src = first + k * stride;
        const dst = k * tw;
        const s = signs ? signs[k] : 1;
        for (let t = 0; t < tw; t++) tile[dst + t] = s * data[src + t * step];
      }
    } else {
      for (let t = 0; t < tw; t++) {
        const src = first + t * step;
        if (signs) for (let k = 0; k < n; k++) tile[k * tw + t] = signs[k] * data[src + k];
        else for (let k = 0; k < n; k++) tile[k * tw + t] = data[src + k];
      }
    }
    if (r.plan) hadamardTile(tile, tw, r.plan.base, r.plan.power, r.core, scratch);
    else denseTile(tile, tw, n, r.core!, scratch!);
    if (step === 1 || stride !== 1) {
      for (let k = 0; k < n; k++) {
        const dst = first + k * stride;
        const src = k * tw;
        for (let t = 0; t < tw; t++) data[dst + t * step] = scale * tile[src + t];
      }
    } else {
      for (let t = 0; t < tw; t++) {
        const dst = first + t * step;
        for (let k = 0; k < n; k++) data[dst + k] = scale * tile[k * tw + t];
      }
    }
  }
}

/**
 * tile ← tile·(B ⊗ H_p) per column of a [m·p, w] tile (unnormalized: B ±1 of order m, or null for
 * m = 1; H_p Sylvester). Row index k = a·p + b.
 */
function hadamardTile(tile: Float64Array, w: number, m: number, p: number, base: Float64Array | null, scratch: Float64Array | null): void {
  // FWHT on each run of p rows: butterflies (x, y) → (x + y, x − y) at spans 1, 2, 4, …, p/2.
  for (let a = 0; a < m; a++) {
    const run = a * p;
    for (let h = 1; h < p; h *= 2) {
      for (let blk = 0; blk < p; blk += 2 * h) {
        for (let j = blk; j < blk + h; j++) {
          const r0 = (run + j) * w;
          const r1 = r0 + h * w;
          for (let t = 0; t < w; t++) {
            const x = tile[r0 + t];
            const y = tile[r1 + t];
            tile[r0 + t] = x + y;
            tile[r1 + t] = x - y;
          }
        }
      }
    }
  }
  if (m === 1 || !base || !scratch) return;
  // Base mixing across the m runs, for each position b: y[a′] = Σ_a x[a]·B[a, a′].
  for (let b = 0; b < p; b++) {
    scratch.fill(0, 0, m * w);
    for (let a = 0; a < m; a++) {
      const src = (a * p + b) * w;
      const brow = a * m;
      for (let ap = 0; ap < m; ap++) {
        const f = base[brow + ap];
        const dst = ap * w;
        for (let t = 0; t < w; t++) scratch[dst + t] += f * tile[src + t];
      }
    }
    for (let ap = 0; ap < m; ap++) {
      const dst = (ap * p + b) * w;
      const src = ap * w;
      for (let t = 0; t < w; t++) tile[dst + t] = scratch[src + t];
    }
  }
}

/** tile ← Mᵀ·tile, i.e. each column x ← x·M, for a dense n×n M and a [n, w] tile. */
function denseTile(tile: Float64Array, w: number, n: number, mat: Float64Array, scratch: Float64Array): void {
  scratch.fill(0, 0, n * w);
  for (let k = 0; k < n; k++) {
    const src = k * w;
    const mrow = k * n;
    for (let kp = 0; kp < n; kp++) {
      const f = mat[mrow + kp];
      if (f === 0) continue;
      const dst = kp * w;
      for (let t = 0; t < w; t++) scratch[dst + t] += f * tile[src + t];
    }
  }
  tile.set(scratch.subarray(0, n * w));
}
