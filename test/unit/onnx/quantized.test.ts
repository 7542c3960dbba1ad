// Already-quantized models are refused with what they hold and what to compress instead.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { floatTensor, intAttr, model, node, valueInfo } from '../../../src/onnx/builder';
import { ModelFormatError } from '../../../src/onnx/errors';
import { findLinearLayers } from '../../../src/onnx/linear';
import { DataType, encodeModel, type ModelProto, type TensorProto } from '../../../src/onnx/proto';
import { quantizedWeightOps, refuseQuantized } from '../../../src/onnx/quantized';
import { estimateCompression } from '../../../src/pipeline/preflight';
import { DEFAULT_OPTIONS } from '../../../src/protocol/recipes';
import { buildLlamaGraph } from './llamaGraph';

function uint8(name: string, dims: number[]): TensorProto {
  const n = dims.reduce((a, b) => a * b, 1);
  return { name, dims, dataType: DataType.UINT8, rawData: new Uint8Array(n).fill(0x88) };
}

function int8(name: string, dims: number[]): TensorProto {
  const n = dims.reduce((a, b) => a * b, 1);
  return { name, dims, dataType: DataType.INT8, rawData: new Uint8Array(n).fill(3) };
}

/** x [1, 8] → `blocks` MatMulNBits (8→8, 4-bit, block 8) in a row → optional dense head. */
function nbitsChain(blocks: number, head: boolean): ModelProto {
  const nodes = [];
  const inits: TensorProto[] = [];
  let x = 'x';
  for (let i = 0; i < blocks; i++) {
    inits.push(uint8(`w${i}`, [8, 1, 4]), floatTensor(`s${i}`, [8], new Float32Array(8).fill(0.1)));
    nodes.push(node('MatMulNBits', [x, `w${i}`, `s${i}`], [`h${i}`], `/layers.${i}/MatMulNBits`, [intAttr('K', 8), intAttr('N', 8), intAttr('bits', 4), intAttr('block_size', 8)], 'com.microsoft'));
    x = `h${i}`;
  }
  if (head) {
    inits.push(floatTensor('lm_head.weight', [8, 4], new Float32Array(32).fill(0.5)));
    nodes.push(node('MatMul', [x, 'lm_head.weight'], ['logits'], '/lm_head/MatMul'));
  } else nodes.push(node('Identity', [x], ['logits'], 'out'));
  return model({ name: 'nbits', node: nodes, initializer: inits, input: [valueInfo('x', DataType.FLOAT, [1, 8])], output: [valueInfo('logits', DataType.FLOAT, [1, head ? 4 : 8])] }, 17, [{ domain: 'com.microsoft', version: 1 }]);
}

test('MatMulNBits models: counted and refused, also when no float MatMul is left', () => {
  assert.deepEqual([...quantizedWeightOps(nbitsChain(3, true))], [['MatMulNBits', 3]]);
  assert.throws(() => refuseQuantized(nbitsChain(3, true)), (e: unknown) => {
    assert.ok(e instanceof ModelFormatError);
    assert.equal(e.code, 'already-quantized');
    assert.equal(e.message, 'this model is already quantized (3 MatMulNBits nodes); compress its fp16/fp32 export');
    return true;
  });
  // Without a dense head there are no linear layers at all: the reason is the quantization.
  assert.throws(() => findLinearLayers(nbitsChain(1, false)), /already quantized \(1 MatMulNBits node\)/);
  // A float model is not refused.
  assert.doesNotThrow(() => refuseQuantized(buildLlamaGraph({ layers: 1 })));
});

test('QDQ weights and GatherBlockQuantized are counted; run-time DequantizeLinear is not', () => {
  const m = model({
    name: 'qdq',
    node: [
      node('GatherBlockQuantized', ['emb.q', 'ids', 'emb.s'], ['e'], 'embed', [intAttr('block_size', 16)], 'com.microsoft'),
      node('DequantizeLinear', ['w.q', 'w.s'], ['w'], 'dq_w', [intAttr('axis', 1)]),
      node('MatMul', ['e', 'w'], ['y'], 'proj'),
      // activation QDQ: quantize then dequantize a run-time tensor
      node('QuantizeLinear', ['y', 'a.s'], ['yq'], 'q_y'),
      node('DequantizeLinear', ['yq', 'a.s'], ['logits'], 'dq_y'),
    ],
    initializer: [uint8('emb.q', [16, 4]), floatTensor('emb.s', [16, 1], new Float32Array(16).fill(1)), int8('w.q', [8, 8]), floatTensor('w.s', [8], new Float32Array(8).fill(0.1)), floatTensor('a.s', [], [0.05])],
    input: [valueInfo('ids', DataType.INT64, [1, 4])],
    output: [valueInfo('logits', DataType.FLOAT, [1, 4, 8])],
  });
  assert.deepEqual(Object.fromEntries(quantizedWeightOps(m)), { GatherBlockQuantized: 1, DequantizeLinear: 1 });
  assert.throws(() => refuseQuantized(m), /this model is already quantized \(1 GatherBlockQuantized node, 1 DequantizeLinear weight\); compress its fp16\/fp32 export/);
});

test('the pre-flight of a compression refuses a quantized model file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'obr-quantized-'));
  try {
    const file = join(dir, 'model.onnx');
    await writeFile(file, encodeModel(nbitsChain(2, true)));
    await assert.rejects(estimateCompression(file, DEFAULT_OPTIONS), /already quantized \(2 MatMulNBits nodes\)/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
