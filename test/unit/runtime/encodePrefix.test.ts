// Tokenizing only the prefix a limited evaluation needs gives the same first tokens as the whole text.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { encodePrefix, loadTokenizer } from '../../../src/runtime/tokenizer';

const ROOT = path.join(__dirname, '..', '..', '..');

test('encodePrefix: the first tokens equal those of the whole text (WikiText-2 excerpt, bundled tokenizer)', async () => {
  const tok = await loadTokenizer(path.join(ROOT, 'media', 'models', 'small', 'model.onnx'));
  const text = readFileSync(path.join(ROOT, 'media', 'text', 'wikitext-2-test.raw'), 'utf8').slice(0, 120_000);
  const all = tok.encode(text);
  for (const needed of [10, 1000, 5000]) {
    const part = encodePrefix(tok, text, needed);
    assert.ok(part.length >= needed && part.length < all.length, `${needed}: got ${part.length} of ${all.length}`);
    assert.deepEqual(Array.from(part), Array.from(all.subarray(0, part.length)), `${needed}: same tokens`);
  }
  // More than the text holds, or no limit: the whole text.
  assert.equal(encodePrefix(tok, text, all.length * 2).length, all.length);
  assert.equal(encodePrefix(tok, text, undefined).length, all.length);
});
