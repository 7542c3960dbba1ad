import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel, wrapModel } from '../../../src/onnx/load';
import { encodeModel } from '../../../src/onnx/proto';
import { findLinearLayers } from '../../../src/onnx/linear';
import { readLayerWeight, replaceLayerWeights, replaceWeights } from '../../../src/onnx/weights';
import { writeModel } from '../../../src/onnx/write';
import { ModelWriteInputError } from '../../../src/onnx/errors';
import { floatToHalf, halfToFloat } from '../../../src/onnx/tensor';
import { buildLlamaGraph } from './llamaGraph';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'obr-write-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('untouched read → write is byte-identical; metadata and opsets kept', async () => {
  await withDir(async (dir) => {
    const m = buildLlamaGraph({ weightType: 'float16' });
    m.metadataProps = [{ key: 'k', value: 'v' }];
    m.docString = 'doc';
    const bytes = encodeModel(m);
    await writeFile(join(dir, 'a.onnx'), bytes);
    const loaded = await loadModel(join(dir, 'a.onnx'));
    const r = await writeModel(loaded.model, join(dir, 'b.onnx'), { source: loaded });
    assert.equal(r.dataPath, undefined);
    assert.ok(Buffer.from(await readFile(join(dir, 'b.onnx'))).equals(Buffer.from(bytes)));
  });
});

test('external data on request: reload gives the same weights; then back to inline', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'a.onnx'), encodeModel(buildLlamaGraph()));
    const a = await loadModel(join(dir, 'a.onnx'));
    const r = await writeModel(a.model, join(dir, 'b.onnx'), { source: a, externalData: true });
    assert.equal(r.dataPath, join(dir, 'b.onnx.data'));
    assert.ok(r.dataBytes > 0 && r.bytes < (await stat(join(dir, 'a.onnx'))).size);
    const b = await loadModel(join(dir, 'b.onnx'));
    const w = 'model.layers.1.mlp.down_proj.weight';
    assert.ok(b.initializerInfo(w)?.external);
    assert.equal(b.initializerInfo('eps')?.external, undefined, 'small tensors stay inline');
    assert.deepEqual(await b.readWeight(w), await a.readWeight(w));
    // external → inline again reproduces the original bytes exactly.
    await writeModel(b.model, join(dir, 'c.onnx'), { source: b, externalData: false });
    assert.ok((await readFile(join(dir, 'c.onnx'))).equals(await readFile(join(dir, 'a.onnx'))));
    // 'keep' references b's data file from another folder without copying it.
    await writeModel(b.model, join(dir, 'sub', '..', 'k.onnx'), { source: b, externalData: 'keep' });
    const k = await loadModel(join(dir, 'k.onnx'));
    assert.equal(k.initializerInfo(w)?.external?.file, join(dir, 'b.onnx.data'));
    await Promise.all([a.close(), b.close(), k.close()]);
  });
});

test('replaceWeights keeps name, shape and dtype (fp16 rounded to nearest even)', async () => {
  const m = buildLlamaGraph({ weightType: 'float16', layers: 1 });
  const layers = findLinearLayers(m);
  const up = layers.find((l) => l.role === 'up')!;
  const w = new Float32Array(up.outFeatures * up.inFeatures).map((_, i) => (i % 7) * 0.1 - 0.3);
  const out = replaceLayerWeights(m, layers, new Map([[up.name, w]]));
  assert.notEqual(out, m);
  const back = await readLayerWeight(wrapModel(out), findLinearLayers(out).find((l) => l.role === 'up')!);
  for (let i = 0; i < w.length; i++) assert.equal(back[i], halfToFloat(floatToHalf(w[i])));
  // The source model is untouched.
  const orig = m.graph!.initializer!.find((t) => t.name === up.weightName)!;
  assert.notEqual(out.graph!.initializer!.find((t) => t.name === up.weightName), orig);
  assert.throws(() => replaceWeights(m, new Map([['nope', [1]]])), ModelWriteInputError);
  assert.throws(() => replaceWeights(m, new Map([[up.weightName, [1, 2]]])), ModelWriteInputError);
});

test('refuses to write over the source model or its data file', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'a.onnx'), encodeModel(buildLlamaGraph({ layers: 1 })));
    const a = await loadModel(join(dir, 'a.onnx'));
    await assert.rejects(writeModel(a.model, join(dir, '.', 'a.onnx'), { source: a }), (e: Error) => e instanceof ModelWriteInputError && e.code === 'overwrite-source');
    await writeModel(a.model, join(dir, 'b.onnx'), { source: a, externalData: true });
    const b = await loadModel(join(dir, 'b.onnx'));
    await assert.rejects(
      writeModel(b.model, join(dir, 'c.onnx'), { source: b, externalData: true, dataFileName: 'b.onnx.data' }),
      (e: Error) => e instanceof ModelWriteInputError && e.code === 'overwrite-source',
    );
    assert.deepEqual((await readdir(dir)).sort(), ['a.onnx', 'b.onnx', 'b.onnx.data']);
  });
});

test('a failure mid-write leaves no partial output and no temp files', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'a.onnx'), encodeModel(buildLlamaGraph({ layers: 1 })));
    const a = await loadModel(join(dir, 'a.onnx'));
    let calls = 0;
    await assert.rejects(
      writeModel(a.model, join(dir, 'out.onnx'), {
        source: a,
        externalData: true,
        weightProvider: (name) => {
          if (++calls === 5) throw new Error('compression failed');
          return name === 'x' ? [1] : undefined;
        },
      }),
      /compression failed/,
    );
    // NaN in a replacement is refused the same way.
    await assert.rejects(
      writeModel(a.model, join(dir, 'out.onnx'), {
        source: a,
        weightProvider: (name, info) => (name.includes('q_proj') ? new Float32Array(info.elementCount).fill(NaN) : undefined),
      }),
      ModelWriteInputError,
    );
    assert.deepEqual(await readdir(dir), ['a.onnx']);
  });
});
