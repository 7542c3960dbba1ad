// Optimum merged decoders (src/onnx/merged.ts) on the tiny fixture merged the way Optimum merges
// decoder_model.onnx and decoder_with_past_model.onnx (mergedDecoder.ts): the layout, the cached
// and uncached branches giving the same logits, layer discovery seeing each shared weight once
// with the plain export's roles and blocks, split → merge round trips, and the de-duplication of
// initializers when two branches are merged.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { inspectModel } from '../../../src/onnx/inspect';
import { findLinearLayers } from '../../../src/onnx/linear';
import { loadModel } from '../../../src/onnx/load';
import { decoderView, isMergedDecoder, mergeDecoders, mergedSource, remerge, splitMergedDecoder, USE_CACHE_BRANCH } from '../../../src/onnx/merged';
import { cloneModel } from '../../../src/onnx/graph';
import { encodeModel, type ModelProto } from '../../../src/onnx/proto';
import { cachedVsFull, tinyMergedDecoder, TINY_DIR, writeTinyMerged } from './mergedDecoder';

const IDS = Array.from({ length: 14 }, (_, i) => (i * 37 + 5) % 1000);

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test('merged fixture: Optimum layout (one If on use_cache_branch, weights stored once outside the branches)', async () => {
  const { merged, withPast } = await tinyMergedDecoder();
  const g = merged.graph!;
  assert.equal(g.node!.length, 1);
  const ifNode = g.node![0]!;
  assert.equal(ifNode.opType, 'If');
  assert.equal(ifNode.name, 'optimum::if');
  assert.deepEqual(ifNode.input, [USE_CACHE_BRANCH]);
  const cond = g.input!.find((v) => v.name === USE_CACHE_BRANCH)!;
  assert.equal(cond.type!.tensorType!.elemType, 9, 'bool');
  assert.ok(g.input!.some((v) => v.name === 'past_key_values.0.key'));
  assert.deepEqual(g.output!.map((o) => o.name), withPast.graph!.output!.map((o) => o.name));
  // Every weight once, in the outer graph; the branches have no inputs and hold no weights.
  assert.equal(g.initializer!.length, withPast.graph!.initializer!.length);
  for (const a of ifNode.attribute!) {
    assert.equal(a.g!.input!.length, 0, a.name!);
    assert.ok((a.g!.initializer ?? []).every((t) => (t.dims ?? []).length <= 1), `${a.name}: only small constants stay in a branch`);
  }
  assert.ok(isMergedDecoder(merged));
  const split = splitMergedDecoder(merged);
  assert.equal(split.withPastAttribute, 'then_branch');
  assert.ok(!isMergedDecoder(split.noPast) && !isMergedDecoder(split.withPast));
  assert.ok(!split.noPast.graph!.input!.some((v) => (v.name ?? '').startsWith('past_')), 'the no-past branch reads no cache');
});

test('merged fixture: decoding with the cache gives the logits of the uncached run on the whole sequence', async () => {
  const { merged } = await tinyMergedDecoder();
  const r = await cachedVsFull(encodeModel(merged), IDS, 5);
  const d = maxAbsDiff(r.full, r.cached);
  // float32 attention over ≤ 14 positions: the two paths sum in different orders.
  assert.ok(d < 1e-4, `max |Δlogit| ${d}`);
});

test('discovery on a merged decoder: each shared projection once, with the plain export’s roles and blocks', async () => {
  const { merged } = await tinyMergedDecoder();
  const plain = await loadModel(path.join(TINY_DIR, 'model.onnx'));
  await plain.close();
  const want = findLinearLayers(plain.model).map((l) => `${l.weightName} ${l.role} ${l.block}`);
  const got = findLinearLayers(merged).map((l) => `${l.weightName} ${l.role} ${l.block}`);
  assert.deepEqual(got, want);
  assert.equal(new Set(got.map((x) => x.split(' ')[0])).size, got.length, 'no weight twice');
  assert.equal(got.length, 29); // 4 blocks × 7 projections + lm_head

  const dir = mkdtempSync(path.join(tmpdir(), 'obr-merged-'));
  const file = await writeTinyMerged(dir);
  const report = await inspectModel(file);
  assert.deepEqual(report.layers.map((l) => `${l.weightName} ${l.role} ${l.block}`), want);
  assert.ok(report.model.inputs.some((i) => i.name === USE_CACHE_BRANCH), 'inspect describes the file as it is');
});

