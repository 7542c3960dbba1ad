import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../../src/onnx/load';
import { DataType, encodeModel } from '../../../src/onnx/proto';
import { floatTensor, model, node, valueInfo } from '../../../src/onnx/builder';
import { encodeFloats } from '../../../src/onnx/tensor';

function matmulModel(inits: Parameters<typeof model>[0]['initializer']) {
  return model({
    name: 'g',
    node: [node('MatMul', ['x', 'w'], ['y'], 'mm')],
    initializer: inits,
    input: [valueInfo('x', DataType.FLOAT, ['n', 2])],
    output: [valueInfo('y', DataType.FLOAT, ['n', 3])],
  });
}

test('reads raw_data fp32, fp16, bf16 and typed-field weights', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'obr-load-'));
  try {
    const values = [1, -2, 0.5, 4, -0.25, 3];
    const m = matmulModel([
      floatTensor('w', [2, 3], values),
      { name: 'h', dims: [2, 3], dataType: DataType.FLOAT16, rawData: encodeFloats(values, DataType.FLOAT16) },
      { name: 'b', dims: [2, 3], dataType: DataType.BFLOAT16, rawData: encodeFloats(values, DataType.BFLOAT16) },
      { name: 'f', dims: [2, 3], dataType: DataType.FLOAT, floatData: values },
      { name: 'i', dims: [2, 3], dataType: DataType.FLOAT16, int32Data: Array.from(new Uint16Array(encodeFloats(values, DataType.FLOAT16).buffer)) },
    ]);
    await writeFile(join(dir, 'm.onnx'), encodeModel(m));
    const loaded = await loadModel(join(dir, 'm.onnx'));
    for (const name of ['w', 'h', 'b', 'f', 'i']) {
      assert.deepEqual(Array.from(await loaded.readWeight(name)), values, name);
      assert.deepEqual(Array.from(await loaded.readWeight64(name)), values, name);
    }
    assert.equal(loaded.initializerInfo('h')?.dtype, 'float16');
    assert.deepEqual(loaded.initializerInfo('b')?.dims, [2, 3]);
    assert.equal(loaded.weightBytes, 24 + 12 + 12 + 24 + 12);
    await loaded.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('external data is read lazily at its offset, relative to the model folder', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'obr-load-'));
  try {
    const a = new Float32Array([1, 2, 3, 4, 5, 6]);
    const b = new Uint16Array(new Uint8Array(encodeFloats([7, 8, 9, 10, 11, 12], DataType.FLOAT16)).buffer);
    const data = new Uint8Array(100 + 24 + 12);
    data.set(new Uint8Array(a.buffer), 100);
    data.set(new Uint8Array(b.buffer), 124);
    await writeFile(join(dir, 'weights.bin'), data);
    const ext = (name: string, dataType: number, offset: number, length: number) => ({
      name,
      dims: [2, 3],
      dataType,
      dataLocation: 1,
      externalData: [
        { key: 'location', value: 'weights.bin' },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(length) },
      ],
    });
    await writeFile(join(dir, 'm.onnx'), encodeModel(matmulModel([ext('w', DataType.FLOAT, 100, 24), ext('h', DataType.FLOAT16, 124, 12)])));
    const loaded = await loadModel(join(dir, 'm.onnx'));
    assert.equal(loaded.initializerInfo('w')?.external?.offset, 100);
    assert.deepEqual(Array.from(await loaded.readWeight('w')), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(Array.from(await loaded.readWeight('h')), [7, 8, 9, 10, 11, 12]);
    const chunks: number[] = [];
    for await (const c of loaded.streamBytes('w', 10)) chunks.push(c.length);
    assert.deepEqual(chunks, [10, 10, 4]);
    await loaded.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
