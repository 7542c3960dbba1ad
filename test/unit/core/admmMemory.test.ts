// How much memory the batched OBR solver holds at once, in units of one n×n float64 matrix
// (n²·8 bytes: 254 MB for a 5632-column down_proj), on a moderate layer (16 × 1030: two levels
// of the blocked triangular inverse, 1030 = 512 + 518 and 518 = 256 + 262). Measured, not
// self-reported: at every backend product and every solver iteration (the points where the
// solver waits with its buffers alive) the test forces two full garbage collections and reads
// the process's external memory (every ArrayBuffer, SharedArrayBuffer and WebAssembly memory),
// minus what was live before the call. The caller's H is in the baseline. The kernels' instance
// is warmed to the leaf inverse's size first (a few MiB, the same at any n), so what is left is
// the solver's own n×n buffers plus its rows×n arrays (16 rows: < 0.2 units together).
// Before issue #12's rework the solver held its scaled H, the factor, the blocked inverse's copies
// and L⁻¹ at once (3.3 units here) and compressLayer a damped H beside it (4.2 units); now H̃ is
// read from the caller's H and L⁻¹ is made in L's place: L plus the last off-diagonal product's
// two operands, 1.5 units (measured 1.53 in both tests; bound 1.75).
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
  start(): void {
    // A fresh kernels instance grown to the leaf inverse's size (512 × 512), counted in the baseline.
    rowKernels.trim(0);
    rowKernels.invertLower(new Float64Array(512 * 512).fill(1), 512);
    this.base = this.peak = liveExternal();
    this.samples = 0;
  }
  sample = (): void => {
    this.samples++;
    this.peak = Math.max(this.peak, liveExternal());
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
      t.sample();
      const c = new Float64Array(m * n);
      gemmAccumulate(Float64Array.from(a.subarray(0, m * k)), Float64Array.from(b.subarray(0, k * n)), c, m, k, n);
      return Promise.resolve(Float32Array.from(c));
    },
    matmulF64: (a, b, m, k, n) => {
      t.sample();
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

test('batched solver: at most 1.75 n×n float64 matrices alive at any product or iteration (compensateAdmm, 16 × 1030)', async (t) => {
  const hd = dampHessian(layer.hessian, cols, 0.01);
  const scales = symmetricRowScales(layer.weight, rows, cols, 4);
  const mask = pruneMask(wandaScores(layer.weight, rows, cols, layer.channelEnergy), rows, cols, sparsity);
  const p = { weight: layer.weight, rows, cols, hessian: hd, mask, scales, bits: 4, splitCol: cols / 2 };
  const tracker = new PeakTracker();
  tracker.start();
  const r = await compensateAdmm(p, trackingBackend(tracker), { ...DEFAULT_ADMM, ...fewIterations }, undefined, undefined, tracker.sample);
  assert.ok(tracker.samples >= 20 + 4, `sampled ${tracker.samples} points`);
  assert.ok(r.stats.iterations[0] >= DEFAULT_ADMM.minIter && r.stats.iterations[1] >= DEFAULT_ADMM.minIter);
  const units = tracker.bytes() / unit;
  t.diagnostic(`peak ${units.toFixed(3)} × n²·8 over ${tracker.samples} sample points`);
  assert.ok(units <= 1.75, `peak ${units.toFixed(3)} × n²·8 bytes`);
});

test('compressLayer obr-gptq (batched): at most 1.75 n×n float64 matrices beside the caller\'s H at any product or iteration (16 × 1030)', async (t) => {
  const tracker = new PeakTracker();
  tracker.start();
  const r = await compressLayer(
    { weight: layer.weight, rows, cols, hessian: layer.hessian, channelEnergy: layer.channelEnergy },
    { method: 'obr-gptq', sparsity, wbits: 4, alpha: 0.5, damp: 0.01 },
    { threads: 1, backend: trackingBackend(tracker), solver: 'batched', admm: fewIterations, onSolverIteration: tracker.sample, skipLoss: true },
  );
  assert.ok(tracker.samples >= 20 + 4, `sampled ${tracker.samples} points`);
  assert.ok(r.stats.sparsity >= 0.5);
  const units = tracker.bytes() / unit;
  t.diagnostic(`peak ${units.toFixed(3)} × n²·8 over ${tracker.samples} sample points`);
  assert.ok(units <= 1.75, `peak ${units.toFixed(3)} × n²·8 bytes`);
});
