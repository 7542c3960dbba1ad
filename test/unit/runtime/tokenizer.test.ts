// The tokenizer beside a model: loads tokenizer.json, encodes without special tokens, and fails
// with a TokenizerError a user can act on.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadTokenizer, TokenizerError } from '../../../src/runtime/tokenizer';

function dir(): string {
  return mkdtempSync(path.join(tmpdir(), 'obr-tok-'));
}

/** A 6-symbol byte-level BPE: "a", "b", "Ġ", "ab", "abĠ"?? kept minimal: a, b, Ġ, ab + one merge. */
const tinyBpe = {
  version: '1.0',
  added_tokens: [{ id: 4, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
  normalizer: null,
  pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: null,
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab: { a: 0, b: 1, 'Ġ': 2, ab: 3, '<|endoftext|>': 4 }, merges: ['a b'] },
};

test('loads tokenizer.json beside the model and encodes without special tokens', async () => {
  const d = dir();
  writeFileSync(path.join(d, 'tokenizer.json'), JSON.stringify(tinyBpe));
  const tok = await loadTokenizer(path.join(d, 'model.onnx'));
  assert.deepEqual(Array.from(tok.encode('ab ab')), [3, 2, 3]);
  assert.equal(tok.decode([3, 2, 3]), 'ab ab');
  assert.equal(tok.vocabSize, 5);
  assert.equal(tok.sha256.length, 64);
});

test('missing, unreadable and unsupported tokenizers are TokenizerErrors', async () => {
  const d = dir();
  await assert.rejects(loadTokenizer(path.join(d, 'model.onnx')), (e: unknown) => e instanceof TokenizerError && e.code === 'missing' && /tokenizer\.json/.test(e.message));
  writeFileSync(path.join(d, 'tokenizer.json'), '{not json');
  await assert.rejects(loadTokenizer(path.join(d, 'model.onnx')), (e: unknown) => e instanceof TokenizerError && e.code === 'unreadable');
  writeFileSync(path.join(d, 'tokenizer.json'), JSON.stringify({ model: { type: 'SentencePieceMystery' } }));
  await assert.rejects(loadTokenizer(path.join(d, 'model.onnx')), (e: unknown) => e instanceof TokenizerError && e.code === 'unsupported');
});
