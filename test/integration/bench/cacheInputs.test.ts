// `obr bench --suite runtime` on models that take their own KV cache — an Optimum merged decoder
// (use_cache_branch picks the with-past branch) and onnxruntime-genai's export (past_key_values.*
// inputs, fp16): decode speed and the cache check are measured for the dense model and for the
// packed output, which keeps the source's interface.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { runBenchmarks } from '../../../src/pipeline/bench/run';
import { writeTinyMerged } from '../../unit/onnx/mergedDecoder';
import { tempDir } from '../pipeline/fixtures';

/** The runtime suite at W4 weight-only, 8 prompt + 4 decoded tokens, on CPU. */
function runtimeSuite(modelPath: string, outDir: string) {
  return runBenchmarks({
    modelPath,
    suites: ['runtime'],
    abits: 16,
    kvbits: 16,
    samples: 4,
    seqlen: 32,
    evalWindows: 2,
    reps: 1,
    warmup: 0,
    promptTokens: 8,
    decodeTokens: 4,
    executionProviders: ['cpu'],
    outDir,
  });
}

test('runtime suite on a merged decoder: decode with the cache for dense and packed, cached = uncached logits', { timeout: 600_000 }, async (t) => {
  const dir = tempDir('obr-bench-merged-');
  t.after(() => rm(dir, { recursive: true, force: true }));
  const model = await writeTinyMerged(path.join(dir, 'm'), { optimumFolder: true });
  const result = await runtimeSuite(model, path.join(dir, 'out'));
  const runtime = result.runtime!;
  assert.equal(runtime.dense.pastModelPath, model, 'the merged model is its own KV-cache model');
  for (const v of [runtime.dense, runtime.packed!]) {
    assert.ok(v.decodeMsPerToken && v.decodeMsPerToken.median > 0, `${v.label}: decode measured`);
    assert.equal(v.decodeCheck?.generated, 4);
    assert.equal(v.decodeCheck?.finalPastLength, 12);
    assert.ok(v.cacheConsistencyMaxAbs !== undefined && v.cacheConsistencyMaxAbs < 1e-3, `${v.label}: cached vs full-sequence logits ${v.cacheConsistencyMaxAbs}`);
  }
  assert.equal(runtime.packed!.pastModelPath, runtime.packed!.modelPath, 'the packed merged model decodes with its own cache');
  assert.ok(!result.warnings.some((w) => /no KV-cache model/.test(w)), result.warnings.join('; '));
});

const GENAI = path.resolve(__dirname, '..', '..', '..', '..', 'shared', 'data', 'external-models', 'ortgenai-llama-fp16', 'model.onnx');

test('runtime suite on the onnxruntime-genai fp16 export (past_key_values.* inputs): decode with its own cache', { timeout: 600_000, skip: !existsSync(GENAI) && 'needs ../shared/data/external-models' }, async (t) => {
  const dir = tempDir('obr-bench-genai-');
  t.after(() => rm(dir, { recursive: true, force: true }));
  const result = await runtimeSuite(GENAI, dir);
  const runtime = result.runtime!;
  assert.equal(runtime.dense.pastModelPath, GENAI);
  for (const v of [runtime.dense, runtime.packed!]) {
    assert.ok(v.decodeMsPerToken && v.decodeMsPerToken.median > 0, `${v.label}: decode measured`);
    assert.equal(v.decodeCheck?.generated, 4);
    // fp16 logits (read as numbers, not raw 16-bit patterns): cached and full runs agree to fp16 rounding.
    assert.ok(v.cacheConsistencyMaxAbs !== undefined && v.cacheConsistencyMaxAbs < 4e-3, `${v.label}: cached vs full-sequence logits ${v.cacheConsistencyMaxAbs}`);
  }
});
