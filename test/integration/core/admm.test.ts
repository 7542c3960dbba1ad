// The default (batched ADMM) OBR solver on the onnxruntime backend against the exact per-row
// Cholesky solver (float64), on every layer of the bundled small model and on seeded synthetic
// layers with correlated inputs and outlier input channels (n = 256 … 1024), unstructured 50%
// and 2:4. Two measures:
// - the solver objective: the loss of W_c with its own E2 entries rounded (damped H), which is
//   what both solvers minimize: ≤ 1.001 × exact on every layer;
// - the final layer loss after quantization (undamped H): it also moves with rounding flips
//   (a weight near a rounding midpoint lands on the other code when W_c moves by float32
//   noise), by up to ±0.5% on a single small layer in either direction, as for the exact solver
//   run on a float32-perturbed Hessian. So: ≤ 1.01 × exact per model layer (1.02 on the more
//   ill-conditioned synthetic ones), ≤ 1.001 × exact summed over the model's 28 layers and
//   ≤ 1.005 over the 8 synthetic layer/method pairs. The ratios are printed as test diagnostics.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { compensateAdmm } from '../../../src/core/admm';
import { compressLayer, layerLossBetween } from '../../../src/core/compress';
import { dampHessian } from '../../../src/core/matrix';
import { pruneMask, wandaScores } from '../../../src/core/mask';
import { compensateRowsDirect } from '../../../src/core/obr';
import { symmetricCode, symmetricRowScales } from '../../../src/core/quantize';
import { syntheticLayer } from '../../../src/core/random';
import type { RecipeName, Sparsity } from '../../../src/protocol/recipes';
import { createOrtBackend, type OrtMatrixBackend } from '../../../src/runtime/ortBackend';
import { type ModelLayer, smallModelLayers } from './smallModelLayers';

const UNSTRUCTURED: Sparsity = { kind: 'unstructured', ratio: 0.5 };
const TWO_FOUR: Sparsity = { kind: 'nm', n: 2, m: 4 };

let backend: OrtMatrixBackend;
before(async () => {
  backend = await createOrtBackend({ threads: 2 });
});
test.after(async () => {
  await backend.release();
});

/** Solver objective of batched / exact on one layer (damped H, E2 rounded with each one's own W_c). */
async function objectiveRatio(layer: Pick<ModelLayer, 'weight' | 'rows' | 'cols' | 'hessian' | 'channelEnergy'>, sparsity: Sparsity): Promise<number> {
  const { rows, cols } = layer;
  const hd = dampHessian(layer.hessian, cols, 0.01);
  const scales = symmetricRowScales(layer.weight, rows, cols, 4);
  const mask = pruneMask(wandaScores(layer.weight, rows, cols, layer.channelEnergy), rows, cols, sparsity);
  const k = Math.floor(cols / 2);
  const p = { weight: layer.weight, rows, cols, hessian: hd, mask, scales, bits: 4, splitCol: k };
  const objective = (out: Float64Array): number => {
    const c = out.slice();
    for (let r = 0; r < rows; r++) for (let j = 0; j < k; j++) c[r * cols + j] = symmetricCode(c[r * cols + j], scales[r], 7) * scales[r];
    return layerLossBetween(c, layer.weight, rows, cols, hd);
  };
  const exact = new Float64Array(rows * cols);
  compensateRowsDirect(p, exact);
  const { out } = await compensateAdmm(p, backend);
  for (let i = 0; i < out.length; i++) if (!mask[i]) assert.equal(out[i], 0);
  return objective(out) / objective(exact);
}

/** Final layer losses (undamped H) of the default batched solver and the exact one. */
async function finalLosses(layer: Pick<ModelLayer, 'weight' | 'rows' | 'cols' | 'hessian' | 'channelEnergy'>, method: RecipeName, sparsity: Sparsity): Promise<[number, number]> {
  const problem = { weight: layer.weight, rows: layer.rows, cols: layer.cols, hessian: layer.hessian, channelEnergy: layer.channelEnergy };
  const config = { method, sparsity, wbits: 4, alpha: 0.5, damp: 0.01 };
  const exact = await compressLayer(problem, config, { threads: 1, solver: 'exact', skipLoss: true });
  const batched = await compressLayer(problem, config, { threads: 1, backend, skipLoss: true });
  for (let i = 0; i < batched.weight.length; i++) if (!batched.mask[i]) assert.equal(batched.weight[i], 0);
  const loss = (w: Float64Array): number => layerLossBetween(w, layer.weight, layer.rows, layer.cols, layer.hessian);
  return [loss(batched.weight), loss(exact.weight)];
}

