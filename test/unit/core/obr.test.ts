// Invariants of obr-algorithm.md §7 on seeded random layers with correlated inputs, against the
// float64 references in ./reference.ts (row loop, two solves per row as in §2.6).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compressLayer, type LayerConfig } from '../../../src/core/compress';
import { dampHessian } from '../../../src/core/matrix';
import { pruneMask, wandaScores } from '../../../src/core/mask';
import { compensateRowsDirect } from '../../../src/core/obr';
import { createRowKernels } from '../../../src/core/kernels';
import { KERNELS_WASM_BASE64 } from '../../../src/core/wasm/kernelsWasm';
import { compensateRows } from '../../../src/core/parallel';
import { jsBackend } from '../../../src/core/backend';
import { symmetricRowScales } from '../../../src/core/quantize';
import { syntheticLayer } from '../../../src/core/random';
import { matVec, pick, refDamp, refLoss, refObrCompensate, refQ, refSolve } from './reference';

const ROWS = 12;
const COLS = 48;
const half = { kind: 'unstructured', ratio: 0.5 } as const;

function setup(seed: number, sparsity: LayerConfig['sparsity'] = half) {
  const L = syntheticLayer(ROWS, COLS, seed, { tokens: 160 });
  const hd = dampHessian(L.hessian, COLS, 0.01);
  const scales = symmetricRowScales(L.weight, ROWS, COLS, 4);
  const mask = pruneMask(wandaScores(L.weight, ROWS, COLS, L.channelEnergy), ROWS, COLS, sparsity);
  return { L, hd, scales, mask };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test('compensation matches the §2.6 two-solve reference (rel. 1e-9) for several α and masks', () => {
  for (const [seed, sparsity, alpha] of [
    [1, half, 0.5],
    [2, half, 0.25],
    [3, { kind: 'nm', n: 2, m: 4 }, 0.5],
    [4, { kind: 'nm', n: 4, m: 8 }, 0.75],
    [5, half, 1],
    [6, half, 0],
  ] as const) {
    const { L, hd, scales, mask } = setup(seed, sparsity);
    const k = Math.floor(alpha * COLS);
    const ours = new Float64Array(ROWS * COLS);
    compensateRowsDirect({ weight: L.weight, rows: ROWS, cols: COLS, hessian: hd, mask, scales, bits: 4, splitCol: k }, ours);
    const ref = refObrCompensate(L.weight, ROWS, COLS, refDamp(L.hessian, COLS, 0.01), mask, scales, 7, k);
    const scale = Math.max(...ref.map(Math.abs));
    assert.ok(maxAbsDiff(ours, ref) <= 1e-9 * scale, `seed ${seed}: ${maxAbsDiff(ours, ref)}`);
  }
});

test('§7.3/7.4 pruning stationarity and optimality: H_RR Δ_R = H_RE w_E; random perturbations never help', () => {
  const { L, hd, scales, mask } = setup(11);
  const wc1 = new Float64Array(ROWS * COLS);
  // k = 0 disables the quantization transfer: W_c1 = pruning compensation only.
  compensateRowsDirect({ weight: L.weight, rows: ROWS, cols: COLS, hessian: hd, mask, scales, bits: 4, splitCol: 0 }, wc1);
  const rng = syntheticLayer(1, COLS, 99).weight;
  for (let r = 0; r < ROWS; r++) {
    const d = Array.from({ length: COLS }, (_, j) => wc1[r * COLS + j] - L.weight[r * COLS + j]);
    const g = matVec(hd, COLS, COLS, d);
    let gnorm = 0;
    let scale = 0;
    for (let j = 0; j < COLS; j++) {
      scale = Math.max(scale, Math.abs(hd[j * COLS + j] * L.weight[r * COLS + j]));
      if (mask[r * COLS + j]) gnorm = Math.max(gnorm, Math.abs(g[j]));
    }
    assert.ok(gnorm <= 1e-10 * scale, `row ${r}: gradient ${gnorm} (scale ${scale})`);
    // Optimality: L(W_c1) ≤ L(W_p) and L(W_c1 + ε on R) ≥ L(W_c1).
    const row = (v: Float64Array) => refLoss(v, L.weight.subarray(r * COLS, (r + 1) * COLS), 1, COLS, hd);
    const c1 = wc1.slice(r * COLS, (r + 1) * COLS);
    const wp = L.weight.slice(r * COLS, (r + 1) * COLS).map((v, j) => (mask[r * COLS + j] ? v : 0));
    assert.ok(row(c1) <= row(wp) * (1 + 1e-12));
    for (let t = 0; t < 5; t++) {
      const p = c1.map((v, j) => (mask[r * COLS + j] ? v + 1e-3 * rng[(j * 7 + t * 13 + r) % COLS] : v));
      assert.ok(row(p) >= row(c1) * (1 - 1e-12));
    }
  }
});

test('§7.5/7.6 Pythagorean decomposition and quantization stationarity on R2', () => {
  const { L, hd, scales, mask } = setup(12);
  const k = COLS / 2;
  const p = { weight: L.weight, rows: ROWS, cols: COLS, hessian: hd, mask, scales, bits: 4 };
  const wc1 = new Float64Array(ROWS * COLS);
  const wmid = new Float64Array(ROWS * COLS);
  compensateRowsDirect({ ...p, splitCol: 0 }, wc1);
  compensateRowsDirect({ ...p, splitCol: k }, wmid);
  for (let r = 0; r < ROWS; r++) {
    const s = scales[r];
    // W_mid = W_c1 with E2 rounded plus the R2 transfer; E2 entries must be exactly Q(w̄_E2) − w̄ + … :
    // build the "before rounding R2" vector: E2 rounded, R2 = w̄ + d2.
    const mid = wmid.slice(r * COLS, (r + 1) * COLS);
    for (let j = 0; j < k; j++) if (mask[r * COLS + j]) mid[j] = refQ(wc1[r * COLS + j], s, 7);
    const W = L.weight.subarray(r * COLS, (r + 1) * COLS);
    const c1 = wc1.subarray(r * COLS, (r + 1) * COLS);
    const delta = mid.map((v, j) => v - c1[j]);
    const R = [...Array(COLS).keys()].filter((j) => mask[r * COLS + j]);
    const dR = R.map((j) => delta[j]);
    const Hrr = pick(hd, COLS, R, R);
    const quad = dR.reduce((acc, v, i) => acc + v * matVec(Hrr, R.length, R.length, dR)[i], 0);
    const lhs = refLoss(mid, W, 1, COLS, hd);
    const rhs = refLoss(c1, W, 1, COLS, hd) + quad;
    assert.ok(Math.abs(lhs - rhs) <= 1e-9 * Math.max(lhs, 1e-30), `row ${r}: ${lhs} vs ${rhs}`);
    // Stationarity: (H_RR δ)_{R2} = 0.
    const g = matVec(Hrr, R.length, R.length, dR);
    const gmax = Math.max(...R.map((j, i) => (j >= k ? Math.abs(g[i]) : 0)));
    const gscale = Math.max(...g.map(Math.abs), 1e-300);
    assert.ok(gmax <= 1e-9 * gscale + 1e-15, `row ${r}: ${gmax} vs ${gscale}`);
  }
});

test('§7.1/7.2/7.7 exact zeros, codes on the grid, group-1 consistency (obr-rtn and obr-gptq, unstructured and N:M)', async () => {
  for (const method of ['obr-rtn', 'obr-gptq'] as const) {
    for (const sparsity of [half, { kind: 'nm', n: 2, m: 4 } as const, { kind: 'nm', n: 4, m: 8 } as const]) {
      const L = syntheticLayer(ROWS, COLS, 21, { tokens: 160 });
      const res = await compressLayer(
        { weight: L.weight, rows: ROWS, cols: COLS, hessian: L.hessian, channelEnergy: L.channelEnergy },
        { method, sparsity, wbits: 4, alpha: 0.5, damp: 0.01 },
        { threads: 1 },
      );
      const refScales = symmetricRowScales(L.weight, ROWS, COLS, 4);
      assert.deepEqual(Array.from(res.scales), Array.from(refScales), 'scales come from the dense W (P2)');
      for (let r = 0; r < ROWS; r++) {
        let zeros = 0;
        for (let j = 0; j < COLS; j++) {
          const i = r * COLS + j;
          if (!res.mask[i]) assert.equal(res.weight[i], 0, 'pruned entries exactly 0');
          if (res.weight[i] === 0) zeros++;
          assert.ok(res.codes[i] >= -8 && res.codes[i] <= 7);
          assert.equal(res.weight[i], res.scales[r] * res.codes[i], 'weight = scale·code');
          const g = res.weight[i] / res.scales[r];
          assert.ok(Math.abs(g - Math.round(g)) < 1e-9);
        }
        if (sparsity.kind === 'unstructured') assert.ok(zeros >= Math.floor(COLS * 0.5));
        else {
          for (let b = 0; b < COLS; b += sparsity.m) {
            let pruned = 0;
            for (let t = 0; t < sparsity.m; t++) pruned += res.mask[r * COLS + b + t] ? 0 : 1;
            assert.equal(pruned, sparsity.n, 'N:M block prunes exactly N');
          }
        }
      }
      // Group-1 consistency: Ŵ[E2] = Q(W_c[E2]) = Q(w̄[E2]), w̄ from the pruning compensation.
      const hd = dampHessian(L.hessian, COLS, 0.01);
      const wc1 = new Float64Array(ROWS * COLS);
      compensateRowsDirect({ weight: L.weight, rows: ROWS, cols: COLS, hessian: hd, mask: res.mask, scales: res.scales, bits: 4, splitCol: 0 }, wc1);
      for (let r = 0; r < ROWS; r++) for (let j = 0; j < COLS / 2; j++) {
        const i = r * COLS + j;
        if (res.mask[i]) assert.equal(res.weight[i], refQ(wc1[i], res.scales[r], 7));
      }
    }
  }
});

test('batched and threaded row processing give the same W_c as the row loop (§7.9)', async () => {
  const { L, hd, scales, mask } = setup(31);
  const p = { weight: L.weight, rows: ROWS, cols: COLS, hessian: hd, mask, scales, bits: 4, splitCol: COLS / 2 };
  const loop = new Float64Array(ROWS * COLS);
  for (let r = ROWS - 1; r >= 0; r--) compensateRowsDirect(p, loop, r, r + 1);
  const threaded = await compensateRows(p, { threads: 2, solver: 'direct', backend: jsBackend });
  assert.ok(maxAbsDiff(loop, threaded) <= 1e-12 * Math.max(...loop.map(Math.abs)));
});

test('PCG solver reaches the direct solution (rel. 1e-5) and the same loss within 1e-4', async () => {
  const { L, hd, scales, mask } = setup(41);
  const p = { weight: L.weight, rows: ROWS, cols: COLS, hessian: hd, mask, scales, bits: 4, splitCol: COLS / 2 };
  const direct = await compensateRows(p, { threads: 1, solver: 'direct', backend: jsBackend });
  const pcg = await compensateRows(p, { threads: 1, solver: 'pcg', backend: jsBackend });
  const scale = Math.max(...direct.map(Math.abs));
  assert.ok(maxAbsDiff(direct, pcg) <= 1e-5 * scale, `${maxAbsDiff(direct, pcg)} vs ${scale}`);
  const ld = refLoss(direct, L.weight, ROWS, COLS, hd);
  const lp = refLoss(pcg, L.weight, ROWS, COLS, hd);
  assert.ok(Math.abs(lp - ld) <= 1e-4 * ld);
});

test('closed form refuses nothing on a dense row (P5 clean): s = 0 still transfers E2 → R2', () => {
  const L = syntheticLayer(4, 16, 51, { tokens: 64 });
  const hd = dampHessian(L.hessian, 16, 0.01);
  const scales = symmetricRowScales(L.weight, 4, 16, 4);
  const mask = new Uint8Array(64).fill(1);
  const out = new Float64Array(64);
  compensateRowsDirect({ weight: L.weight, rows: 4, cols: 16, hessian: hd, mask, scales, bits: 4, splitCol: 8 }, out);
  // R2 entries moved by A_R2R2⁻¹ A_R2E2 ê_E2, E2 untouched.
  for (let r = 0; r < 4; r++) {
    const e = Array.from({ length: 8 }, (_, j) => L.weight[r * 16 + j] - refQ(L.weight[r * 16 + j], scales[r], 7));
    const I1 = [...Array(8).keys()];
    const I2 = I1.map((i) => i + 8);
    const d2 = refSolve(pick(hd, 16, I2, I2), 8, matVec(pick(hd, 16, I2, I1), 8, 8, e));
    for (let j = 0; j < 8; j++) assert.equal(out[r * 16 + j], L.weight[r * 16 + j]);
    for (let t = 0; t < 8; t++) assert.ok(Math.abs(out[r * 16 + 8 + t] - (L.weight[r * 16 + 8 + t] + d2[t])) < 1e-10);
  }
});

test('WebAssembly row kernel = JavaScript row kernel (unstructured and 2:4, odd sizes; rel. 1e-12)', () => {
  const wasm = createRowKernels(KERNELS_WASM_BASE64);
  const js = createRowKernels(null);
  assert.ok(wasm.wasmAvailable(), 'the compiled kernels must load here');
  assert.ok(!js.wasmAvailable());
  for (const [cols, sparsity] of [[288, half], [133, half], [64, { kind: 'nm', n: 2, m: 4 } as const]] as const) {
    const rows = 5;
    const L = syntheticLayer(rows, cols, 61 + cols, { tokens: 600 });
    const hd = dampHessian(L.hessian, cols, 0.01);
    const scales = symmetricRowScales(L.weight, rows, cols, 4);
    const mask = pruneMask(wandaScores(L.weight, rows, cols, L.channelEnergy), rows, cols, sparsity);
    const p = { weight: L.weight, rows, cols, hessian: hd, mask, scales, bits: 4, splitCol: Math.floor(cols / 2) };
    const a = new Float64Array(rows * cols);
    const b = new Float64Array(rows * cols);
    wasm.compensateRowsDirect(p, a);
    js.compensateRowsDirect(p, b);
    assert.ok(maxAbsDiff(a, b) <= 1e-12 * Math.max(...b.map(Math.abs)), `cols ${cols}: ${maxAbsDiff(a, b)}`);
    for (let i = 0; i < a.length; i++) if (!mask[i]) assert.equal(a[i], 0);
  }
});
