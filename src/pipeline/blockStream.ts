// Block-streaming forwards (docs/obr-algorithm.md §1.5): the model is split into prelude, one
// region per decoder block and tail (src/onnx/blocks.ts); the prelude runs once on the token ids
// and every block region then runs on the cached tensors crossing the cut in front of it, so
// calibration costs a fixed number of block forwards per block — linear in depth — instead of
// re-running blocks 0…b from the token ids for every capture of block b.
//
// Each forward opens an onnxruntime session on one region's subgraph (that block's weights only),
// runs every calibration batch through it and releases it.
import type * as ort from 'onnxruntime-node';
import { elementTypeOf, regionModel, splitBlocks, type BlockSplit, type GraphRegion } from '../onnx/blocks';
import { addHessianCapture } from '../onnx/hessian';
import { addNllHead } from '../onnx/nll';
import type { TensorReader } from '../onnx/load';
import { encodeModel, type ModelProto } from '../onnx/proto';
import { isExternal, tensorHeader } from '../onnx/tensor';
import type { LinearLayer } from '../onnx/types';
import { createSessionWithFallback } from '../runtime/providers';
import { windowFeeds } from '../runtime/lm';
import type { TokenWindows } from '../runtime/text';
import { ActivationCache, type CalibrationBatch, type SpillOptions } from './activations';
import { throwIfAborted } from './cancel';
import { StatsAccumulator, type CaptureRequest, type CapturedStats } from './capture';
import { collectGarbage } from './memlog';
import { sessionThreads } from '../runtime/threads';

export type ExecutionProviderChoice = { used: string; tried: Array<{ name: string; error?: string }> };

/** Why a forward ran: the prelude, a Hessian capture, or producing the next block's inputs. */
export type ForwardKind = 'prelude' | 'capture' | 'advance' | 'capture+advance';

export interface BlockStreamOptions {
  executionProviders: readonly string[];
  batch: number;
  signal?: AbortSignal;
  /** Called once per region forward (tests count them: linear in depth). */
  onForward?(region: GraphRegion, kind: ForwardKind): void;
  onExecutionProvider?(ep: ExecutionProviderChoice): void;
  /** Memory budget of the activation cache and where it spills beyond it. */
  spill?: SpillOptions;
  /**
   * Where external-data weights of the model are read from (the source model opened lazily, or
   * the job's working store, src/onnx/store.ts): each region subgraph reads only its own weights
   * when its session is opened, and hands them back when the session is released.
   */
  weights?: TensorReader;
  /** onnxruntime options of the region sessions (default regionSessionOptions(); the capture
   *  memory benchmark compares others). */
  sessionOptions?: ort.InferenceSession.SessionOptions;
}

/**
 * Replaces the external-data initializers of a region subgraph by their bytes read from `reader`
 * (each tensor by its own reference); returns the bytes read, to hand back with reader.release().
 */
export async function inlineRegionWeights(sub: ModelProto, reader: TensorReader): Promise<number> {
  const inits = sub.graph!.initializer!;
  let bytes = 0;
  try {
    for (let i = 0; i < inits.length; i++) {
      const t = inits[i]!;
      if (!isExternal(t)) continue;
      const rawData = await reader.readTensor(t);
      bytes += rawData.length;
      inits[i] = { ...tensorHeader(t), rawData };
    }
  } catch (e) {
    reader.release(bytes);
    throw e;
  }
  return bytes;
}

/** inlineRegionWeights, returning the subgraph (for callers that don't account bytes). */
export async function inlineExternalWeights(sub: ModelProto, reader: TensorReader): Promise<ModelProto> {
  await inlineRegionWeights(sub, reader);
  return sub;
}

/**
 * onnxruntime options of every region session.
 *
 * - The CPU memory arena (grown in doubling chunks, kept until the session is released) and the
 *   memory pattern (one planned buffer for all of a run's intermediates, sized on the first run)
 *   are off. A region session runs a handful of batches and is released, so neither pays back,
 *   and on a 1B-class block they were the peak of the whole job. Block 0's four captures of the
 *   22-block scale model at 4 × 512 tokens, outside RSS sampler, glibc hugetlb on: 1702 / 1821
 *   MiB with both on, 1228 / 1238 MiB with both off. The Hessians are the same to the last bit,
 *   and the captures are no slower.
 * - Intra-op threads = the physical cores (src/runtime/threads.ts). onnxruntime's Linux default
 *   of half the logical processors ran every block session on one thread of this 2-core machine.
 *   Two threads: the same captures in 8.1–10.8 s instead of 12.2–13.5 s, bit-identical Hessians.
 *
 * docs/pipeline.md has the measurements.
 */
