import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findLinearLayers, groupLayersByInput } from '../../../src/onnx/linear';
import { floatTensor, intAttr, model, node, valueInfo } from '../../../src/onnx/builder';
import { DataType } from '../../../src/onnx/proto';
import { wrapModel } from '../../../src/onnx/load';
import { readLayerWeight } from '../../../src/onnx/weights';
import { buildLlamaGraph } from './llamaGraph';

const ROLES = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

for (const variant of [
  { label: 'fp32 [in,out]', opts: {} },
  { label: 'fp16 behind Cast, stored [out,in] behind Transpose', opts: { weightType: 'float16' as const, transposedWeights: true } },
  { label: 'bf16 behind Cast', opts: { weightType: 'bfloat16' as const } },
]) {
  test(`LLaMA graph (${variant.label}): roles and blocks from topology`, () => {
    const layers = findLinearLayers(buildLlamaGraph({ layers: 3, ...variant.opts }));
    assert.equal(layers.length, 3 * 7 + 1);
    for (let b = 0; b < 3; b++) {
      const inBlock = layers.filter((l) => l.block === b);
      assert.deepEqual(inBlock.map((l) => l.role), ROLES);
      for (const l of inBlock) {
        assert.ok(l.nodeName.includes(`layers.${b}/`) && l.nodeName.includes(`${l.role}_proj`), l.nodeName);
        assert.equal(l.roleSource, 'topology');
      }
    }
    const head = layers[layers.length - 1];
    assert.equal(head.role, 'lm_head');
    assert.equal(head.block, null);
    const t = variant.opts.transposedWeights === true;
    assert.ok(layers.every((l) => l.orientation === (t ? 'out-in' : 'in-out')));
    const down = layers.find((l) => l.role === 'down')!;
    assert.deepEqual([down.inFeatures, down.outFeatures], [24, 16]);
    assert.equal(down.dtype, variant.opts.weightType ?? 'float32');
    // q,k,v share one input; gate,up share one: 4 groups per block + lm_head.
    const groups = groupLayersByInput(layers);
    assert.equal(groups.length, 3 * 4 + 1);
    assert.equal(groups[0].layers.length, 3);
    assert.equal(groups[2].layers.length, 2);
  });
}

test('readLayerWeight gives W [out,in] whatever the storage orientation', async () => {
  const a = buildLlamaGraph({ layers: 1, seed: 3 });
  const b = buildLlamaGraph({ layers: 1, seed: 3, transposedWeights: true });
  const la = findLinearLayers(a);
  const lb = findLinearLayers(b);
  const wa = await readLayerWeight(wrapModel(a), la.find((l) => l.role === 'gate')!);
  const wb = await readLayerWeight(wrapModel(b), lb.find((l) => l.role === 'gate')!);
  assert.equal(wa.length, 24 * 16);
  assert.deepEqual(Array.from(wa), Array.from(wb));
  // Row r of W (output channel r) = column r of the stored [in,out] matrix.
  const stored = await wrapModel(a).readWeight('model.layers.0.mlp.gate_proj.weight');
  assert.equal(wa[1 * 16 + 2], stored[2 * 24 + 1]);
});