test('decoderView: a loaded merged decoder seen as its no-past branch, the merged model kept for writing', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-merged-'));
  const file = await writeTinyMerged(dir);
  const loaded = await loadModel(file);
  const view = decoderView(loaded);
  assert.notEqual(view, loaded);
  assert.ok(!isMergedDecoder(view.model));
  assert.equal(mergedSource(view)!.model, loaded.model);
  assert.equal(view.fileBytes, loaded.fileBytes);
  const w = await view.readWeight('model.layers.0.self_attn.q_proj.weight');
  assert.deepEqual(w, await loaded.readWeight('model.layers.0.self_attn.q_proj.weight'));
  await view.close();
  const plain = await loadModel(path.join(TINY_DIR, 'model.onnx'));
  assert.equal(decoderView(plain), plain, 'other models pass through');
  await plain.close();
});

test('split → remerge gives the same model back, byte for byte', async () => {
  const { merged } = await tinyMergedDecoder();
  const split = splitMergedDecoder(merged);
  const again = remerge(split, split.noPast, split.withPast);
  assert.deepEqual(again.graph!.initializer!.map((t) => t.name), merged.graph!.initializer!.map((t) => t.name));
  assert.deepEqual(again.graph!.input!.map((t) => t.name), merged.graph!.input!.map((t) => t.name));
  assert.deepEqual(Buffer.from(encodeModel(again)), Buffer.from(encodeModel(merged)));
});

test('mergeDecoders: a with-past weight under another name is read under the shared name; a same-named different weight is kept apart', async () => {
  const { noPast, withPast } = await tinyMergedDecoder();
  const renamed = (m: ModelProto, from: string, to: string, newData?: boolean): ModelProto => {
    const c = cloneModel(m);
    c.graph!.initializer = c.graph!.initializer!.map((t) => {
      if (t.name !== from) return t;
      const raw = newData ? Uint8Array.from(t.rawData!, (b, i) => (i % 4 === 3 ? b ^ 0x01 : b)) : t.rawData;
      return { ...t, name: to, rawData: raw };
    });
    c.graph!.node = c.graph!.node!.map((n) => (n.input!.includes(from) ? { ...n, input: n.input!.map((x) => (x === from ? to : x)) } : n));
    return c;
  };
  const q = 'model.layers.0.self_attn.q_proj.weight';
  // Same contents, another name (Optimum de-duplicates by contents): one outer initializer.
  const a = mergeDecoders(noPast, renamed(withPast, q, 'onnx::MatMul_1234'));
  assert.equal(a.graph!.initializer!.length, noPast.graph!.initializer!.length);
  const thenNodes = a.graph!.node![0]!.attribute!.find((x) => x.name === 'then_branch')!.g!.node!;
  assert.ok(thenNodes.some((n) => n.input!.includes(q)) && !thenNodes.some((n) => n.input!.includes('onnx::MatMul_1234')));
  // Same name, other contents: both kept, the with-past one renamed; the branches still run.
  const b = mergeDecoders(noPast, renamed(withPast, q, q, true));
  assert.equal(b.graph!.initializer!.length, noPast.graph!.initializer!.length + 1);
  const r = await cachedVsFull(encodeModel(b), IDS.slice(0, 6), 6);
  assert.ok(r.full.every(Number.isFinite));
});

test('merged fixture with folded constants: scalars and 1-D int tensors stay in each branch; the model still round-trips and decodes alike', async () => {
  const { merged } = await tinyMergedDecoder({ foldConstants: true });
  const ifNode = merged.graph!.node![0]!;
  for (const a of ifNode.attribute!) {
    const local = a.g!.initializer ?? [];
    assert.ok(local.length > 100, `${a.name}: ${local.length} constants kept in the branch`);
    assert.ok(local.every((t) => (t.dims ?? []).length <= 1), a.name!);
  }
  assert.equal(findLinearLayers(merged).length, 29);
  const split = splitMergedDecoder(merged);
  assert.deepEqual(Buffer.from(encodeModel(remerge(split, split.noPast, split.withPast))), Buffer.from(encodeModel(merged)));
  const r = await cachedVsFull(encodeModel(merged), IDS, 5);
  assert.ok(maxAbsDiff(r.full, r.cached) < 1e-4);
});
