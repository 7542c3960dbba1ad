// The causal-LM runner on the tiny model: the in-graph NLL head and the JavaScript log-softmax of
// the logits agree; the with-past, fp16 and external-data exports give the same perplexity.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { openForPerplexity, perplexityOf } from '../../../src/pipeline/evaluate';
import { CausalLm } from '../../../src/runtime/lm';
import { evaluationWindows } from '../../../src/runtime/text';
import { loadTokenizer } from '../../../src/runtime/tokenizer';

const DIR = path.resolve(__dirname, '..', '..', 'fixtures', 'models', 'tiny');
const TEXT = 'The President shall, from time to time, give to the Congress information of the State of the Union, and recommend to their consideration such measures as he shall judge necessary and expedient. '.repeat(8);

test('NLL head == float64 log-softmax of the logits; past/fp16/external exports agree', { timeout: 120_000 }, async () => {
  const tok = await loadTokenizer(path.join(DIR, 'model.onnx'));
  const w = evaluationWindows(tok.encode(TEXT), 64, { maxWindows: 3 });
  const viaLogits = await CausalLm.open(path.join(DIR, 'model.onnx'), { executionProviders: ['cpu'] });
  assert.equal(viaLogits.hasNllHead, false);
  const a = await perplexityOf(viaLogits, w);
  await viaLogits.release();
  const viaHead = await openForPerplexity(path.join(DIR, 'model.onnx'), ['cpu']);
  assert.equal(viaHead.hasNllHead, true);
  const b = await perplexityOf(viaHead, w);
  await viaHead.release();
  assert.ok(Math.abs(a.nll - b.nll) < 1e-5, `logits ${a.nll} vs head ${b.nll}`);
  for (const [file, tol] of [['model_with_past.onnx', 1e-5], ['model.external.onnx', 1e-9], ['model.fp16.onnx', 5e-3]] as const) {
    const lm = await openForPerplexity(path.join(DIR, file), ['cpu']);
    const r = await perplexityOf(lm, w);
    await lm.release();
    assert.ok(Math.abs(r.nll - b.nll) < tol, `${file}: ${r.nll} vs ${b.nll}`);
  }
});
