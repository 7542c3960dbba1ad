import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseBenchArgs } from '../../../src/cli/commands/bench';
import { presentNameOf } from '../../../src/pipeline/bench/runtime';
import { resolveBenchSpec } from '../../../src/pipeline/bench/spec';

const tiny = 'test/fixtures/models/tiny/model.onnx';

test('obr bench flags become a spec; unknown suites and recipes are usage errors', () => {
  const s = parseBenchArgs([tiny, '--suite', 'quality,runtime', '--recipes', 'obr-gptq,rtn', '--wbits', '4,3', '--reps', '2', '--warmup', '0', '--ep', 'cpu', '--out', '/tmp/x', '--json']);
  assert.deepEqual(s.suites, ['quality', 'runtime']);
  assert.deepEqual(s.recipes, ['obr-gptq', 'rtn']);
  assert.deepEqual(s.wbits, [4, 3]);
  assert.equal(s.reps, 2);
  assert.equal(s.warmup, 0);
  assert.equal(s.json, true);
  assert.throws(() => parseBenchArgs([tiny, '--suite', 'fast']), /unknown suite/);
  assert.throws(() => parseBenchArgs([tiny, '--recipes', 'magic']), /unknown recipe/);
  assert.throws(() => parseBenchArgs([tiny, '--abits', '12']), /16 to disable/);
  // The weight grid: groups and zero points for every compression of the run.
  const g = parseBenchArgs([tiny, '--group-size', '64', '--asym']);
  assert.equal(g.groupSize, 64);
  assert.equal(g.asymmetric, true);
  assert.equal(parseBenchArgs([tiny]).groupSize, undefined);
  assert.throws(() => parseBenchArgs([tiny, '--group-size', '100']), /--group-size: group size 100: use one of 0, 32, 64, 128, 256/);
});

test('resolveBenchSpec fills defaults and finds model_with_past.onnx beside the model', () => {
  const s = resolveBenchSpec({ modelPath: tiny });
  assert.ok(s.pastModelPath?.endsWith('model_with_past.onnx'));
  assert.deepEqual(s.suites, ['quality', 'speed', 'runtime', 'core']);
  assert.throws(() => resolveBenchSpec({ modelPath: tiny, reps: 0 }), /reps/);
  assert.throws(() => resolveBenchSpec({ modelPath: 'nope.onnx' }), /not found/);
});

test('past input → present output names', () => {
  assert.equal(presentNameOf('past_key_values.3.value'), 'present.3.value');
  assert.equal(presentNameOf('past.0.key'), 'present.0.key');
});