export function regionSessionOptions(): ort.InferenceSession.SessionOptions {
  const threads = sessionThreads();
  return { logSeverityLevel: 3, enableCpuMemArena: false, enableMemPattern: false, ...(threads ? { intraOpNumThreads: threads } : {}) };
}

/**
 * Opens a session on `sub` and drops the subgraph's initializers (the session holds its own copy).
 * The weights read for it are collected before onnxruntime copies them (a block's weights exist
 * once in the serialized model and once or twice in onnxruntime while the session is created:
 * without the collection the read copy was a third), and the serialized model right after.
 */
async function openRegionSession(sub: ModelProto, options: BlockStreamOptions): Promise<ort.InferenceSession> {
  let bytes: Uint8Array | undefined = encodeModel(sub);
  const size = bytes.length;
  sub.graph!.initializer = [];
  collectGarbage(size);
  try {
    const choice = await createSessionWithFallback(bytes, options.executionProviders, options.sessionOptions ?? regionSessionOptions());
    options.onExecutionProvider?.({ used: choice.used, tried: choice.tried });
    return choice.session;
  } finally {
    bytes = undefined;
    collectGarbage(size);
  }
}

export class BlockStream {
  /** Region forwards run so far. */
  forwards = 0;
  private readonly cache: ActivationCache;
  /** Index of the region whose inputs the cache holds (0 = prelude, not yet run). */
  private next = 0;

  private constructor(
    readonly split: BlockSplit,
    private readonly windows: TokenWindows,
    private readonly options: BlockStreamOptions,
  ) {
    const batches: CalibrationBatch[] = [];
    for (let i = 0; i < windows.count; i += options.batch) batches.push({ start: i, count: Math.min(options.batch, windows.count - i) });
    this.cache = new ActivationCache(batches, split.idsDependent, options.spill);
  }

  /** Plans the split of `model`; an error string when the graph can't be cut into blocks. */
  static open(model: ModelProto, layers: readonly LinearLayer[], windows: TokenWindows, options: BlockStreamOptions): { ok: BlockStream } | { err: string } {
    const split = splitBlocks(model, layers);
    if ('err' in split) return split;
    return { ok: new BlockStream(split.ok, windows, options) };
  }

  get blockRegions(): GraphRegion[] {
    return this.split.regions.filter((r) => r.kind === 'block');
  }

  /** Regions in graph order: prelude, blocks, tail. */
  get regions(): readonly GraphRegion[] {
    return this.split.regions;
  }

  /** The region whose inputs are cached now. */
  get current(): GraphRegion {
    return this.split.regions[this.next]!;
  }

  /** Runs the prelude (embedding, mask, rotary tables) once: the inputs of the first block. */
  async begin(model: ModelProto, onBatch?: (done: number, total: number) => void): Promise<void> {
    if (this.next !== 0) throw new Error('internal: the block stream has already begun');
    await this.forward(this.split.regions[0]!, model, 'prelude', undefined, onBatch);
  }

  /**
   * One forward of the current block region with Hessian-capture outputs for `requests`;
   * with `advance` the same forward also produces the next block's inputs (one-shot mode).
   */
  async capture(
    model: ModelProto,
    layers: readonly LinearLayer[],
    requests: readonly CaptureRequest[],
    opts: { advance?: boolean; onBatch?(done: number, total: number): void } = {},
  ): Promise<Map<string, CapturedStats>> {
    const region = this.current;
    const acc = new StatsAccumulator(requests);
    await this.forward(region, model, opts.advance ? 'capture+advance' : 'capture', { layers, requests, acc }, opts.onBatch);
    return acc.finish(this.windows.count);
  }

