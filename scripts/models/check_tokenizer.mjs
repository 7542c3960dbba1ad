// Asserts that @huggingface/tokenizers (Node) encodes text exactly as the Python reference encoder.
// Usage: node scripts/models/check_tokenizer.mjs MODEL_DIR [TEXT_FILE ...]
// (default texts: media/text/sotu-test.txt, sotu-valid.txt, wikitext-2-test.raw)
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '@huggingface/tokenizers';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const dir = path.resolve(process.argv[2] ?? 'test/fixtures/models/tiny');
const texts = process.argv.length > 3 ? process.argv.slice(3)
  : ['sotu-test.txt', 'sotu-valid.txt', 'wikitext-2-test.raw'].map((f) => path.join(root, 'media', 'text', f));
const tokJson = JSON.parse(readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
let tokCfg = {};
try { tokCfg = JSON.parse(readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')); } catch { /* optional */ }
const tok = new Tokenizer(tokJson, tokCfg);
let failed = false;
for (const file of texts) {
  const text = readFileSync(file, 'utf8');
  const t0 = Date.now();
  const ids = tok.encode(text, { add_special_tokens: false }).ids;
  const ms = Date.now() - t0;
  const py = JSON.parse(execFileSync('/usr/bin/python3', [path.join(here, 'encode.py'), path.join(dir, 'tokenizer.json'), file],
    { maxBuffer: 1 << 28, encoding: 'utf8' }));
  let first = -1;
  const n = Math.max(ids.length, py.length);
  for (let i = 0; i < n; i++) if (ids[i] !== py[i]) { first = i; break; }
  const roundTrip = tok.decode(ids) === text;
  console.log(`${path.basename(file)}: ${text.length} chars, node ${ids.length} tokens (${ms} ms), python ${py.length} tokens, ` +
    `${first < 0 ? 'identical' : `FIRST MISMATCH at ${first}: node ${ids.slice(first, first + 5)} python ${py.slice(first, first + 5)}`}, ` +
    `decode round-trip ${roundTrip ? 'ok' : 'DIFFERS'}`);
  if (first >= 0 || !roundTrip) failed = true;
}
if (failed) { console.error('tokenizer check FAILED'); process.exit(1); }
console.log('tokenizer check passed');
