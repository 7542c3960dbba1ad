// A causal language model on onnxruntime-node: feeds token windows, returns per-window negative
// log-likelihoods (and any extra outputs, e.g. the Hessian-capture sums). Understands the
// Optimum/torch.onnx.export input convention: input_ids, attention_mask, position_ids (int64), and
// optionally past_key_values.* (fed empty). Outputs used: `token_nll` [batch, seq − 1] when the
// model carries the NLL head (src/onnx), otherwise `logits` [batch, seq, vocab] reduced here.
import * as ort from 'onnxruntime-node';
import { runtimeFailedError, runtimeRejectedError } from '../onnx/runtimeError';
import { createSessionWithFallback, ProviderError } from './providers';
import { sessionThreads } from './threads';

export type LmErrorCode = 'unsupported-inputs' | 'no-logits' | 'vocab-mismatch' | 'non-finite';

/** The model's graph inputs/outputs don't look like a causal LM OBR Studio can run. */
export class LmFormatError extends Error {
  override name = 'LmFormatError';
  constructor(
    readonly code: LmErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** A float tensor's values as float32 (float16 logits of fp16 exports arrive as raw Uint16Array bits). */
export function floatData(t: ort.Tensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') {
    const bits = t.data as Uint16Array;
    const out = new Float32Array(bits.length);
    for (let i = 0; i < bits.length; i++) out[i] = halfToFloat(bits[i]!);
    return out;
  }
  if (t.type === 'float64') return Float32Array.from(t.data as Float64Array);
  throw new LmFormatError('no-logits', `the model's output "${t.type}" tensor is not a float tensor`);
}

/** IEEE 754 binary16 bits → number. */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

export interface LmSessionOptions {
  executionProviders: readonly string[];
  /** intra-op threads; undefined: the physical cores (src/runtime/threads.ts), or onnxruntime's default where they can't be counted. */
  threads?: number;
  /** A derived graph (e.g. Hessian capture) without logits: skip the causal-LM output check. */
  outputsOnly?: boolean;
  /** How errors name the model ("the rotated model"); defaults to its path. */
  label?: string;
}

export interface WindowNll {
  /** Sum of NLL (nats) over the seqlen − 1 shifted targets, per window. */
  sums: Float64Array;
  /** Extra outputs requested, as returned by onnxruntime (tensors stay owned by the caller). */
  extra: Record<string, ort.Tensor>;
}

export class CausalLm {
  private constructor(
    readonly session: ort.InferenceSession,
    readonly executionProvider: { used: string; tried: Array<{ name: string; error?: string; detail?: string }> },
    private readonly label: string,
  ) {}

  /** session.run with onnxruntime's failures translated (runtimeFailedError). */
  private async run(feeds: Record<string, ort.Tensor>, outputs: readonly string[]): Promise<ort.InferenceSession.OnnxValueMapType> {
    try {
      return await this.session.run(feeds, [...outputs]);
    } catch (e) {
      throw runtimeFailedError(e, this.label);
    }
  }

  static async open(model: string | Uint8Array, options: LmSessionOptions): Promise<CausalLm> {
    const sessionOptions: ort.InferenceSession.SessionOptions = { logSeverityLevel: 3 };
    const threads = options.threads ?? sessionThreads();
    if (threads) sessionOptions.intraOpNumThreads = threads;
    const label = options.label ?? (typeof model === 'string' ? model : 'the model');
    let choice;
    try {
      choice = await createSessionWithFallback(model, options.executionProviders, sessionOptions);
    } catch (e) {
      // Every provider (CPU included) rejected the graph: say why in words, raw text to the log.
      throw e instanceof ProviderError ? runtimeRejectedError(e.cause ?? e, label) : e;
    }
    const lm = new CausalLm(choice.session, { used: choice.used, tried: choice.tried }, label);
    try {
      lm.check(options.outputsOnly ?? false);
    } catch (e) {
      await choice.session.release();
      throw e;
    }
    return lm;
  }

  get hasNllHead(): boolean {
    return this.session.outputNames.includes('token_nll');
  }

  private check(outputsOnly: boolean): void {
    const names = this.session.inputNames;
    if (!names.includes('input_ids')) {
      throw new LmFormatError('unsupported-inputs', `the model has no "input_ids" input (inputs: ${names.join(', ')}); export a causal LM with Optimum or torch.onnx.export`);
    }
    for (const n of names) {
      if (!FED_INPUTS.has(n) && !isPastInput(n)) {
        throw new LmFormatError('unsupported-inputs', `the model has an input "${n}" OBR Studio does not know how to feed (it feeds input_ids, attention_mask, position_ids, seqlens_k, total_sequence_length, use_cache_branch (false) and empty past_key_values.* / past_N caches)`);
      }
    }
    if (!outputsOnly && !this.hasNllHead && !this.session.outputNames.includes('logits')) {
      throw new LmFormatError('no-logits', `the model has no "logits" output (outputs: ${this.session.outputNames.join(', ')})`);
    }
  }

  /** Feeds for `batch` windows of `seqlen` tokens (flat row-major ids). */
  feeds(ids: Int32Array, batch: number, seqlen: number): Record<string, ort.Tensor> {
    return windowFeeds(this.session, this.session.inputNames, ids, batch, seqlen);
  }

