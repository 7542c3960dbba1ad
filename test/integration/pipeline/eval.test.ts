// `obr eval` perplexity against the training script's own arithmetic (PyTorch, float64
// cross-entropy over shifted targets, numel // seqlen windows): must agree within 1% — in practice
// to ~1e-5, the float32 difference between onnxruntime and PyTorch.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { evaluateModel } from '../../../src/pipeline/evaluate';
import { evaluationWindows, readText } from '../../../src/runtime/text';
import { loadTokenizer } from '../../../src/runtime/tokenizer';
import { ROOT, tempDir, TINY } from './fixtures';

const PYTHON = '/usr/bin/python3';
const hasTorch = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import torch, onnx'], { encoding: 'utf8' }).status === 0;

test('perplexity matches the Python training script on the tiny model (first 12 windows of the SOTU test split)', { timeout: 180_000, skip: hasTorch ? false : 'needs /usr/bin/python3 with torch and onnx (Debian python3-torch, python3-onnx)' }, async () => {
  const text = path.join(ROOT, 'media', 'text', 'sotu-test.txt');
  const seqlen = 256;
  const windows = 12;
  const ours = await evaluateModel(TINY, { text, seqlen, maxWindows: windows, executionProviders: ['cpu'] });
  assert.equal(ours.windows, windows);
  const tok = await loadTokenizer(TINY);
  const w = evaluationWindows(tok.encode((await readText(text)).text), seqlen, { maxWindows: windows });
  const ids = path.join(tempDir('obr-ref-'), 'ids.json');
  writeFileSync(ids, JSON.stringify(Array.from(w.ids)));
  const r = spawnSync(PYTHON, [path.join(__dirname, 'reference_ppl.py'), path.dirname(TINY), ids, String(seqlen)], { encoding: 'utf8', timeout: 150_000 });
  assert.equal(r.status, 0, r.stderr);
  const ref = JSON.parse(r.stdout.trim().split('\n').pop()!) as { nll: number; windows: number };
  assert.equal(ref.windows, windows);
  const pplRef = Math.exp(ref.nll);
  assert.ok(Math.abs(ours.perplexity / pplRef - 1) < 0.01, `ours ${ours.perplexity} vs python ${pplRef}`);
  assert.ok(Math.abs(ours.nll - ref.nll) < 1e-4, `NLL ours ${ours.nll} vs python ${ref.nll}`);
});
