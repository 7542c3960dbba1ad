// Compressing an Optimum merged decoder (decoder_model_merged.onnx, built from the tiny fixture's two
// exports as Optimum merges them): W4A16 writes merged decoders again — the compressed weights
// stored once, MatMulNBits in both branches — whose cached decoding gives the logits of the
// uncached run; `obr eval` evaluates the written file; W4A4KV4 rotates and fake-quantizes both
// branches alike.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { loadModel } from '../../../src/onnx/load';
import { isMergedDecoder, splitMergedDecoder } from '../../../src/onnx/merged';
import { encodeModel, type GraphProto } from '../../../src/onnx/proto';
import { runCompression } from '../../../src/pipeline/compress';
import { evaluateModel } from '../../../src/pipeline/evaluate';
import { CausalLm } from '../../../src/runtime/lm';
import { cachedVsFull, TINY_DIR, writeTinyMerged } from '../../unit/onnx/mergedDecoder';
import { quickOptions, shortText, tempDir } from './fixtures';

const IDS = Array.from({ length: 12 }, (_, i) => (i * 53 + 11) % 1000);
const haveTiny = existsSync(path.join(TINY_DIR, 'model_with_past.onnx'));

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const opCount = (g: GraphProto, op: string) => (g.node ?? []).filter((n) => n.opType === op).length;

test('W4A16 on a merged decoder: merged outputs, weights once, both branches edited alike, cached = uncached logits, obr eval', { skip: !haveTiny && 'tiny fixture not built', timeout: 600_000 }, async () => {
  const root = tempDir('obr-merged-');
  const dir = path.join(root, 'tiny-optimum');
  mkdirSync(dir);
  // A user's Optimum folder: the packed model goes into a drop-in copy of it under its own name.
  const source = await writeTinyMerged(dir, { optimumFolder: true });
  const evalText = shortText(root, 'sotu-test.txt', 8_000);
  const report = await runCompression(source, quickOptions(root, { recipe: 'obr-gptq', abits: 16, kvbits: 16, samples: 2, seqlen: 32 }), {}, { evalText, evalWindows: 2 });
  assert.equal(report.layers.length, 28, 'every projection once');
  assert.equal(path.basename(report.outputs.packed!), 'decoder_model_merged.onnx', 'the drop-in folder keeps the file name');
  assert.ok(existsSync(path.join(path.dirname(report.outputs.packed!), 'tokenizer.json')));
  assert.ok(report.perplexity.compressed && Number.isFinite(report.perplexity.compressed.perplexity));

  const dense = await loadModel(source);
  const sim = await loadModel(report.outputs.simulated!);
  const packed = await loadModel(report.outputs.packed!);
  try {
    for (const [label, m] of [['simulated', sim.model], ['packed', packed.model]] as const) {
      assert.ok(isMergedDecoder(m), `${label}: a merged decoder again`);
      assert.deepEqual(m.graph!.input!.map((v) => v.name), dense.model.graph!.input!.map((v) => v.name), `${label}: the source's inputs`);
      assert.deepEqual(m.graph!.output!.map((v) => v.name), dense.model.graph!.output!.map((v) => v.name), `${label}: the source's outputs`);
      const split = splitMergedDecoder(m);
      for (const [branch, g] of [['with past', split.withPast.graph!], ['no past', split.noPast.graph!]] as const) {
        if (label === 'packed') {
          assert.equal(opCount(g, 'MatMulNBits'), 28, `${label} ${branch}: every projection packed`);
          assert.equal(opCount(g, 'MatMul'), 1 + 8, `${label} ${branch}: lm_head + the 8 attention products stay MatMul`);
        }
      }
    }
    // The compressed weights are stored once, outside the branches, and are the ones in the report.
    assert.equal(sim.model.graph!.initializer!.length, dense.model.graph!.initializer!.length);
    const q = 'model.layers.0.self_attn.q_proj.weight';
    assert.notDeepEqual(await sim.readWeight(q), await dense.readWeight(q), 'compressed weights replaced the shared initializer');
    const w = await sim.readWeight(q);
    assert.ok(w.filter((x) => x === 0).length >= w.length * 0.5 - 1, '50% sparsity in the shared weight');
    const packedInits = packed.model.graph!.initializer!.map((t) => t.name);
    assert.equal(new Set(packedInits).size, packedInits.length);
    assert.ok(!packedInits.includes(q), 'packed: the float weight is gone');

    // Both branches stay equal: cached decoding = uncached run, for each written model.
    for (const [label, m] of [['dense', dense.model], ['simulated', sim.model], ['packed', packed.model]] as const) {
      const r = await cachedVsFull(encodeModel(m), IDS, 4);
      const d = maxAbsDiff(r.full, r.cached);
      assert.ok(d < 1e-4, `${label}: max |Δlogit| cached vs uncached ${d}`);
    }
    // Simulated and packed models compute the same function (W4A16: the packed codes are the fake-quant weights).
    const s = await cachedVsFull(encodeModel(sim.model), IDS, 12);
    const p = await cachedVsFull(encodeModel(packed.model), IDS, 12);
    assert.ok(maxAbsDiff(s.full, p.full) < 1e-3, `simulated vs packed ${maxAbsDiff(s.full, p.full)}`);
  } finally {
    await Promise.all([dense.close(), sim.close(), packed.close()]);
  }

  // `obr eval` on the written merged file: the report's perplexity (its no-cache branch).
  const evaluated = await evaluateModel(report.outputs.simulated!, { text: evalText, seqlen: 32, maxWindows: 2, executionProviders: ['cpu'] });
  const want = report.perplexity.compressed!.perplexity;
  assert.ok(Math.abs(evaluated.perplexity - want) / want < 1e-5, `obr eval ${evaluated.perplexity} vs report ${want}`);
  // And onnxruntime runs the merged file itself, fed use_cache_branch = false with empty caches.
  const lm = await CausalLm.open(report.outputs.packed!, { executionProviders: ['cpu'] });
  const ids = Int32Array.from(IDS);
  const nll = await lm.windowNll(ids, 1, ids.length);
  assert.ok(Number.isFinite(nll.sums[0]) && nll.sums[0]! > 0);
});

