import assert from 'node:assert/strict';
import { test } from 'node:test';
import { matchLayer, mergeVariants, presentNameOf } from '../../../src/pipeline/bench/runtime';
import { SPARSITY_NOTE } from '../../../src/pipeline/bench/runtime';
import type { LinearLayer } from '../../../src/onnx/types';
import { sampleResult } from './fixture';

test('mergeVariants concatenates the samples of two rounds and recomputes the rates', () => {
  const a = sampleResult().runtime!.dense;
  const b = { ...a, prefillMs: { ...a.prefillMs, samples: [40, 40, 40], median: 40 }, memory: { ...a.memory, peakRssBytes: 4e8 } };
  const m = mergeVariants(a, b, 16);
  assert.equal(m.prefillMs.n, 6);
  assert.deepEqual(m.prefillMs.samples, [18, 20, 22, 40, 40, 40]);
  assert.equal(m.prefillMs.median, 31);
  assert.equal(m.prefillTokensPerSecond, Number(((16 / 31) * 1000).toPrecision(6)));
  assert.equal(m.memory.peakRssBytes, 4e8);
  assert.equal(m.decodeMsPerToken!.n, 6);
});

test('layers of the cache model match the compressed model by weight name, else by block and role', () => {
  const layer = (name: string, weightName: string, block: number | null, role: LinearLayer['role']): LinearLayer => ({
    name, nodeName: name, opType: 'MatMul', weightName, orientation: 'in-out', dtype: 'float32', inFeatures: 4, outFeatures: 4, inputName: 'x', block, role,
  });
  const compressed = [layer('/a/q', 'w.q.0', 0, 'q'), layer('/a/k', 'onnx::MatMul_7', 0, 'k')];
  assert.equal(matchLayer(layer('/b/q', 'w.q.0', 0, 'q'), compressed)?.name, '/a/q');
  assert.equal(matchLayer(layer('/b/k', 'onnx::MatMul_99', 0, 'k'), compressed)?.name, '/a/k');
  assert.equal(matchLayer(layer('/b/v', 'w.v.0', 0, 'v'), compressed), undefined);
  assert.equal(matchLayer(layer('/b/o', 'w.o.0', null, 'other'), compressed), undefined);
  assert.equal(presentNameOf('past_key_values.1.key'), 'present.1.key');
  assert.match(SPARSITY_NOTE, /dense/);
});
