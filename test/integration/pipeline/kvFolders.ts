// Model folders with a KV-cache interface for the output-layout tests (layouts.test.ts): a
// synthetic onnxruntime-genai folder around the genai-builder LLaMA fixture with
// GroupQueryAttention and past_key_values.* / present.* (seqlens_k and total_sequence_length
// computed in the graph from attention_mask, as the builder does), an Optimum export folder built
// from the tiny bundled model, and greedy decoding with and without the KV cache. Not a test file.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { valueInfo } from '../../../src/onnx/builder';
import { loadModel } from '../../../src/onnx/load';
import { writeModel } from '../../../src/onnx/write';
import { DataType, encodeModel, type ModelProto } from '../../../src/onnx/proto';
import { floatData } from '../../../src/runtime/lm';
import { genaiLlama } from '../../unit/onnx/genaiLlama';
import { ROOT } from './fixtures';

export const TINY_DIR = path.join(ROOT, 'test', 'fixtures', 'models', 'tiny');

/**
 * The genai-builder LLaMA fixture with GroupQueryAttention, given a KV cache: each GQA node reads
 * past_key_values.L.key/value (inputs 3, 4: [batch, kv_heads, past, head_dim]) and writes
 * present.L.key/value (outputs 1, 2: [batch, kv_heads, total, head_dim]), all graph inputs/outputs.
 */
export function gqaWithCache(o: { heads: number; kvHeads: number; headDim: number; layers: number; vocab: number; intermediate: number; seed?: number }): ModelProto {
  const m = genaiLlama({ ...o, dtype: 'float32', maxPositions: 128 });
  const g = m.graph!;
  let layer = 0;
  for (const n of g.node!) {
    if (n.opType !== 'GroupQueryAttention') continue;
    const past = [`past_key_values.${layer}.key`, `past_key_values.${layer}.value`];
    const present = [`present.${layer}.key`, `present.${layer}.value`];
    const inputs = [...n.input!];
    inputs[3] = past[0]!;
    inputs[4] = past[1]!;
    n.input = inputs;
    n.output = [n.output![0]!, ...present];
    g.input!.push(...past.map((p) => valueInfo(p, DataType.FLOAT, ['batch_size', o.kvHeads, 'past_sequence_length', o.headDim])));
    g.output!.push(...present.map((p) => valueInfo(p, DataType.FLOAT, ['batch_size', o.kvHeads, 'total_sequence_length', o.headDim])));
    layer++;
  }
  if (layer !== o.layers) throw new Error(`expected ${o.layers} GroupQueryAttention nodes, found ${layer}`);
  return m;
}

/**
 * An onnxruntime-genai folder (genai_config.json as the model builder writes it, model.onnx, the
 * tiny model's tokenizer files) around gqaWithCache: 4 query heads sharing 2 KV heads.
 */
export function writeGenaiGqaFolder(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const geo = { heads: 4, kvHeads: 2, headDim: 16, layers: 2, vocab: 2048, intermediate: 96, seed: 11 };
  writeFileSync(path.join(dir, 'model.onnx'), encodeModel(gqaWithCache(geo)));
  const config = {
    model: {
      bos_token_id: 1,
      context_length: 128,
      decoder: {
        session_options: { log_id: 'onnxruntime-genai', provider_options: [] },
        filename: 'model.onnx',
        head_size: geo.headDim,
        hidden_size: geo.heads * geo.headDim,
        inputs: {
          input_ids: 'input_ids',
          attention_mask: 'attention_mask',
          position_ids: 'position_ids',
          past_key_names: 'past_key_values.%d.key',
          past_value_names: 'past_key_values.%d.value',
        },
        outputs: { logits: 'logits', present_key_names: 'present.%d.key', present_value_names: 'present.%d.value' },
        num_attention_heads: geo.heads,
        num_hidden_layers: geo.layers,
        num_key_value_heads: geo.kvHeads,
      },
      eos_token_id: 2,
      pad_token_id: 0,
      type: 'llama',
      vocab_size: geo.vocab,
    },
    search: { do_sample: false, max_length: 128, num_beams: 1 },
  };
  writeFileSync(path.join(dir, 'genai_config.json'), JSON.stringify(config, null, 4) + '\n');
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(path.join(TINY_DIR, f), path.join(dir, f));
  return path.join(dir, 'model.onnx');
}

/**
 * An Optimum export folder of the tiny bundled model: config.json (without our `obr_studio` key,
 * as transformers writes it), generation_config.json, tokenizer files, special_tokens_map.json,
 * decoder_model.onnx (no cache) with its weights in decoder_model.onnx_data (Optimum's external-data
 * name) and decoder_with_past_model.onnx (a second model).
 */
export async function writeOptimumFolder(dir: string): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const config = JSON.parse(readFileSync(path.join(TINY_DIR, 'config.json'), 'utf8')) as Record<string, unknown>;
  delete config.obr_studio;
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: config.bos_token_id, eos_token_id: config.eos_token_id, transformers_version: '4.44.0' }, null, 2) + '\n');
  writeFileSync(path.join(dir, 'special_tokens_map.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>' }) + '\n');
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(path.join(TINY_DIR, f), path.join(dir, f));
  const tiny = await loadModel(path.join(TINY_DIR, 'model.onnx'));
  await writeModel(tiny.model, path.join(dir, 'decoder_model.onnx'), { externalData: true, dataFileName: 'decoder_model.onnx_data' });
  await tiny.close();
  copyFileSync(path.join(TINY_DIR, 'model_with_past.onnx'), path.join(dir, 'decoder_with_past_model.onnx'));
  return path.join(dir, 'decoder_model.onnx');
}

