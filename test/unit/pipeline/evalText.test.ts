// The default evaluation text: SOTU for our bundled models (their domain), WikiText-2's test split
// (the paper's protocol) for every other model.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { defaultEvaluationText, isBundledModel } from '../../../src/pipeline/assets';

const ROOT = path.join(__dirname, '..', '..', '..');

test('bundled models evaluate on SOTU, any other model on WikiText-2', () => {
  for (const m of [path.join(ROOT, 'media', 'models', 'small', 'model.onnx'), path.join(ROOT, 'test', 'fixtures', 'models', 'tiny', 'model.onnx')]) {
    assert.equal(isBundledModel(m), true, m);
    assert.equal(path.basename(defaultEvaluationText(m)), 'sotu-test.txt');
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-evaltext-'));
  try {
    const other = path.join(dir, 'model.onnx');
    assert.equal(isBundledModel(other), false, 'no config.json');
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', num_attention_heads: 8 }));
    assert.equal(isBundledModel(other), false, "someone else's config.json");
    assert.equal(path.basename(defaultEvaluationText(other)), 'wikitext-2-test.raw');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