  /** One forward of the current block region: its outputs become the cached inputs of the next. */
  async advance(model: ModelProto, onBatch?: (done: number, total: number) => void): Promise<void> {
    await this.forward(this.current, model, 'advance', undefined, onBatch);
  }

  /** Reads a region subgraph's weights from the store into it and opens its session; the weights
   *  are handed back if the session can't be opened (else by the caller, with `held`). */
  private async openWithWeights(sub: ModelProto): Promise<{ session: ort.InferenceSession; held: number }> {
    const held = this.options.weights ? await inlineRegionWeights(sub, this.options.weights) : 0;
    try {
      return { session: await openRegionSession(sub, this.options), held };
    } catch (e) {
      this.options.weights?.release(held);
      throw e;
    }
  }

  /**
   * Runs the tail (final norm, lm_head) on the cached outputs of the last block with the in-graph
   * NLL head (src/onnx/nll.ts): the summed NLL of targets 1 … seqlen − 1, per window.
   */
  async tailNll(model: ModelProto, onBatch?: (done: number, total: number) => void): Promise<Float64Array> {
    const region = this.current;
    if (region.kind !== 'tail') throw new Error('internal: the block stream is not at the tail');
    const logits = (model.graph?.output ?? []).find((o) => o.name === 'logits');
    if (!logits) throw new Error('internal: the model has no "logits" output');
    const types = new Map(region.reads.map((r) => [r, elementTypeOf(this.cache.typeOf(r))]));
    const sub = regionModel(model, region, types, ['logits']);
    const held = this.options.weights ? await inlineRegionWeights(sub, this.options.weights) : 0;
    // The head reads the targets from input_ids, which the tail itself doesn't.
    const ids = (model.graph?.input ?? []).find((v) => v.name === 'input_ids');
    if (!ids) throw new Error('internal: the model has no "input_ids" input');
    if (!sub.graph!.input!.some((v) => v.name === 'input_ids')) sub.graph!.input = [...sub.graph!.input!, ids];
    let session: ort.InferenceSession;
    try {
      const head = addNllHead(sub, { dropLogits: true });
      sub.graph!.initializer = []; // the head's graph holds the weights until its session exists
      session = await openRegionSession(head, this.options);
    } catch (e) {
      this.options.weights?.release(held);
      throw e;
    }
    const { windows } = this;
    const sums = new Float64Array(windows.count);
    try {
      const graphInputs = session.inputNames.filter((n) => n === 'input_ids' || region.graphInputs.includes(n));
      for (let b = 0; b < this.cache.batches.length; b++) {
        throwIfAborted(this.options.signal);
        const { start, count } = this.cache.batches[b]!;
        const feeds = await this.batchFeeds(session, graphInputs, region, b);
        const out = await session.run(feeds, ['token_nll']);
        const nll = out.token_nll!.data as Float32Array;
        const per = windows.seqlen - 1;
        for (let w = 0; w < count; w++) {
          let sum = 0;
          for (let j = 0; j < per; j++) sum += nll[w * per + j]!;
          sums[start + w] = sum;
        }
        onBatch?.(start + count, windows.count);
      }
    } finally {
      await session.release();
      this.options.weights?.release(held);
    }
    this.forwards++;
    this.options.onForward?.(region, 'advance');
    return sums;
  }

  /**
   * Runs the tail (final norm, lm_head) on the cached outputs of the last block and hands each
   * batch's graph `outputs` (e.g. logits) to `onBatch` (the tensors are valid during the call).
   */
  async tailOutputs(model: ModelProto, outputs: readonly string[], onBatch: (batch: CalibrationBatch, out: Record<string, ort.Tensor>) => void | Promise<void>): Promise<void> {
    const region = this.current;
    if (region.kind !== 'tail') throw new Error('internal: the block stream is not at the tail');
    const types = new Map(region.reads.map((r) => [r, elementTypeOf(this.cache.typeOf(r))]));
    const sub = regionModel(model, region, types, [...outputs]);
    const { session, held } = await this.openWithWeights(sub);
    try {
      const graphInputs = session.inputNames.filter((n) => region.graphInputs.includes(n));
      for (let b = 0; b < this.cache.batches.length; b++) {
        throwIfAborted(this.options.signal);
        const out = await session.run(await this.batchFeeds(session, graphInputs, region, b), [...outputs]);
        try {
          await onBatch(this.cache.batches[b]!, out);
        } finally {
          for (const t of Object.values(out)) t.dispose();
        }
      }
    } finally {
      await session.release();
      this.options.weights?.release(held);
    }
    this.forwards++;
    this.options.onForward?.(region, 'advance');
  }

