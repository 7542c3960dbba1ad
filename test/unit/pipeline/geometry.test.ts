// Attention geometry: flags first, then the graph, then config.json / genai_config.json; the error
// names the flags when nothing tells it.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { indexGraph } from '../../../src/onnx/graph';
import type { ModelProto } from '../../../src/onnx/proto';
import { findDecoder } from '../../../src/onnx/rotateGraph';
import { configGeometry } from '../../../src/pipeline/geometry';
import { genaiLlama } from '../onnx/genaiLlama';

const CFG = { vocab: 16, heads: 4, kvHeads: 4, headDim: 8, intermediate: 24, layers: 1 };

/** The same graph with num_heads dropped from every attention op: the graph no longer tells it. */
function withoutHeadCount(m: ModelProto): ModelProto {
  return { ...m, graph: { ...m.graph, node: m.graph!.node!.map((n) => (n.opType === 'MultiHeadAttention' ? { ...n, attribute: (n.attribute ?? []).filter((a) => a.name !== 'num_heads') } : n)) } };
}

test('geometry from the fused attention op, from flags, from config; a clear error otherwise', () => {
  const m = genaiLlama(CFG);
  const d = findDecoder(m, indexGraph(m.graph!));
  assert.deepEqual([d.numHeads, d.numKvHeads, d.headDim], [4, 4, 8]);
  // Flags win over the graph.
  const f = findDecoder(m, indexGraph(m.graph!), { heads: 2, source: '--heads/--kv-heads/--head-dim' });
  assert.deepEqual([f.numHeads, f.headDim], [2, 16]);
  // Flags that don't fit are refused, never silently replaced.
  assert.throws(() => findDecoder(m, indexGraph(m.graph!), { heads: 3, source: '--heads/--kv-heads/--head-dim' }), /--heads\/--kv-heads\/--head-dim says 3 heads, which doesn't fit q_proj's 32/);
  const bare = withoutHeadCount(m);
  assert.throws(() => findDecoder(bare, indexGraph(bare.graph!)), /can't tell the attention head size .* pass --heads N \(and --kv-heads, --head-dim\) to obr compress/);
  const c = findDecoder(bare, indexGraph(bare.graph!), undefined, { heads: 4, kvHeads: 4, source: 'genai_config.json' });
  assert.equal(c.headDim, 8);
  assert.throws(() => findDecoder(bare, indexGraph(bare.graph!), undefined, { heads: 5, source: 'config.json' }), /config\.json says 5 heads, which doesn't fit/);
});

test('configGeometry reads genai_config.json, then config.json (LLaMA and GPT-2 keys)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-geometry-'));
  try {
    const model = path.join(dir, 'model.onnx');
    assert.equal(configGeometry(model), undefined);
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ n_head: 12, n_embd: 768 }));
    assert.deepEqual(configGeometry(model), { heads: 12, kvHeads: 12, headDim: 64, source: 'config.json' });
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ num_attention_heads: 14, num_key_value_heads: 2, hidden_size: 896 }));
    assert.deepEqual(configGeometry(model), { heads: 14, kvHeads: 2, headDim: 64, source: 'config.json' });
    writeFileSync(path.join(dir, 'genai_config.json'), JSON.stringify({ model: { decoder: { num_attention_heads: 5, num_key_value_heads: 1, head_size: 32 } } }));
    assert.deepEqual(configGeometry(model), { heads: 5, kvHeads: 1, headDim: 32, source: 'genai_config.json' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
