// An Optimum merged decoder (`decoder_model_merged.onnx`) built from the tiny fixture's two
// torch.onnx exports, the way `optimum.onnx.merge_decoders` builds one from decoder_model.onnx and
// decoder_with_past_model.onnx: the decoder without past gets `present.N.key/value` outputs (the
// keys after RoPE and the values it computes, which the with-past export concatenates behind
// `past_key_values.N.*`), then one `If` on `use_cache_branch` (then = with past, else = no past)
// with the weights stored once as outer initializers. Not a test file itself.
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { node } from '../../../src/onnx/builder';
import { cloneModel } from '../../../src/onnx/graph';
import { loadModel } from '../../../src/onnx/load';
import { mergeDecoders } from '../../../src/onnx/merged';
import type { ModelProto } from '../../../src/onnx/proto';
import { writeModel } from '../../../src/onnx/write';

export const TINY_DIR = path.resolve(__dirname, '..', '..', 'fixtures', 'models', 'tiny');

/**
 * Optimum's decoder_model.onnx outputs: the no-past export plus `present.*` — for each output
 * `present.X` = Concat(past_key_values.X, T) of the with-past export, an Identity of T (the
 * same tensor name in both exports).
 */
export function withPresentOutputs(noPast: ModelProto, withPast: ModelProto): ModelProto {
  const m = cloneModel(noPast);
  const g = m.graph!;
  const produced = new Set((g.node ?? []).flatMap((n) => n.output ?? []));
  for (const out of withPast.graph!.output ?? []) {
    const name = out.name ?? '';
    if (!name.startsWith('present')) continue;
    const concat = withPast.graph!.node!.find((n) => n.output?.[0] === name && n.opType === 'Concat');
    const fresh = concat?.input?.find((x) => !x.startsWith('past_key_values.'));
    if (!fresh || !produced.has(fresh)) throw new Error(`fixture: can't find what ${name} concatenates in the no-past export`);
    g.node!.push(node('Identity', [fresh], [name], `/present/${name}/Identity`));
    g.output!.push(out);
  }
  return m;
}

/**
 * Constant nodes as initializers, as exports with constant folding store them (Optimum's usually
 * do): the merge then keeps the scalars and 1-D int tensors inside each branch, where the two
 * exports hold different values under the same names.
 */
export function constantsAsInitializers(model: ModelProto): ModelProto {
  const m = cloneModel(model);
  const g = m.graph!;
  const keep = [];
  for (const n of g.node ?? []) {
    const value = n.opType === 'Constant' ? n.attribute?.find((a) => a.name === 'value')?.t : undefined;
    if (value) g.initializer!.push({ ...value, name: n.output![0] });
    else keep.push(n);
  }
  g.node = keep;
  return m;
}

/** The merged decoder of the tiny fixture (in memory). */
export async function tinyMergedDecoder({ foldConstants = false } = {}): Promise<{ merged: ModelProto; noPast: ModelProto; withPast: ModelProto }> {
  const np = await loadModel(path.join(TINY_DIR, 'model.onnx'));
  const wp = await loadModel(path.join(TINY_DIR, 'model_with_past.onnx'));
  await np.close();
  await wp.close();
  const fold = (m: ModelProto) => (foldConstants ? constantsAsInitializers(m) : m);
  const withPast = fold(wp.model);
  const noPast = fold(withPresentOutputs(np.model, wp.model));
  return { merged: mergeDecoders(noPast, withPast, { graphName: 'merged' }), noPast, withPast };
}

/**
 * Writes `decoder_model_merged.onnx` with the tiny model's tokenizer and config beside it; returns
 * its path. `optimumFolder`: the config without our `obr_studio` marker, as in a user's Optimum
 * export folder (the pipeline then writes a drop-in output folder); `externalData`: the weights in
 * `decoder_model_merged.onnx.data`, as Optimum saves models over 2 GiB; `foldConstants`: see
 * constantsAsInitializers.
 */
export async function writeTinyMerged(dir: string, { optimumFolder = false, externalData = false, foldConstants = false } = {}): Promise<string> {
  const { merged } = await tinyMergedDecoder({ foldConstants });
  const file = path.join(dir, 'decoder_model_merged.onnx');
  await writeModel(merged, file, { externalData });
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json']) {
    if (existsSync(path.join(TINY_DIR, f))) copyFileSync(path.join(TINY_DIR, f), path.join(dir, f));
  }
  if (optimumFolder) {
    const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    delete config.obr_studio;
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  }
  return file;
}

function feedsOf(session: ort.InferenceSession, ids: number[], past: number, cache: Record<string, ort.Tensor> | undefined, useCache: boolean): Record<string, ort.Tensor> {
  const s = ids.length;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, s]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(past + s).fill(1n), [1, past + s]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: s }, (_, i) => BigInt(past + i)), [1, s]),
    use_cache_branch: new ort.Tensor('bool', [useCache], [1]),
  };
  for (const m of session.inputMetadata) {
    if (!m.name.startsWith('past_key_values.') || !m.isTensor) continue;
    // An empty cache [batch, kv heads, 0, head dim] for the first run.
    feeds[m.name] = cache?.[m.name.replace('past_key_values.', 'present.')] ?? new ort.Tensor('float32', new Float32Array(0), [1, m.shape[1] as number, 0, m.shape[3] as number]);
  }
  return feeds;
}

/**
 * Runs a merged decoder on `ids` twice: once without cache on the whole sequence, once with the
 * cache (the first `prefix` tokens without cache, then one token at a time with
 * use_cache_branch = true). Returns both logits [seq, vocab], flat.
 */
export async function cachedVsFull(model: Uint8Array | string, ids: number[], prefix: number): Promise<{ full: Float32Array; cached: Float32Array }> {
  const opts = { intraOpNumThreads: 1, logSeverityLevel: 3 } as const;
  // A path when the model has external data (onnxruntime resolves it beside the file).
  const session = typeof model === 'string' ? await ort.InferenceSession.create(model, opts) : await ort.InferenceSession.create(model, opts);
  try {
    const full = (await session.run(feedsOf(session, ids, 0, undefined, false))).logits!;
    const vocab = full.dims[2]!;
    const cached = new Float32Array(ids.length * vocab);
    let out = await session.run(feedsOf(session, ids.slice(0, prefix), 0, undefined, false));
    cached.set(out.logits!.data as Float32Array, 0);
    for (let t = prefix; t < ids.length; t++) {
      const cache: Record<string, ort.Tensor> = {};
      for (const [k, v] of Object.entries(out)) if (k.startsWith('present.')) cache[k] = v;
      out = await session.run(feedsOf(session, [ids[t]!], t, cache, true));
      cached.set(out.logits!.data as Float32Array, t * vocab);
    }
    return { full: full.data as Float32Array, cached };
  } finally {
    await session.release();
  }
}