test('Gemm with transB=1 (torch Linear export), tied embedding, non-gated GELU MLP', () => {
  const H = 4;
  const m = model({
    name: 'g',
    node: [
      node('Gather', ['emb', 'ids'], ['h'], 'embed'),
      node('ReduceMean', ['h'], ['mu'], 'ln/ReduceMean', [{ name: 'axes', type: 7, ints: [-1] }]),
      node('Sub', ['h', 'mu'], ['hn'], 'ln/Sub'),
      node('Gemm', ['hn', 'fc1.weight', 'fc1.bias'], ['a'], 'fc1', [intAttr('transB', 1)]),
      node('Gelu', ['a'], ['g'], 'act', [], 'com.microsoft'),
      node('Gemm', ['g', 'fc2.weight'], ['d'], 'fc2', [intAttr('transB', 1)]),
      node('Add', ['h', 'd'], ['h2'], 'residual'),
      node('Transpose', ['emb'], ['embT'], 'tie'),
      node('MatMul', ['h2', 'embT'], ['logits'], 'head'),
    ],
    initializer: [
      floatTensor('emb', [10, H], new Float32Array(10 * H).fill(0.1)),
      floatTensor('fc1.weight', [8, H], new Float32Array(8 * H).fill(0.2)),
      floatTensor('fc1.bias', [8], new Float32Array(8)),
      floatTensor('fc2.weight', [H, 8], new Float32Array(8 * H).fill(0.3)),
    ],
    input: [valueInfo('ids', DataType.INT64, ['n'])],
    output: [valueInfo('logits', DataType.FLOAT, ['n', 10])],
  }, 17, [{ domain: 'com.microsoft', version: 1 }]);
  const layers = findLinearLayers(m);
  const byName = Object.fromEntries(layers.map((l) => [l.name, l]));
  assert.deepEqual([byName.fc1.inFeatures, byName.fc1.outFeatures, byName.fc1.orientation], [H, 8, 'out-in']);
  assert.equal(byName.fc1.biasName, 'fc1.bias');
  assert.equal(byName.fc1.role, 'up');
  assert.equal(byName.fc2.role, 'down');
  assert.equal(byName.head.role, 'lm_head');
  assert.equal(byName.head.orientation, 'out-in');
  assert.equal(byName.head.weightShared, true);
  assert.equal(byName.fc1.block, 0);
});

test('DequantizeLinear weights: dtype from the scale, stored int8, dequantized on read', async () => {
  const q = new Int8Array([1, -2, 3, -4, 5, -6]);
  const m = model({
    name: 'g',
    node: [
      node('DequantizeLinear', ['wq', 'ws', 'wz'], ['w'], 'dq', [intAttr('axis', 1)]),
      node('MatMul', ['x', 'w'], ['y'], 'mm'),
    ],
    initializer: [
      { name: 'wq', dims: [2, 3], dataType: DataType.INT8, rawData: new Uint8Array(q.buffer) },
      floatTensor('ws', [3], [0.5, 1, 2]),
      { name: 'wz', dims: [3], dataType: DataType.INT8, rawData: new Uint8Array([0, 1, 0]) },
    ],
    input: [valueInfo('x', DataType.FLOAT, ['n', 2])],
    output: [valueInfo('y', DataType.FLOAT, ['n', 3])],
  });
  const [l] = findLinearLayers(m);
  assert.equal(l.dtype, 'float32');
  assert.equal(l.storedDtype, 'int8');
  assert.deepEqual(l.weightPath, ['DequantizeLinear']);
  const w = await readLayerWeight(wrapModel(m), l); // [out=3, in=2]
  // stored [in,out]: [[1,-2,3],[-4,5,-6]] → deq per column j: (q - z_j) * s_j
  assert.deepEqual(Array.from(w), [0.5, -2, -3, 4, 6, -12]);
});

test('MatMul between two activations (attention) and MatMul with a graph-input weight are not layers', () => {
  const m = model({
    name: 'g',
    node: [node('MatMul', ['x', 'w'], ['y'], 'mm'), node('MatMul', ['y', 'w2'], ['z'], 'mm2')],
    initializer: [floatTensor('w2', [3, 3], new Float32Array(9))],
    input: [valueInfo('x', DataType.FLOAT, ['n', 2]), valueInfo('w', DataType.FLOAT, [2, 3])],
    output: [valueInfo('z', DataType.FLOAT, ['n', 3])],
  });
  const layers = findLinearLayers(m);
  assert.deepEqual(layers.map((l) => l.name), ['mm2']);
});

