import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { addNllHead } from '../../../src/onnx/nll';
import { encodeModel, type ModelProto } from '../../../src/onnx/proto';
import { ModelFormatError } from '../../../src/onnx/errors';
import { buildLlamaGraph, llamaFeeds } from './llamaGraph';

/** Single-threaded sessions: the suites share two cores with others; results don't depend on it. */
const ONE_THREAD: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1 };

async function run(m: ModelProto, batch: number, seq: number, vocab: number) {
  const s = await ort.InferenceSession.create(encodeModel(m), ONE_THREAD);
  const f = llamaFeeds(batch, seq, vocab, 0, 11);
  const t = (d: BigInt64Array) => new ort.Tensor('int64', d, [batch, seq]);
  const r = await s.run({ input_ids: t(f.ids), attention_mask: t(f.mask), position_ids: t(f.pos) });
  await s.release();
  return { r, ids: f.ids };
}

test('token_nll equals −log_softmax(logits)[t][input_ids[t+1]] computed in float64', async () => {
  const V = 32;
  const [B, S] = [2, 7];
  const m = addNllHead(buildLlamaGraph({ vocab: V }));
  const { r, ids } = await run(m, B, S, V);
  const logits = r.logits.data as Float32Array;
  const nll = r.token_nll.data as Float32Array;
  assert.deepEqual(r.token_nll.dims, [B, S - 1]);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < S - 1; t++) {
      const row = logits.subarray((b * S + t) * V, (b * S + t + 1) * V);
      let max = -Infinity;
      for (const v of row) max = Math.max(max, v);
      let sum = 0;
      for (const v of row) sum += Math.exp(v - max);
      const expected = -(row[Number(ids[b * S + t + 1])] - max - Math.log(sum));
      assert.ok(Math.abs(nll[b * (S - 1) + t] - expected) < 1e-5 * Math.max(1, expected), `${b},${t}: ${nll[b * (S - 1) + t]} vs ${expected}`);
    }
  }
});

test('dropLogits leaves only token_nll; fp16 weights work; bad names are typed errors', async () => {
  const m = addNllHead(buildLlamaGraph({ vocab: 32, weightType: 'float16' }), { dropLogits: true });
  assert.deepEqual(m.graph!.output!.map((o) => o.name), ['token_nll']);
  const { r } = await run(m, 1, 4, 32);
  assert.deepEqual(Object.keys(r), ['token_nll']);
  assert.ok((r.token_nll.data as Float32Array).every((v) => v > 0 && Number.isFinite(v)));
  assert.throws(() => addNllHead(buildLlamaGraph(), { logits: 'nope' }), ModelFormatError);
});
