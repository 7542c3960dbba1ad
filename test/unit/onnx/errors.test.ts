// Every bad input the ONNX layer can meet, one test each: a typed error with a code and a message
// that names the problem and a fix, never a crash and never a partial output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { loadModel } from '../../../src/onnx/load';
import { findLinearLayers } from '../../../src/onnx/linear';
import { inspectModel } from '../../../src/onnx/inspect';
import { runtimeFailedError, runtimeRejectedError } from '../../../src/onnx/runtimeError';
import { ModelFormatError, type ModelFormatErrorCode } from '../../../src/onnx/errors';
import { encodeModel, DataType } from '../../../src/onnx/proto';
import { floatTensor, int64Tensor, model, node, valueInfo } from '../../../src/onnx/builder';
import { writeModel } from '../../../src/onnx/write';
import { buildLlamaGraph } from './llamaGraph';

let dir = '';
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'obr-errors-'));
});
test.after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function isCode(code: ModelFormatErrorCode) {
  return (e: unknown) => {
    assert.ok(e instanceof ModelFormatError, `expected ModelFormatError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.name, /Error$/);
    assert.ok(e.message.length > 40 && /;|—/.test(e.message), `message names a fix: ${e.message}`);
    return true;
  };
}

const oneMatMul = (w: ReturnType<typeof floatTensor>, extra: Parameters<typeof model>[0]['node'] = [], weightInput = 'w') =>
  model({
    name: 'g',
    node: [...(extra ?? []), node('MatMul', ['x', weightInput], ['y'], 'mm')],
    initializer: [w],
    input: [valueInfo('x', DataType.FLOAT, ['n', 2])],
    output: [valueInfo('y', DataType.FLOAT, ['n', 3])],
  });

test('empty file', async () => {
  await writeFile(join(dir, 'empty.onnx'), new Uint8Array(0));
  await assert.rejects(loadModel(join(dir, 'empty.onnx')), isCode('empty-file'));
});

test('truncated file', async () => {
  const bytes = encodeModel(buildLlamaGraph({ layers: 1 }));
  await writeFile(join(dir, 'cut.onnx'), bytes.subarray(0, Math.floor(bytes.length * 0.6)));
  await assert.rejects(loadModel(join(dir, 'cut.onnx')), isCode('truncated'));
});

test('not an ONNX protobuf (text, random bytes)', async () => {
  await writeFile(join(dir, 'text.onnx'), '{"this": "is json, not onnx"}\n');
  await assert.rejects(loadModel(join(dir, 'text.onnx')), isCode('not-onnx'));
  const random = new Uint8Array(4096).map((_, i) => (i * 7919 + 13) % 251);
  await writeFile(join(dir, 'random.onnx'), random);
  await assert.rejects(loadModel(join(dir, 'random.onnx')), (e: unknown) => e instanceof ModelFormatError && ['not-onnx', 'truncated', 'no-graph'].includes(e.code));
  await assert.rejects(loadModel(join(dir, 'does-not-exist.onnx')), isCode('not-onnx'));
});

const externalModel = (length: number) =>
  oneMatMul({
    name: 'w',
    dims: [2, 3],
    dataType: DataType.FLOAT,
    dataLocation: 1,
    externalData: [{ key: 'location', value: 'w.bin' }, { key: 'offset', value: '0' }, { key: 'length', value: String(length) }],
  });

test('missing external-data file', async () => {
  const sub = join(dir, 'missing');
  await rm(sub, { recursive: true, force: true });
  await (await import('node:fs/promises')).mkdir(sub);
  await writeFile(join(sub, 'm.onnx'), encodeModel(externalModel(24)));
  await assert.rejects(loadModel(join(sub, 'm.onnx')), isCode('external-data-missing'));
});

test('short external-data file', async () => {
  const sub = join(dir, 'short');
  await (await import('node:fs/promises')).mkdir(sub, { recursive: true });
  await writeFile(join(sub, 'm.onnx'), encodeModel(externalModel(24)));
  await writeFile(join(sub, 'w.bin'), new Uint8Array(10));
  await assert.rejects(loadModel(join(sub, 'm.onnx')), isCode('external-data-short'));
});

test('external data whose length contradicts the tensor shape', async () => {
  const sub = join(dir, 'badlen');
  await (await import('node:fs/promises')).mkdir(sub, { recursive: true });
  await writeFile(join(sub, 'm.onnx'), encodeModel(externalModel(20)));
  await writeFile(join(sub, 'w.bin'), new Uint8Array(24));
  await assert.rejects(loadModel(join(sub, 'm.onnx')), isCode('external-data-invalid'));
});

test('.onnx file over protobuf\'s 2 GiB limit (sparse file, no disk used)', async () => {
  const fh = await open(join(dir, 'huge.onnx'), 'w');
  await fh.truncate(2 ** 31 + 10);
  await fh.close();
  await assert.rejects(loadModel(join(dir, 'huge.onnx')), isCode('too-large'));
  await rm(join(dir, 'huge.onnx'));
});

test('no linear layers found', async () => {
  const m = model({
    name: 'g',
    node: [node('Relu', ['x'], ['y'], 'relu')],
    input: [valueInfo('x', DataType.FLOAT, ['n'])],
    output: [valueInfo('y', DataType.FLOAT, ['n'])],
  });
  assert.throws(() => findLinearLayers(m), isCode('no-linear-layers'));
  assert.deepEqual(findLinearLayers(m, { allowEmpty: true }), []);
  await writeFile(join(dir, 'relu.onnx'), encodeModel(m));
  await assert.rejects(inspectModel(join(dir, 'relu.onnx')), isCode('no-linear-layers'));
});

test('unsupported weight dtype (float64)', () => {
  const w = { name: 'w', dims: [2, 3], dataType: DataType.DOUBLE, rawData: new Uint8Array(48) };
  assert.throws(() => findLinearLayers(oneMatMul(w as ReturnType<typeof floatTensor>)), isCode('unsupported-dtype'));
  assert.deepEqual(findLinearLayers(oneMatMul(w as ReturnType<typeof floatTensor>), { unsupportedDtype: 'skip', allowEmpty: true }), []);
});

test('dynamic weight shapes (reshaped by a run-time shape; zero dims)', () => {
  const m = model({
    name: 'g',
    node: [node('Shape', ['x'], ['s'], 'shape'), node('Reshape', ['w0', 's2'], ['w'], 'reshape'), node('Concat', ['s', 's'], ['s2'], 'concat', [{ name: 'axis', type: 2, i: 0 }]), node('MatMul', ['x', 'w'], ['y'], 'mm')],
    initializer: [floatTensor('w0', [6], new Float32Array(6))],
    input: [valueInfo('x', DataType.FLOAT, ['n', 2])],
    output: [valueInfo('y', DataType.FLOAT, ['n', 3])],
  });
  assert.throws(() => findLinearLayers(m), isCode('dynamic-weight-shape'));
  const zero = oneMatMul(floatTensor('w', [2, 0], []));
  assert.throws(() => findLinearLayers(zero), isCode('dynamic-weight-shape'));
  void int64Tensor;
});

test('NaN / Inf in weights', async () => {
  const m = oneMatMul(floatTensor('w', [2, 3], [1, 2, NaN, 4, 5, 6]));
  await writeFile(join(dir, 'nan.onnx'), encodeModel(m));
  const loaded = await loadModel(join(dir, 'nan.onnx'));
  await assert.rejects(loaded.readWeight('w'), isCode('non-finite-weight'));
  assert.ok(Number.isNaN((await loaded.readWeight('w', { allowNonFinite: true }))[2]));
  await writeFile(join(dir, 'inf.onnx'), encodeModel(oneMatMul(floatTensor('w', [2, 3], [1, 2, 3, -Infinity, 5, 6]))));
  await assert.rejects(inspectModel(join(dir, 'inf.onnx'), { checkWeights: true }), isCode('non-finite-weight'));
});

test('a graph onnxruntime rejects: the session error is wrapped with a fix', async () => {
  const m = oneMatMul(floatTensor('w', [2, 3], new Float32Array(6)), [node('NoSuchOp', ['x'], ['x2'], 'bad', [], 'com.example')]);
  m.opsetImport!.push({ domain: 'com.example', version: 1 });
  let caught: unknown;
  try {
    await ort.InferenceSession.create(encodeModel(m));
  } catch (e) {
    caught = runtimeRejectedError(e, 'bad.onnx');
  }
  assert.ok(caught, 'onnxruntime accepted a graph with an unknown op');
  isCode('runtime-rejected')(caught);
  assert.match((caught as Error).message, /can't load bad\.onnx: it uses an operator this onnxruntime build lacks \(com\.example:NoSuchOp\); re-export/);
  assert.doesNotMatch((caught as Error).message, /Fatal error|registered function/, 'the raw text stays out of the message');
  assert.match((caught as Error).stack!, /onnxruntime: .*not a registered function\/op/, 'the raw text is in the stack (the log)');
});

test('a node that fails while running: which node, what went wrong and what to do; raw text only in the log', async () => {
  // x [1, 3] · w where w is fed [4, 2] at run time: onnxruntime's MatMul reports a dimension mismatch.
  const m = model({
    name: 'mismatch',
    node: [node('MatMul', ['x', 'w'], ['y'], '/model/layers.0/self_attn/q_hadamard/MatMul')],
    initializer: [],
    input: [valueInfo('x', DataType.FLOAT, [1, 'n']), valueInfo('w', DataType.FLOAT, ['k', 2])],
    output: [valueInfo('y', DataType.FLOAT, [1, 2])],
  });
  const session = await ort.InferenceSession.create(encodeModel(m), { logSeverityLevel: 4 });
  let caught: unknown;
  try {
    await session.run({ x: new ort.Tensor('float32', new Float32Array(3), [1, 3]), w: new ort.Tensor('float32', new Float32Array(8), [4, 2]) });
  } catch (e) {
    caught = runtimeFailedError(e, 'the rotated model');
  } finally {
    await session.release();
  }
  assert.ok(caught, 'onnxruntime ran a MatMul of mismatched shapes');
  isCode('runtime-failed')(caught);
  const message = (caught as Error).message;
  assert.match(message, /^onnxruntime met operands whose shapes don't fit together at MatMul node "\/model\/layers\.0\/self_attn\/q_hadamard\/MatMul" in the rotated model; the rotation .* --heads, --kv-heads and --head-dim/);
  assert.doesNotMatch(message, /Non-zero status code|ONNXRuntimeError/);
  assert.match((caught as Error).stack!, /onnxruntime: Non-zero status code returned while running MatMul node/);
  // Out of memory and fixed-length inputs read as such.
  assert.match(runtimeFailedError(new Error('Failed to allocate memory for requested buffer of size 123')).message, /ran out of memory in the model; use a smaller --batch/);
  assert.match(
    runtimeFailedError(new Error('Got invalid dimensions for input: input_ids for the following indices\n index: 1 Got: 64 Expected: 128\n Please fix either the inputs/outputs or the model.')).message,
    /fed input_ids with a sequence length of 64, but the model is exported for exactly 128 in the model; pass --seqlen 128/,
  );
  assert.match(runtimeFailedError(new Error('Got invalid dimensions for input: input_ids for the following indices\n index: 0 Got: 16 Expected: 1\n')).message, /a batch of 16.*pass --batch 1/);
});

test('unknown initializer name', async () => {
  await writeFile(join(dir, 'ok.onnx'), encodeModel(oneMatMul(floatTensor('w', [2, 3], new Float32Array(6)))));
  const loaded = await loadModel(join(dir, 'ok.onnx'));
  await assert.rejects(loaded.readWeight('nope'), isCode('unknown-initializer'));
});

test('writing a model with external weights but no source is refused before any file is made', async () => {
  const sub = join(dir, 'nosource');
  await (await import('node:fs/promises')).mkdir(sub, { recursive: true });
  await assert.rejects(writeModel(externalModel(24), join(sub, 'out.onnx')), /pass `source`/);
  assert.deepEqual(await readdir(sub), []);
});