/**
 * Graph inputs (not initializers) and outputs as `name:elemType:rank[dims]`, in order; dims are the
 * symbolic names or sizes the graph declares (`batch_size`, `past_sequence_length`, 32).
 */
export function interfaceOf(m: ModelProto): { inputs: string[]; outputs: string[] } {
  const g = m.graph!;
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  const sig = (v: NonNullable<typeof g.input>[number]) => {
    const dims = v.type?.tensorType?.shape?.dim ?? [];
    return `${v.name}:${v.type?.tensorType?.elemType}:${dims.length}[${dims.map((d) => d.dimParam || String(d.dimValue ?? '?')).join(',')}]`;
  };
  return { inputs: (g.input ?? []).filter((v) => !inits.has(v.name)).map(sig), outputs: (g.output ?? []).map(sig) };
}

export interface Decoded {
  tokens: number[];
  /** Last-position logits of each step (float32). */
  logits: Float32Array[];
}

/** An integer tensor in the element type the graph declares for `name` (int32 or int64). */
function ints(session: ort.InferenceSession, name: string, values: number[], dims: number[]): ort.Tensor {
  const m = session.inputMetadata.find((x) => x.name === name);
  if (m?.isTensor && m.type === 'int32') return new ort.Tensor('int32', Int32Array.from(values), dims);
  return new ort.Tensor('int64', BigInt64Array.from(values, (v) => BigInt(v)), dims);
}

/** past_key_values.L.key → present.L.key; past_N → present_N. */
export function presentOf(past: string): string {
  return past.replace(/^past_key_values\./, 'present.').replace(/^past_/, 'present_');
}

/** The last position's logits of one run, as float32. */
function lastLogits(t: ort.Tensor): Float32Array {
  const data = floatData(t);
  const vocab = t.dims[t.dims.length - 1]!;
  return data.slice(data.length - vocab);
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/**
 * Greedy decoding of `steps` tokens after `prompt` on one session (batch 1):
 * - `cached`: the prompt once with empty caches, then one token per run with the previous run's
 *   present.* fed back as past_key_values.* (attention_mask covering past + new tokens);
 * - `full`: every step re-runs the whole sequence so far with empty caches (no cache reuse).
 * Both take the argmax of the last position's logits.
 */
export async function greedyDecode(session: ort.InferenceSession, prompt: number[], steps: number, mode: 'cached' | 'full'): Promise<Decoded> {
  // int32 or int64 ids / mask / positions, as the graph declares them (onnxruntime.transformers GPT-2: int32).
  const pastNames = session.inputNames.filter((n) => n.startsWith('past'));
  const meta = new Map(session.inputMetadata.map((m) => [m.name, m]));
  const emptyPast = (name: string): ort.Tensor => {
    const m = meta.get(name)!;
    if (!m.isTensor) throw new Error(`${name} is not a tensor input`);
    // [batch, kv_heads, 0, head_dim] (or packed [2, batch, heads, 0, head_dim]): the fixed dims from the graph.
    const dims = m.shape.map((d, i) => (typeof d === 'number' ? d : i === m.shape.length - 2 ? 0 : 1));
    return m.type === 'float16' ? new ort.Tensor('float16', new Uint16Array(0), dims) : new ort.Tensor('float32', new Float32Array(0), dims);
  };
  const feedsFor = (ids: number[], start: number, past: Record<string, ort.Tensor>): Record<string, ort.Tensor> => {
    const feeds: Record<string, ort.Tensor> = {
      // Optimum's merged decoders pick the with-past branch only when there is a past.
      ...(session.inputNames.includes('use_cache_branch') ? { use_cache_branch: new ort.Tensor('bool', [start > 0], [1]) } : {}),
      input_ids: ints(session, 'input_ids', ids, [1, ids.length]),
      attention_mask: ints(session, 'attention_mask', new Array(start + ids.length).fill(1), [1, start + ids.length]),
      ...past,
    };
    if (session.inputNames.includes('position_ids')) feeds.position_ids = ints(session, 'position_ids', ids.map((_, i) => start + i), [1, ids.length]);
    return feeds;
  };
  const empty = Object.fromEntries(pastNames.map((n) => [n, emptyPast(n)]));
  const tokens: number[] = [];
  const logits: Float32Array[] = [];
  let past = empty;
  for (let s = 0; s < steps; s++) {
    const seq = [...prompt, ...tokens];
    let out: ort.InferenceSession.OnnxValueMapType;
    if (mode === 'full') out = await session.run(feedsFor(seq, 0, empty));
    else if (s === 0) out = await session.run(feedsFor(prompt, 0, empty));
    else out = await session.run(feedsFor([tokens[tokens.length - 1]!], seq.length - 1, past));
    if (mode === 'cached') past = Object.fromEntries(pastNames.map((n) => [n, out[presentOf(n)]!]));
    const l = lastLogits(out.logits!);
    logits.push(l);
    tokens.push(argmax(l));
  }
  return { tokens, logits };
}