test('batched solver on every layer of the bundled small model (unstructured 50% and 2:4)', async (t) => {
  const layers = await smallModelLayers();
  assert.equal(layers.length, 28);
  for (const [sparsity, method] of [[UNSTRUCTURED, 'obr-gptq'], [TWO_FOUR, 'obr-rtn']] as const) {
    let worstObjective = 0;
    let worstFinal = 0;
    let sumBatched = 0;
    let sumExact = 0;
    for (const layer of layers) {
      const ratio = await objectiveRatio(layer, sparsity);
      assert.ok(ratio <= 1.001, `${layer.name} ${sparsity.kind}: objective ratio ${ratio}`);
      worstObjective = Math.max(worstObjective, ratio);
      const [b, e] = await finalLosses(layer, method, sparsity);
      assert.ok(b <= 1.01 * e, `${layer.name} ${method} ${sparsity.kind}: final loss ratio ${b / e}`);
      worstFinal = Math.max(worstFinal, b / e);
      sumBatched += b;
      sumExact += e;
    }
    assert.ok(sumBatched <= 1.001 * sumExact, `${method} ${sparsity.kind}: summed loss ratio ${sumBatched / sumExact}`);
    t.diagnostic(`${method} ${sparsity.kind}: worst objective ratio ${worstObjective.toFixed(6)}, worst final ratio ${worstFinal.toFixed(5)}, summed ${(sumBatched / sumExact).toFixed(6)}`);
  }
});

test('batched solver on synthetic correlated layers with outlier channels, n = 256 … 1024', async (t) => {
  // [rows, cols, sparsity, outlier channels, compare final losses]. At 128×256 a single layer's
  // final loss swings by a few % with rounding flips (either way), so only its objective is checked.
  const cases: Array<[number, number, Sparsity, number, boolean]> = [
    [128, 256, UNSTRUCTURED, 0, false],
    [128, 256, TWO_FOUR, 4, false],
    [256, 512, UNSTRUCTURED, 6, true],
    [256, 512, TWO_FOUR, 0, true],
    [256, 1024, UNSTRUCTURED, 8, true],
    [256, 1024, TWO_FOUR, 8, true],
  ];
  let worstObjective = 0;
  let worstFinal = 0;
  let sumBatched = 0;
  let sumExact = 0;
  for (const [rows, cols, sparsity, outliers, final] of cases) {
    const L = syntheticLayer(rows, cols, 100 + cols + outliers, { tokens: 2 * cols, outlierChannels: outliers });
    const layer = { weight: L.weight, rows, cols, hessian: L.hessian, channelEnergy: L.channelEnergy };
    const ratio = await objectiveRatio(layer, sparsity);
    assert.ok(ratio <= 1.001, `${rows}×${cols} ${sparsity.kind} outliers ${outliers}: objective ratio ${ratio}`);
    worstObjective = Math.max(worstObjective, ratio);
    if (!final) continue;
    for (const method of ['obr-gptq', 'obr-rtn'] as const) {
      const [b, e] = await finalLosses(layer, method, sparsity);
      assert.ok(b <= 1.02 * e, `${rows}×${cols} ${method} ${sparsity.kind}: final loss ratio ${b / e}`);
      t.diagnostic(`${rows}×${cols} ${method} ${sparsity.kind} outliers ${outliers}: objective ${ratio.toFixed(6)}, final ${(b / e).toFixed(5)}`);
      worstFinal = Math.max(worstFinal, b / e);
      sumBatched += b;
      sumExact += e;
    }
  }
  // Eight layers, each with ±0.3–0.5% of rounding-flip noise: the sum is held to 0.5% here (the
  // model's 28 layers above to 0.1%).
  assert.ok(sumBatched <= 1.005 * sumExact, `summed loss ratio ${sumBatched / sumExact}`);
  t.diagnostic(`worst objective ratio ${worstObjective.toFixed(6)}, worst final ratio ${worstFinal.toFixed(5)}, summed ${(sumBatched / sumExact).toFixed(6)}`);
});
