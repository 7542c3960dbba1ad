// The pre-flight memory estimate (src/pipeline/memoryEstimate.ts): bounded by one block and one
// layer, not by the model; each term as the formula states. The comparison with a measured peak
// RSS is in test/integration/pipeline/memory.test.ts and the memory benchmark.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { coreBytes, estimateMemory, FIXED_BYTES, type MemoryInputs } from '../../../src/pipeline/memoryEstimate';

/** The 2.1 GiB benchmark model's block (hidden 2048, FF 5632, float32) repeated `blocks` times. */
function llama(blocks: number, recipes: MemoryInputs['recipes'] = ['rtn']): MemoryInputs {
  const h = 2048;
  const f = 5632;
  const block = [
    { rows: h, cols: h, inputName: 'x' }, { rows: h, cols: h, inputName: 'x' }, { rows: h, cols: h, inputName: 'x' },
    { rows: h, cols: h, inputName: 'a' },
    { rows: f, cols: h, inputName: 'y' }, { rows: f, cols: h, inputName: 'y' },
    { rows: h, cols: f, inputName: 'z' },
  ];
  return {
    recipes,
    layers: Array.from({ length: blocks }, () => block).flat(),
    captureGroups: Array.from({ length: blocks }, () => [[h], [h], [h], [f]]).flat(),
    blockBytes: (4 * h * h + 3 * h * f) * 4,
    outsideBytes: 2048 * h * 4,
    graphBytes: 17e6,
    batch: 4,
    seqlen: 64,
    samples: 4,
    hidden: h,
    intermediate: f,
    vocab: 2048,
    activationBudgetBytes: 2 ** 31,
  };
}

test('the memory estimate does not grow with the number of blocks', () => {
  const a = estimateMemory(llama(11));
  const b = estimateMemory(llama(44));
  assert.equal(a.peakBytes, b.peakBytes);
});

test('the peak is the fixed part + the largest phase; rtn never pays for a damped Hessian, OBR pays for the solver', () => {
  const x = llama(11);
  const e = estimateMemory(x);
  const t = e.terms;
  assert.equal(t.fixed, FIXED_BYTES);
  assert.equal(e.peakBytes, Math.round(t.fixed + t.graph + t.activations + Math.max(t.capture, t.compress, t.evaluate)));
  assert.equal(e.phase, 'compress', 'the 2048×5632 down projection in the core sets the peak');
  // down: 5632² float64 Hessian + the core's copies of the 2048×5632 weight
  assert.equal(t.compress, 5632 * 5632 * 8 + coreBytes('rtn', 2048, 5632));
  assert.equal(coreBytes('rtn', 2048, 5632), 2048 * 5632 * (6 * 8 + 2));
  // The batched solver at 2048 × 5632 (α = ½): step 1 (the float32 inverse, B, one block of 512
  // rows' T, product and state — four blocks under 256 MiB) is its peak; the factorization (one
  // packed triangle and a block step's operands) is below it.
  const step1 = 5632 * 5632 * 4 + 2048 * 5632 * 4 + 12 * 512 * 5632 + 80 * 512 * 5632;
  assert.equal(coreBytes('obr-gptq', 2048, 5632) - coreBytes('rtn', 2048, 5632), step1, 'step 1');
  assert.ok(5 * 5632 * 5632 + 6144 * 5632 < step1);
  assert.equal(coreBytes('obr-gptq', 4096, 2048) - coreBytes('rtn', 4096, 2048), 2048 * 2048 * 4 + 4096 * 2048 * 4 + 12 * 1366 * 2048 + 80 * 1366 * 2048, 'step 1 with three blocks of 1366 rows (1638 fit in 256 MiB)');
  // 64 × 5632: few rows, so the factorization's moment (the packed triangle and a block step's
  // operands) is the peak: before src/core/spdInverse.ts, L in the kernels' memory and its copy (2·n²·8).
  assert.equal(coreBytes('obr-rtn', 64, 5632) - coreBytes('rtn', 64, 5632), 5 * 5632 * 5632 + 6144 * 5632, 'the factorization');
  // α = 0: no step 2, and obr-gptq's tail covers every column: its factor of the whole H (5·n²·8).
  assert.equal(coreBytes('obr-gptq', 64, 5632, 0) - coreBytes('rtn', 64, 5632), 5 * 5632 * 5632 * 8 + 10 * 64 * 5632, 'the tail at α = 0');
  assert.equal(coreBytes('obr-rtn', 64, 5632, 0), coreBytes('obr-rtn', 64, 5632), 'obr-rtn has no tail');
  // Below the cap: 80 B per entry of the whole layer.
  assert.equal(coreBytes('obr-rtn', 64, 64) - coreBytes('rtn', 64, 64), 64 * 64 * 4 + 64 * 64 * 4 + 12 * 64 * 64 + 80 * 64 * 64, 'below the cap: 80 B per entry');
  // The estimate before issue #12's solver rework (five n×n float64 matrices, 512 MiB of state):
  // 1.6 GB more at this layer.
  const before = 5 * 5632 * 5632 * 8 + 4 * 2048 * 5632 * 8 + 512 * 2 ** 20;
  assert.ok(before - (coreBytes('obr-gptq', 2048, 5632) - coreBytes('rtn', 2048, 5632)) > 1.6e9);
  assert.ok(estimateMemory(llama(11, ['obr-gptq'])).peakBytes > e.peakBytes);
  // A baseline recipe adds its float32 copy of the layer and its own core needs.
  const withBaseline = estimateMemory(llama(11, ['rtn', 'gptq']));
  assert.equal(withBaseline.terms.compress, 5632 * 5632 * 8 + coreBytes('gptq', 2048, 5632) + 2048 * 5632 * 4);
});

test('capture: one block\'s weights plus the captured inputs\' sums; a model of huge blocks is capture-bound', () => {
  const x = { ...llama(2), blockBytes: 8e9 };
  const e = estimateMemory(x);
  assert.equal(e.phase, 'capture');
  assert.equal(e.terms.capture, 8e9 + 5632 * 5632 * 16);
});
