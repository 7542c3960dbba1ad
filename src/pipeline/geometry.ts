// Attention geometry written beside a model: Hugging Face config.json (num_attention_heads,
// num_key_value_heads, head_dim; GPT-2's n_head) and onnxruntime-genai's genai_config.json
// (model.decoder.num_attention_heads, num_key_value_heads, head_size). Used by the rotation when
// the graph itself doesn't show the head size (fused attention ops, unusual reshapes).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { AttentionGeometry } from '../onnx/types';

function readJson(file: string): Record<string, unknown> | undefined {
  if (!existsSync(file)) return undefined;
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const positive = (v: unknown): number | undefined => (typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : undefined);

/** The geometry in config.json or genai_config.json beside `modelPath`, if either names it. */
export function configGeometry(modelPath: string): AttentionGeometry | undefined {
  const dir = path.dirname(path.resolve(modelPath));
  const genai = readJson(path.join(dir, 'genai_config.json'));
  const decoder = ((genai?.model as Record<string, unknown> | undefined)?.decoder ?? undefined) as Record<string, unknown> | undefined;
  if (decoder) {
    const g: AttentionGeometry = { heads: positive(decoder.num_attention_heads), kvHeads: positive(decoder.num_key_value_heads), headDim: positive(decoder.head_size), source: 'genai_config.json' };
    if (g.heads || g.headDim) return g;
  }
  const config = readJson(path.join(dir, 'config.json'));
  if (config) {
    const heads = positive(config.num_attention_heads) ?? positive(config.n_head);
    const hidden = positive(config.hidden_size) ?? positive(config.n_embd);
    const g: AttentionGeometry = {
      heads,
      kvHeads: positive(config.num_key_value_heads) ?? heads,
      headDim: positive(config.head_dim) ?? (heads && hidden && hidden % heads === 0 ? hidden / heads : undefined),
      source: 'config.json',
    };
    if (g.heads || g.headDim) return g;
  }
  return undefined;
}
