// Perplexity (§1.11, Wanda's eval_ppl): non-overlapping windows of `seqlen` tokens, cross-entropy
// over the seqlen − 1 shifted targets of each, PPL = exp(total NLL / total targets).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { findLinearLayers } from '../onnx/linear';
import { decoderView } from '../onnx/merged';
import { loadModel, type TensorReader } from '../onnx/load';
import { cloneModel } from '../onnx/graph';
import { addNllHead } from '../onnx/nll';
import { graphPositionLimit, type PositionLimit } from '../onnx/positions';
import { OptionError } from '../protocol/recipes';
import { encodeModel, type ModelProto } from '../onnx/proto';
import type { PerplexityResult } from '../protocol/report';
import { CausalLm } from '../runtime/lm';
import { readText, evaluationWindows, type TokenWindows } from '../runtime/text';
import { checkTokenizerFits, encodePrefix, loadTokenizer, type TextTokenizer } from '../runtime/tokenizer';
import { modelVocabulary } from '../onnx/vocab';
import type { SpillOptions } from './activations';
import { BlockStream, inlineExternalWeights } from './blockStream';
import { throwIfAborted } from './cancel';
import { WorkingModel } from './working';

export interface EvaluateOptions {
  /** Text file to evaluate on. */
  text: string;
  /** Window length; default: the model's context length from config.json (else 2048). */
  seqlen?: number;
  /** Use only the first K windows. */
  maxWindows?: number;
  executionProviders: readonly string[];
  /** Windows per onnxruntime run. */
  batch?: number;
  /** Tokenizer to use (default: tokenizer.json beside the model). */
  tokenizer?: TextTokenizer;
  signal?: AbortSignal;
  onWindow?(done: number, total: number): void;
}

export interface EvaluateResult extends PerplexityResult {
  executionProvider: { used: string; tried: Array<{ name: string; error?: string; detail?: string }> };
}