test('fused qkv projection (Split) and GQA-style Expand: o/down found, qkv kept in its block', () => {
  const H = 8;
  const w = (name: string, r: number, c: number) => floatTensor(name, [r, c], new Float32Array(r * c).fill(0.01));
  const nodes = [node('Gather', ['emb', 'ids'], ['h0'], 'embed')];
  const inits = [w('emb', 16, H), w('lm_head.weight', H, 16), floatTensor('split', [], [0])];
  let h = 'h0';
  for (let b = 0; b < 2; b++) {
    const p = `/layers.${b}`;
    inits.push(w(`l${b}.qkv_proj.weight`, H, 3 * H), w(`l${b}.o.weight`, H, H), w(`l${b}.fc_a.weight`, H, 2 * H), w(`l${b}.fc_b.weight`, 2 * H, H));
    nodes.push(
      node('ReduceMean', [h], [`${p}/mu`], `${p}/ln/ReduceMean`, [{ name: 'axes', type: 7, ints: [-1] }]),
      node('Sub', [h, `${p}/mu`], [`${p}/n1`], `${p}/ln/Sub`),
      node('MatMul', [`${p}/n1`, `l${b}.qkv_proj.weight`], [`${p}/qkv`], `${p}/attn/qkv/MatMul`),
      node('Split', [`${p}/qkv`], [`${p}/q`, `${p}/k`, `${p}/v`], `${p}/attn/Split`, [{ name: 'axis', type: 2, i: -1 }]),
      node('Transpose', [`${p}/k`], [`${p}/kT`], `${p}/attn/T`, [{ name: 'perm', type: 7, ints: [1, 0] }]),
      node('MatMul', [`${p}/q`, `${p}/kT`], [`${p}/s`], `${p}/attn/scores`),
      node('Softmax', [`${p}/s`], [`${p}/pr`], `${p}/attn/Softmax`, [{ name: 'axis', type: 2, i: -1 }]),
      node('Identity', [`${p}/v`], [`${p}/vx`], `${p}/attn/ExpandKV`),
      node('MatMul', [`${p}/pr`, `${p}/vx`], [`${p}/ctx`], `${p}/attn/ctx`),
      node('MatMul', [`${p}/ctx`, `l${b}.o.weight`], [`${p}/o`], `${p}/attn/out/MatMul`),
      node('Add', [h, `${p}/o`], [`${p}/h1`], `${p}/Add`),
      node('ReduceMean', [`${p}/h1`], [`${p}/mu2`], `${p}/ln2/ReduceMean`, [{ name: 'axes', type: 7, ints: [-1] }]),
      node('Sub', [`${p}/h1`, `${p}/mu2`], [`${p}/n2`], `${p}/ln2/Sub`),
      node('MatMul', [`${p}/n2`, `l${b}.fc_a.weight`], [`${p}/a`], `${p}/mlp/a/MatMul`),
      node('Relu', [`${p}/a`], [`${p}/r`], `${p}/mlp/Relu`),
      node('MatMul', [`${p}/r`, `l${b}.fc_b.weight`], [`${p}/d`], `${p}/mlp/b/MatMul`),
      node('Add', [`${p}/h1`, `${p}/d`], [`${p}/h2`], `${p}/Add_1`),
    );
    h = `${p}/h2`;
  }
  nodes.push(node('MatMul', [h, 'lm_head.weight'], ['logits'], 'head'));
  const m = model({
    name: 'g',
    node: nodes,
    initializer: inits,
    input: [valueInfo('ids', DataType.INT64, ['n'])],
    output: [valueInfo('logits', DataType.FLOAT, ['n', 16])],
  });
  const layers = findLinearLayers(m);
  assert.deepEqual(layers.map((l) => [l.role, l.block]), [
    ['qkv', 0], ['o', 0], ['up', 0], ['down', 0],
    ['qkv', 1], ['o', 1], ['up', 1], ['down', 1],
    ['lm_head', null],
  ]);
});
