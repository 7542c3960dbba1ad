// A TinyLlama-shaped model (hidden 2048, 32/4 heads, FF 5632, vocab 32000, fp16) of N blocks with the
// tiny fixture's tokenizer, for the GPU check (scripts/bench/gpu/run-job.sh). Usage: gen.ts DIR [N=2]
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TINYLLAMA, writeLargeLlama } from '../largeLlama';

async function main(): Promise<void> {
  const dir = process.argv[2]!;
  const layers = Number(process.argv[3] ?? 2);
  const shape = { ...TINYLLAMA, layers };
  mkdirSync(dir, { recursive: true });
  const r = await writeLargeLlama(dir, shape);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join('test/fixtures/models/tiny', f), join(dir, f));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', hidden_size: shape.hidden, intermediate_size: shape.intermediate, num_hidden_layers: layers, num_attention_heads: shape.heads, num_key_value_heads: shape.kvHeads, head_dim: shape.hidden / shape.heads, vocab_size: shape.vocab, max_position_embeddings: shape.positions, torch_dtype: 'float16' }));
  console.log(JSON.stringify(r));
}
void main();
