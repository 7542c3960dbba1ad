// How much memory the batched OBR solver holds at once, in units of one n×n float64 matrix
// (n²·8 bytes: 254 MB for a 5632-column down_proj), on a moderate layer (16 × 1030: blocks of 128
// columns, the last one partial). Measured, not self-reported: at every backend product, every
// solver iteration and every memory-trace point of the core (src/core/trace.ts: the moments
// between the factorization's phases, after the right sides, after each step's state is made)
// the test forces two full garbage collections and reads the process's external memory (every
// ArrayBuffer, SharedArrayBuffer and WebAssembly memory), minus what was live before the call.
// The caller's H is in the baseline; the solver's rows×n arrays are small here (16 rows).
// History: before issue #12's rework the solver held its scaled H, the factor, the blocked
// inverse's copies and L⁻¹ at once (3.3 units here) and compressLayer a damped H beside it (4.2
// units); the first rework read H̃ from the caller's H and made L⁻¹ in L's place (1.53 units at
// the products, 2 units while L was copied out of the kernels' memory). Now (src/core/spdInverse.ts)
// A + ρI, L and L⁻¹ are one packed lower triangle (0.5 units) in panels, factored and inverted in
// place by block columns, and the float32 inverse (0.5 units) is made in one array while the
// panels are handed back: measured 0.79 units, at a product of the factorization (one block step's
// operands beside the triangle: 0.29 units at this n, where a 128-column block is an eighth of n;
// 0.1 units at 5632 columns with 256-column blocks).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { compensateAdmm, DEFAULT_ADMM } from '../../../src/core/admm';
import type { MatrixBackend } from '../../../src/core/backend';
import { compressLayer } from '../../../src/core/compress';
import { rowKernels } from '../../../src/core/kernels';
import { dampHessian, gemmAccumulate } from '../../../src/core/matrix';
import { pruneMask, wandaScores } from '../../../src/core/mask';
import { symmetricRowScales } from '../../../src/core/quantize';
import { syntheticLayer } from '../../../src/core/random';
import { setCoreMark } from '../../../src/core/trace';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Bytes of external memory still reachable (after two full collections). */
function liveExternal(): number {
  gc();
  gc();
  return process.memoryUsage().external;
}

/** Peak live external memory over the sample points, relative to a baseline taken at start(). */
class PeakTracker {
  private base = 0;
  private peak = 0;
  samples = 0;
  /** Where the peak was sampled. */
  peakAt = '';
  start(): void {
    // A fresh kernels instance grown to 512 × 512 inverses, counted in the baseline (the diagonal
    // blocks' inverses, 128 × 128 here, fit in it).
    rowKernels.trim(0);
    rowKernels.invertLower(new Float64Array(512 * 512).fill(1), 512);
    this.base = this.peak = liveExternal();
    this.samples = 0;
    setCoreMark((label) => this.sample(label));
  }
  stop(): void {
    setCoreMark(null);
  }
  sample = (at = 'iteration'): void => {
    this.samples++;
    const live = liveExternal();
    if (live > this.peak) {
      this.peak = live;
      this.peakAt = at;
    }
  };
  bytes(): number {
    return this.peak - this.base;
  }
}

/** Float32 and float64 products in plain JavaScript that sample the tracker on entry (operands alive). */
function trackingBackend(t: PeakTracker): MatrixBackend {
  return {
    name: 'js-tracking',
    matmulF32: (a, b, m, k, n) => {
      t.sample(`float32 product ${m}×${k}·${k}×${n}`);
      const c = new Float64Array(m * n);
      gemmAccumulate(Float64Array.from(a.subarray(0, m * k)), Float64Array.from(b.subarray(0, k * n)), c, m, k, n);
      return Promise.resolve(Float32Array.from(c));
    },
    matmulF64: (a, b, m, k, n) => {
      t.sample(`float64 product ${m}×${k}·${k}×${n}`);
      const c = new Float64Array(m * n);
      gemmAccumulate(a.subarray(0, m * k), b.subarray(0, k * n), c, m, k, n);
      return Promise.resolve(c);
    },
  };
}

const rows = 16;
const cols = 1030;
const unit = cols * cols * 8;
const layer = syntheticLayer(rows, cols, 3, { tokens: 2 * cols });
const sparsity = { kind: 'unstructured', ratio: 0.5 } as const;
const fewIterations = { maxIter: 10, maxIter2: 10 };

test('batched solver: at most 0.85 n×n float64 matrices alive at any product, iteration or trace point (compensateAdmm, 16 × 1030)', async (t) => {
  const hd = dampHessian(layer.hessian, cols, 0.01);
  const scales = symmetricRowScales(layer.weight, rows, cols, 4);
  const mask = pruneMask(wandaScores(layer.weight, rows, cols, layer.channelEnergy), rows, cols, sparsity);
  const p = { weight: layer.weight, rows, cols, hessian: hd, mask, scales, bits: 4, splitCol: cols / 2 };
  const tracker = new PeakTracker();
  tracker.start();
  const r = await compensateAdmm(p, trackingBackend(tracker), { ...DEFAULT_ADMM, ...fewIterations }, undefined, undefined, () => tracker.sample());
  tracker.stop();
  assert.ok(tracker.samples >= 20 + 10, `sampled ${tracker.samples} points`);
  assert.ok(r.stats.iterations[0] >= DEFAULT_ADMM.minIter && r.stats.iterations[1] >= DEFAULT_ADMM.minIter);
  const units = tracker.bytes() / unit;
  t.diagnostic(`peak ${units.toFixed(3)} × n²·8 over ${tracker.samples} sample points, at ${tracker.peakAt}`);
  assert.ok(units <= 0.85, `peak ${units.toFixed(3)} × n²·8 bytes`);
});

test('compressLayer obr-gptq (batched): at most 0.85 n×n float64 matrices beside the caller\'s H at any product, iteration or trace point (16 × 1030)', async (t) => {
  const tracker = new PeakTracker();
  tracker.start();
  const r = await compressLayer(
    { weight: layer.weight, rows, cols, hessian: layer.hessian, channelEnergy: layer.channelEnergy },
    { method: 'obr-gptq', sparsity, wbits: 4, alpha: 0.5, damp: 0.01 },
    { threads: 1, backend: trackingBackend(tracker), solver: 'batched', admm: fewIterations, onSolverIteration: () => tracker.sample(), skipLoss: true },
  );
  tracker.stop();
  assert.ok(tracker.samples >= 20 + 10, `sampled ${tracker.samples} points`);
  assert.ok(r.stats.sparsity >= 0.5);
  const units = tracker.bytes() / unit;
  t.diagnostic(`peak ${units.toFixed(3)} × n²·8 over ${tracker.samples} sample points, at ${tracker.peakAt}`);
  assert.ok(units <= 0.85, `peak ${units.toFixed(3)} × n²·8 bytes`);
});
