// Verifies an exported model directory with onnxruntime-node and measures its perplexity.
// Usage: node scripts/models/check_models.mjs DIR [--text FILE] [--json OUT.json] [--no-ppl]
//  - loads model.onnx, model.external.onnx, model_with_past.onnx, model.fp16.onnx
//  - fp32 == external (exactly), with_past prefill (past_sequence = 0) + one cached decode step == no-cache run,
//    padding (left and right) leaves the logits of real tokens unchanged, fp16 within fp16 tolerance
//  - perplexity, WikiText-2 protocol: whole text tokenized (documents joined "\n\n"), numel // ctx
//    non-overlapping windows (remainder dropped), mean cross-entropy of the ctx-1 shifted targets, exp.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { Tokenizer } from '@huggingface/tokenizers';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const args = process.argv.slice(2);
const dir = path.resolve(args[0] ?? 'test/fixtures/models/tiny');
const opt = (name, def) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : def; };
const textFile = path.resolve(opt('--text', path.join(root, 'media', 'text', 'sotu-test.txt')));
const jsonOut = opt('--json', null);

const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
const tok = new Tokenizer(JSON.parse(readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')),
  JSON.parse(readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')));
const V = cfg.vocab_size, L = cfg.num_hidden_layers, KV = cfg.num_key_value_heads, D = cfg.head_dim;
const CTX = cfg.max_position_embeddings;
const sessOpts = { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: 2 };
const load = (f) => ort.InferenceSession.create(path.join(dir, f), sessOpts);
const [fp32, ext, past, fp16] = await Promise.all(['model.onnx', 'model.external.onnx', 'model_with_past.onnx', 'model.fp16.onnx'].map(load));
const report = { dir: path.relative(root, dir), checks: {} };
let failed = false;
const check = (name, ok, detail) => {
  report.checks[name] = { ok, ...detail };
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name} ${JSON.stringify(detail)}`);
  if (!ok) failed = true;
};
console.log('inputs', fp32.inputNames.join(','), 'outputs', fp32.outputNames.join(','));
console.log('with_past inputs', past.inputNames.length, 'outputs', past.outputNames.length);

const i64 = (arr, dims) => new ort.Tensor('int64', BigInt64Array.from(arr.map(BigInt)), dims);
function feeds(rows, masks, positions) {
  const b = rows.length, s = rows[0].length;
  return {
    input_ids: i64(rows.flat(), [b, s]),
    attention_mask: i64(masks.flat(), [b, masks[0].length]),
    position_ids: i64(positions.flat(), [b, s]),
  };
}
const emptyPast = (b) => {
  const f = {};
  for (let i = 0; i < L; i++) for (const k of ['key', 'value']) f[`past_key_values.${i}.${k}`] = new ort.Tensor('float32', new Float32Array(0), [b, KV, 0, D]);
  return f;
};
const row = (logits, b, t) => { const s = logits.dims[1]; return logits.data.subarray((b * s + t) * V, (b * s + t + 1) * V); };
const maxAbs = (a, b) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i])); return m; };
const maxOf = (a) => { let m = 0; for (const x of a) m = Math.max(m, Math.abs(x)); return m; };
const range = (n, o = 0) => Array.from({ length: n }, (_, i) => i + o);

// 1. a prompt through every model
const prompt = 'Fellow-Citizens of the Senate and House of Representatives: The state of the Union is';
const ids = tok.encode(prompt, { add_special_tokens: false }).ids;
const P = ids.length;
const full = (await fp32.run(feeds([ids], [ids.map(() => 1)], [range(P)]))).logits;
const fullExt = (await ext.run(feeds([ids], [ids.map(() => 1)], [range(P)]))).logits;
check('external == fp32', maxAbs(full.data, fullExt.data) === 0, { maxAbsDiff: maxAbs(full.data, fullExt.data) });
const pre = await past.run({ ...feeds([ids.slice(0, P - 1)], [range(P - 1).map(() => 1)], [range(P - 1)]), ...emptyPast(1) });
const preDiff = maxAbs(pre.logits.data, full.data.subarray(0, (P - 1) * V));
check('with_past prefill (past 0) == fp32', preDiff < 1e-4, { maxAbsDiff: preDiff });
const step = {};
for (let i = 0; i < L; i++) for (const k of ['key', 'value']) step[`past_key_values.${i}.${k}`] = pre[`present.${i}.${k}`];
const dec = await past.run({ ...feeds([[ids[P - 1]]], [range(P).map(() => 1)], [[P - 1]]), ...step });
const decDiff = maxAbs(dec.logits.data, row(full, 0, P - 1));
check('with_past decode step == fp32 last position', decDiff < 1e-4, { maxAbsDiff: decDiff, presentDims: dec['present.0.key'].dims });
const half = (await fp16.run(feeds([ids], [ids.map(() => 1)], [range(P)]))).logits;
const halfDiff = maxAbs(half.data, full.data) / maxOf(full.data);
check('fp16 ~ fp32 (max |diff| / max |logit|)', halfDiff < 2e-2, { relDiff: halfDiff });

// 2. padding is masked: the same prompt right-padded and left-padded in a batch of 3
const pad = 3, T = P + pad, eot = cfg.eos_token_id;
const rows = [[...ids, ...Array(pad).fill(eot)], [...Array(pad).fill(eot), ...ids], [...ids.slice(0, T - P), ...ids].slice(0, T)];
const masks = [[...Array(P).fill(1), ...Array(pad).fill(0)], [...Array(pad).fill(0), ...Array(P).fill(1)], Array(T).fill(1)];
const poss = [range(T).map((i) => Math.min(i, P - 1)), range(T).map((i) => Math.max(0, i - pad)), range(T)];
const padded = (await fp32.run(feeds(rows, masks, poss))).logits;
let padDiff = 0;
for (let t = 0; t < P; t++) {
  padDiff = Math.max(padDiff, maxAbs(row(padded, 0, t), row(full, 0, t)), maxAbs(row(padded, 1, t + pad), row(full, 0, t)));
}
check('padding masked (left and right)', padDiff < 1e-4, { maxAbsDiff: padDiff });

// 3. greedy continuation with the KV cache (sanity)
let cache = emptyPast(1), cur = ids.slice(), gen = [], pos0 = 0, input = ids.slice();
for (let k = 0; k < 24; k++) {
  const out = await past.run({ ...feeds([input], [range(pos0 + input.length).map(() => 1)], [range(input.length, pos0)]), ...cache });
  const last = row(out.logits, 0, input.length - 1);
  let best = 0; for (let v = 1; v < V; v++) if (last[v] > last[best]) best = v;
  gen.push(best); pos0 += input.length; input = [best];
  cache = {}; for (let i = 0; i < L; i++) for (const kk of ['key', 'value']) cache[`past_key_values.${i}.${kk}`] = out[`present.${i}.${kk}`];
}
report.greedy = prompt + tok.decode(gen);
console.log('greedy:', JSON.stringify(report.greedy));

// 4. perplexity
async function perplexity(session, all) {
  const n = Math.floor(all.length / CTX);
  let nll = 0, count = 0;
  const B = 16;
  for (let w0 = 0; w0 < n; w0 += B) {
    const b = Math.min(B, n - w0);
    const rowsW = range(b).map((j) => all.slice((w0 + j) * CTX, (w0 + j + 1) * CTX));
    const out = (await session.run(feeds(rowsW, rowsW.map(() => Array(CTX).fill(1)), rowsW.map(() => range(CTX))))).logits;
    for (let j = 0; j < b; j++) for (let t = 0; t < CTX - 1; t++) {
      const r = row(out, j, t);
      let m = -Infinity; for (let v = 0; v < V; v++) if (r[v] > m) m = r[v];
      let s = 0; for (let v = 0; v < V; v++) s += Math.exp(r[v] - m);
      nll += m + Math.log(s) - r[rowsW[j][t + 1]];
      count++;
    }
  }
  return { windows: n, predictions: count, nll: nll / count, ppl: Math.exp(nll / count) };
}
if (args.includes('--no-ppl')) {
  if (failed) { console.error('model check FAILED'); process.exit(1); }
  console.log('model check passed (perplexity skipped)');
  process.exit(0);
}
const text = readFileSync(textFile, 'utf8');
const all = tok.encode(text, { add_special_tokens: false }).ids;
const t0 = Date.now();
report.ppl = { text: path.relative(root, textFile), tokens: all.length, fp32: await perplexity(fp32, all) };
report.ppl.fp32.seconds = (Date.now() - t0) / 1000;
report.ppl.fp16 = await perplexity(fp16, all);
console.log(`perplexity on ${report.ppl.text}: fp32 ${report.ppl.fp32.ppl.toFixed(4)} (${report.ppl.fp32.windows} windows of ${CTX}, ${report.ppl.fp32.seconds}s), fp16 ${report.ppl.fp16.ppl.toFixed(4)}`);
const metricsFile = process.env.OBR_TRAIN_METRICS;
if (metricsFile) {
  const py = JSON.parse(readFileSync(metricsFile, 'utf8'));
  const rel = Math.abs(py.test_ppl_python - report.ppl.fp32.ppl) / py.test_ppl_python;
  check('node ppl == python ppl (1%)', rel < 0.01, { python: py.test_ppl_python, node: report.ppl.fp32.ppl, rel });
}
check('fp16 ppl within 1% of fp32', Math.abs(report.ppl.fp16.ppl / report.ppl.fp32.ppl - 1) < 0.01, { fp16: report.ppl.fp16.ppl });
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(report, null, 1) + '\n');
if (failed) { console.error('model check FAILED'); process.exit(1); }
console.log('model check passed');