test('W4A4KV4 on a merged decoder with external data and constants kept in the branches: rotation Hadamards and A/KV fake quantization in both branches, cached = uncached logits', { skip: !haveTiny && 'tiny fixture not built', timeout: 600_000 }, async () => {
  const dir = tempDir('obr-merged-');
  const source = await writeTinyMerged(dir, { externalData: true, foldConstants: true });
  assert.ok(existsSync(`${source}.data`));
  const evalText = shortText(dir, 'sotu-test.txt', 8_000);
  const report = await runCompression(source, quickOptions(dir, { recipe: 'obr-gptq', samples: 2, seqlen: 32 }), {}, { evalText, evalWindows: 2 });
  assert.equal(report.options.abits, 4);
  assert.equal(report.options.kvbits, 4);
  assert.equal(report.layers.length, 28);
  const sim = await loadModel(report.outputs.simulated!);
  const packed = await loadModel(report.outputs.packed!);
  try {
    for (const [label, m] of [['simulated', sim.model], ['packed', packed.model]] as const) {
      assert.ok(isMergedDecoder(m), `${label}: a merged decoder again`);
      const { withPast, noPast } = splitMergedDecoder(m);
      const hadamards = (g: GraphProto) => (g.node ?? []).filter((n) => /hadamard/i.test(n.name ?? '')).length;
      assert.ok(hadamards(noPast.graph!) > 0, `${label}: online Hadamards`);
      assert.equal(hadamards(withPast.graph!), hadamards(noPast.graph!), `${label}: the same online Hadamards in both branches`);
      if (label === 'simulated') {
        // A4 on the 4 distinct inputs of each block's projections, K4 and V4: 6 quantizers per block.
        assert.equal(opCount(noPast.graph!, 'Round'), 24);
        assert.equal(opCount(withPast.graph!, 'Round'), 24);
      } else {
        assert.equal(opCount(noPast.graph!, 'MatMulNBits'), 28);
        assert.equal(opCount(withPast.graph!, 'MatMulNBits'), 28);
      }
      const names = m.graph!.initializer!.map((t) => t.name);
      assert.equal(new Set(names).size, names.length, `${label}: each initializer once`);
      // The KV cache written by the no-cache step holds quantized keys, so decoding with it gives the uncached logits.
      const r = await cachedVsFull(label === 'simulated' ? report.outputs.simulated! : report.outputs.packed!, IDS, 4);
      const d = maxAbsDiff(r.full, r.cached);
      assert.ok(d < 1e-4, `${label}: max |Δlogit| cached vs uncached ${d}`);
    }
    assert.ok(existsSync(`${report.outputs.simulated}.data`), 'external data like the source');
  } finally {
    await Promise.all([sim.close(), packed.close()]);
  }
  const evaluated = await evaluateModel(report.outputs.simulated!, { text: evalText, seqlen: 32, maxWindows: 2, executionProviders: ['cpu'] });
  const want = report.perplexity.compressed!.perplexity;
  assert.ok(Math.abs(evaluated.perplexity - want) / want < 1e-5, `obr eval ${evaluated.perplexity} vs report ${want}`);
});