  /** Bytes of cached activations in memory and spilled to disk now. */
  cachedBytes(): { memory: number; disk: number } {
    return this.cache.bytes();
  }

  /** Bytes written to spill files so far. */
  get spilledBytes(): number {
    return this.cache.spilledTotal;
  }

  dispose(): void {
    this.cache.dispose();
  }

  /** Feeds of batch `b` for a region's session: the graph inputs it reads from the token
   *  windows (ids, mask, positions…) and its cached activations. */
  private async batchFeeds(session: ort.InferenceSession, graphInputs: string[], region: GraphRegion, b: number): Promise<Record<string, ort.Tensor>> {
    const { windows } = this;
    const { start, count } = this.cache.batches[b]!;
    const ids = windows.ids.subarray(start * windows.seqlen, (start + count) * windows.seqlen);
    const feeds: Record<string, ort.Tensor> = windowFeeds(session, graphInputs, ids, count, windows.seqlen);
    for (const r of region.reads) if (session.inputNames.includes(r)) feeds[r] = await this.cache.get(b, r);
    return feeds;
  }

  private async forward(
    region: GraphRegion,
    model: ModelProto,
    kind: ForwardKind,
    capture: { layers: readonly LinearLayer[]; requests: readonly CaptureRequest[]; acc: StatsAccumulator } | undefined,
    onBatch?: (done: number, total: number) => void,
  ): Promise<void> {
    throwIfAborted(this.options.signal);
    const advancing = kind !== 'capture';
    const types = new Map(region.reads.map((r) => [r, elementTypeOf(this.cache.typeOf(r))]));
    let sub = regionModel(model, region, types, advancing ? region.writes : []);
    let outputs = advancing ? [...region.writes] : [];
    let hessian: ReturnType<typeof addHessianCapture> | undefined;
    if (capture) {
      hessian = addHessianCapture(sub, capture.layers, {
        inputs: capture.requests.map((r) => r.input),
        maskInput: region.graphInputs.includes('attention_mask') ? 'attention_mask' : null,
        keepOutputs: advancing,
      });
      sub = hessian.model;
      outputs = [...outputs, ...StatsAccumulator.outputs(hessian, capture.requests)];
    }
    // An empty region with nothing to hand on (e.g. no prelude when the embedding op also holds
    // block 0's norm, as onnxruntime's EmbedLayerNormalization) has no session to run.
    if (outputs.length === 0 && region.end <= region.start) {
      this.forwards++;
      this.options.onForward?.(region, kind);
      if (advancing) this.next = this.split.regions.indexOf(region) + 1;
      return;
    }
    // This block's weights only, read now and handed back when its session is released.
    const { session, held } = await this.openWithWeights(sub);
    const { windows } = this;
    try {
      const graphInputs = session.inputNames.filter((n) => region.graphInputs.includes(n));
      for (let b = 0; b < this.cache.batches.length; b++) {
        throwIfAborted(this.options.signal);
        const { start, count } = this.cache.batches[b]!;
        const feeds = await this.batchFeeds(session, graphInputs, region, b);
        const out = await session.run(feeds, outputs);
        if (advancing) for (const w of region.writes) await this.cache.put(b, w, out[w]!);
        if (capture && hessian) capture.acc.add(hessian, out);
        onBatch?.(start + count, windows.count);
      }
    } finally {
      await session.release();
      this.options.weights?.release(held);
    }
    this.forwards++;
    this.options.onForward?.(region, kind);
    if (advancing) {
      const at = this.split.regions.indexOf(region);
      const live = new Set<string>();
      for (const r of this.split.regions.slice(at + 1)) for (const x of r.reads) live.add(x);
      await this.cache.retain(live);
      this.next = at + 1;
    }
  }
}