/** Context length of the model in `dir`: config.json max_position_embeddings / n_positions, else tokenizer_config model_max_length. */
export function contextLength(modelPath: string, fallback = 2048): number {
  const dir = path.dirname(path.resolve(modelPath));
  const read = (f: string): Record<string, unknown> | undefined => {
    const p = path.join(dir, f);
    if (!existsSync(p)) return undefined;
    try {
      return JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  };
  const config = read('config.json');
  for (const key of ['max_position_embeddings', 'n_positions', 'max_sequence_length', 'seq_length']) {
    const v = config?.[key];
    if (typeof v === 'number' && v > 1 && v <= 1 << 20) return v;
  }
  const tc = read('tokenizer_config.json')?.model_max_length;
  if (typeof tc === 'number' && tc > 1 && tc <= 1 << 20) return tc;
  return fallback;
}

/**
 * The most positions the model supports: the smallest position table of the graph (learned
 * position embedding, rotary cos/sin cache), else config.json max_position_embeddings /
 * n_positions; undefined when neither says.
 */
export function maxPositions(model: ModelProto, modelPath: string): PositionLimit | undefined {
  const graph = graphPositionLimit(model);
  if (graph) return graph;
  const p = path.join(path.dirname(path.resolve(modelPath)), 'config.json');
  if (!existsSync(p)) return undefined;
  try {
    const config = JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
    for (const key of ['max_position_embeddings', 'n_positions']) {
      const v = config[key];
      if (typeof v === 'number' && Number.isInteger(v) && v > 1) return { positions: v, source: `config.json ${key}` };
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/** Refuses (OptionError, before any work) a window longer than the model's position range. */
export function checkSeqlen(model: ModelProto, modelPath: string, seqlen: number): void {
  const limit = maxPositions(model, modelPath);
  if (limit && seqlen > limit.positions) {
    throw new OptionError(`this model supports at most ${limit.positions} positions; use --seqlen ≤ ${limit.positions} (got ${seqlen}; from ${limit.source})`);
  }
}

/** Models up to this size are evaluated through the in-graph NLL head (inline weights). */
const NLL_HEAD_MAX_BYTES = 1.5 * 2 ** 30;

/**
 * Opens a model for perplexity: with the in-graph NLL head (src/onnx/nll.ts; the session returns
 * batch×(seq−1) numbers instead of batch×seq×vocab logits) when the graph allows it, otherwise the
 * plain model, whose logits are reduced in JavaScript (float64 log-softmax).
 */
export async function openForPerplexity(model: string | ModelProto, executionProviders: readonly string[]): Promise<CausalLm> {
  let proto: ModelProto | undefined = typeof model === 'string' ? undefined : model;
  if (typeof model === 'string') {
    const loaded = decoderView(await loadModel(model));
    try {
      if (loaded.weightBytes + loaded.fileBytes < NLL_HEAD_MAX_BYTES) {
        proto = (await WorkingModel.fromLoaded(loaded)).proto;
      }
    } finally {
      await loaded.close();
    }
  }
  if (proto) {
    let bytes: Uint8Array | undefined;
    try {
      bytes = encodeModel(addNllHead(proto, { dropLogits: true }));
    } catch {
      bytes = undefined; // an unusual output layout: fall back to logits
    }
    if (bytes) return CausalLm.open(bytes, { executionProviders });
    if (typeof model !== 'string') return CausalLm.open(encodeModel(proto), { executionProviders });
  }
  return CausalLm.open(model as string, { executionProviders });
}

/** Perplexity of an already-open model on already-cut windows. */
export async function perplexityOf(
  lm: CausalLm,
  windows: TokenWindows,
  opts: { batch?: number; signal?: AbortSignal; onWindow?(done: number, total: number): void } = {},
): Promise<{ nll: number; perplexity: number; tokens: number }> {
  const batch = Math.max(1, opts.batch ?? defaultBatch(windows.seqlen));
  let total = 0;
  for (let i = 0; i < windows.count; i += batch) {
    throwIfAborted(opts.signal);
    const b = Math.min(batch, windows.count - i);
    const ids = windows.ids.subarray(i * windows.seqlen, (i + b) * windows.seqlen);
    const { sums } = await lm.windowNll(ids, b, windows.seqlen);
    for (const s of sums) total += s;
    opts.onWindow?.(i + b, windows.count);
  }
  const tokens = windows.count * (windows.seqlen - 1);
  const nll = total / tokens;
  return { nll, perplexity: Math.exp(nll), tokens };
}

/**
 * Perplexity streamed through the decoder blocks (§1.5): the prelude, then one block subgraph at
 * a time on the cached hidden states of every window, then the tail with the NLL head — so only
 * one block's weights are in an onnxruntime session at a time. The token NLLs are those of the
 * whole model (same kernels on the same tensors). Graphs that can't be cut into blocks are run
 * whole (openForPerplexity).
 */
export async function streamedPerplexity(
  model: ModelProto,
  windows: TokenWindows,
  opts: {
    executionProviders: readonly string[];
    batch?: number;
    signal?: AbortSignal;
    spill?: SpillOptions;
    onProgress?(fraction: number): void;
    onExecutionProvider?(ep: CausalLm['executionProvider']): void;
    log?(message: string): void;
    /**
     * Where external weights are read from per block: the model as opened from disk (the
     * whole-model fallback then opens its file) or the job's working store.
     */
    source?: TensorReader & { readonly path?: string };
  },
): Promise<{ nll: number; perplexity: number; tokens: number }> {
  const batch = Math.max(1, opts.batch ?? defaultBatch(windows.seqlen));
  const layers = findLinearLayers(model, { allowEmpty: true, unsupportedDtype: 'skip' });
  const hasHead = (model.graph?.output ?? []).some((o) => o.name === 'logits') && (model.graph?.input ?? []).some((v) => v.name === 'input_ids');
  const opened = hasHead ? BlockStream.open(model, layers, windows, { executionProviders: opts.executionProviders, batch, signal: opts.signal, spill: opts.spill, onExecutionProvider: opts.onExecutionProvider, weights: opts.source }) : { err: 'no logits output' };
  if ('err' in opened) {
    opts.log?.(`perplexity runs the whole model: the graph can't be cut into blocks (${opened.err})`);
    const whole = opts.source?.path ?? (opts.source ? await inlineExternalWeights(cloneModel(model), opts.source) : model);
    const lm = await openForPerplexity(whole, opts.executionProviders);
    opts.onExecutionProvider?.(lm.executionProvider);
    try {
      return await perplexityOf(lm, windows, { batch, signal: opts.signal, onWindow: (done, total) => opts.onProgress?.(done / total) });
    } finally {
      await lm.release();
    }
  }
  const stream = opened.ok;
  const steps = stream.regions.length;
  let step = 0;
  const onBatch = (done: number, total: number) => opts.onProgress?.((step + done / total) / steps);
  try {
    await stream.begin(model, onBatch);
    step++;
    for (let i = 0; i < stream.blockRegions.length; i++) {
      await stream.advance(model, onBatch);
      step++;
    }
    const sums = await stream.tailNll(model, onBatch);
    let total = 0;
    for (const s of sums) total += s;
    const tokens = windows.count * (windows.seqlen - 1);
    const nll = total / tokens;
    return { nll, perplexity: Math.exp(nll), tokens };
  } finally {
    stream.dispose();
  }
}

/** Batch so a run holds about 4 M logits (≈16 MB per 4096-word vocabulary window of 256). */
export function defaultBatch(seqlen: number): number {
  return Math.max(1, Math.min(16, Math.floor(2048 / seqlen)));
}

/** `obr eval`: perplexity of the model file on a text file. */
export async function evaluateModel(modelPath: string, opts: EvaluateOptions): Promise<EvaluateResult> {
  const started = performance.now();
  const tokenizer = opts.tokenizer ?? (await loadTokenizer(modelPath));
  const text = await readText(opts.text);
  const seqlen = opts.seqlen ?? contextLength(modelPath);
  const ids = encodePrefix(tokenizer, text.text, opts.maxWindows !== undefined ? opts.maxWindows * seqlen : undefined);
  const loaded = decoderView(await loadModel(modelPath));
  try {
    checkSeqlen(loaded.model, modelPath, seqlen);
    checkTokenizerFits(tokenizer, modelVocabulary(loaded.model), ids);
    const windows = evaluationWindows(ids, seqlen, { maxWindows: opts.maxWindows, source: opts.text });
    throwIfAborted(opts.signal);
    // Streamed through the blocks, external weights read per block: one block in a session at a time.
    let executionProvider: EvaluateResult['executionProvider'] = { used: 'none', tried: [] };
    const r = await streamedPerplexity(loaded.model, windows, {
      executionProviders: opts.executionProviders,
      batch: opts.batch,
      signal: opts.signal,
      source: loaded,
      onProgress: (f) => opts.onWindow?.(Math.floor(f * windows.count), windows.count),
      onExecutionProvider: (ep) => {
        if (executionProvider.used === 'none') executionProvider = ep;
      },
    });
    return { ...r, windows: windows.count, seqlen, text: opts.text, seconds: (performance.now() - started) / 1000, executionProvider };
  } finally {
    await loaded.close();
  }
}