  /**
   * Runs `batch` windows and returns each window's summed NLL over targets 1 … seqlen − 1, in
   * float64 (the logits path computes log-softmax in float64, as the Python reference does).
   */
  async windowNll(ids: Int32Array, batch: number, seqlen: number, extraOutputs: readonly string[] = []): Promise<WindowNll> {
    const feeds = this.feeds(ids, batch, seqlen);
    const head = this.hasNllHead ? 'token_nll' : 'logits';
    const out = await this.run(feeds, [head, ...extraOutputs]);
    const sums = new Float64Array(batch);
    const t = out[head]!;
    if (head === 'token_nll') {
      const nll = floatData(t);
      const per = seqlen - 1;
      for (let b = 0; b < batch; b++) {
        let s = 0;
        for (let j = 0; j < per; j++) s += nll[b * per + j]!;
        sums[b] = s;
      }
    } else {
      const logits = floatData(t);
      const vocab = t.dims[2]!;
      for (let b = 0; b < batch; b++) {
        let s = 0;
        for (let j = 0; j < seqlen - 1; j++) {
          const row = (b * seqlen + j) * vocab;
          const target = ids[b * seqlen + j + 1]!;
          if (target < 0 || target >= vocab) {
            throw new LmFormatError('vocab-mismatch', `token id ${target} is outside the model's vocabulary of ${vocab}: the tokenizer.json does not belong to this model`);
          }
          let max = -Infinity;
          for (let v = 0; v < vocab; v++) if (logits[row + v]! > max) max = logits[row + v]!;
          let z = 0;
          for (let v = 0; v < vocab; v++) z += Math.exp(logits[row + v]! - max);
          s += max + Math.log(z) - logits[row + target]!;
        }
        sums[b] = s;
      }
    }
    t.dispose();
    const extra: Record<string, ort.Tensor> = {};
    for (const n of extraOutputs) extra[n] = out[n]!;
    return { sums, extra };
  }

  /** Runs `batch` windows and returns only the named outputs (no NLL). */
  async runOutputs(ids: Int32Array, batch: number, seqlen: number, outputs: readonly string[]): Promise<Record<string, ort.Tensor>> {
    const out = await this.run(this.feeds(ids, batch, seqlen), outputs);
    const res: Record<string, ort.Tensor> = {};
    for (const n of outputs) res[n] = out[n]!;
    return res;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/**
 * Feeds of the causal-LM inputs among `names` for `batch` windows of `seqlen` tokens: input_ids
 * (flat row-major `ids`), attention_mask all ones, position_ids 0…seqlen − 1 per window, and empty
 * past_key_values.* [batch, heads, 0, head_dim]. Block subgraphs (src/onnx/blocks.ts) use it for
 * the graph inputs they read.
 */
/** Inputs fed from the token windows (besides the empty caches). */
const FED_INPUTS = new Set(['input_ids', 'attention_mask', 'position_ids', 'seqlens_k', 'total_sequence_length', 'use_cache_branch']);

/** A KV-cache input: past_key_values.N.key/value, past.N…, or a packed past_N. */
export function isPastInput(name: string): boolean {
  return name.startsWith('past_key_values.') || name.startsWith('past.') || /^past_\d+$/.test(name) || /^past_(key|value)/.test(name);
}

export function windowFeeds(session: ort.InferenceSession, names: readonly string[], ids: Int32Array, batch: number, seqlen: number): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  const meta = new Map(session.inputMetadata.map((m) => [m.name, m]));
  const int = (name: string, values: (i: number) => number): ort.Tensor => {
    const m = meta.get(name);
    const type = m && m.isTensor ? m.type : 'int64';
    if (type === 'int32') {
      const a = new Int32Array(batch * seqlen);
      for (let i = 0; i < a.length; i++) a[i] = values(i);
      return new ort.Tensor('int32', a, [batch, seqlen]);
    }
    const a = new BigInt64Array(batch * seqlen);
    for (let i = 0; i < a.length; i++) a[i] = BigInt(values(i));
    return new ort.Tensor('int64', a, [batch, seqlen]);
  };
  for (const name of names) {
    if (name === 'input_ids') feeds[name] = int(name, (i) => ids[i]!);
    else if (name === 'attention_mask') feeds[name] = int(name, () => 1);
    else if (name === 'position_ids') feeds[name] = int(name, (i) => i % seqlen);
    else if (name === 'seqlens_k') {
      // GroupQueryAttention: per sequence, total length − 1 (no padding, empty past).
      feeds[name] = new ort.Tensor('int32', new Int32Array(batch).fill(seqlen - 1), [batch]);
    } else if (name === 'use_cache_branch') {
      // Optimum's merged decoder: the branch without past (the caches fed below are empty).
      feeds[name] = new ort.Tensor('bool', [false], [1]);
    } else if (name === 'total_sequence_length') {
      feeds[name] = new ort.Tensor('int32', Int32Array.of(seqlen), []);
    } else if (isPastInput(name)) {
      // An empty cache: past_key_values.* [batch, heads, 0, head_dim], or a packed past_N
      // [2, batch, heads, 0, head_dim] (keys and values stacked, GPT-2 exports).
      const m = meta.get(name);
      const shape = m && m.isTensor ? m.shape : [];
      const type = m && m.isTensor && m.type === 'float16' ? 'float16' : 'float32';
      const empty = type === 'float16' ? new Uint16Array(0) : new Float32Array(0);
      if (shape.length === 4 && typeof shape[1] === 'number' && typeof shape[3] === 'number') {
        feeds[name] = new ort.Tensor(type, empty, [batch, shape[1], 0, shape[3]]);
      } else if (shape.length === 5 && shape[0] === 2 && typeof shape[2] === 'number' && typeof shape[4] === 'number') {
        feeds[name] = new ort.Tensor(type, empty, [2, batch, shape[2], 0, shape[4]]);
      } else {
        throw new LmFormatError('unsupported-inputs', `can't feed "${name}": its shape [${shape.join(', ')}] is neither [batch, heads, past, head_dim] nor [2, batch, heads, past, head_dim]; use the model without past`);
      }
    }
  }
  return feeds;
}
