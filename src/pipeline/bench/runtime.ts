// Runtime suite: the dense model against the packed (MatMulNBits, 4-bit) model in
// onnxruntime-node on the chosen execution provider — size on disk, session load time, prefill
// latency over a prompt, greedy decode speed with the KV-cache model, peak memory.
//
// The KV-cache model (model_with_past.onnx) is packed here with the SAME quantized weights as the
// compressed model.onnx: its linear layers are matched to the compressed model's by weight
// initializer name (else by decoder block and role), the integer codes are recovered as
// round(w / rowScale) from the simulated model's weights and the report's per-row scales (with
// groups or zero points, read back from the job's packed model instead: the report carries no
// per-group scales), and the pipeline's packed writer turns them into MatMulNBits nodes.
// A rotated job (A4/KV4) rotates the cache model with the same seed first.
import { stat } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { roundHalfEven } from '../../core/quantize';
import { findLinearLayers } from '../../onnx/linear';
import { unpackMatMulNBits } from '../../onnx/packed';
import { loadModel, type LoadedModel } from '../../onnx/load';
import { rotateModel } from '../../onnx/rotate';
import type { LinearLayer } from '../../onnx/types';
import { readLayerWeight64 } from '../../onnx/weights';
import { writeModel } from '../../onnx/write';
import type { RuntimeVariant, Stat } from '../../protocol/bench';
import type { CompressionReport } from '../../protocol/report';
import { createSessionWithFallback, platformProviders } from '../../runtime/providers';
import { packedModel, type PackedLayer } from '../transforms';
import { WorkingModel } from '../working';
import { runRuntimeProbe } from './runtimeProbe';
import { sig, summarize } from './stats';

export const SPARSITY_NOTE =
  "onnxruntime's MatMul and MatMulNBits kernels are dense: the pruned weights are stored and multiplied as zeros, " +
  'so 50% sparsity gives no speed-up (and no size reduction beyond the 4-bit packing) here. ' +
  'The sparse storage sizes below are computed byte counts of formats a sparse kernel would read, not measurements.';

/** Bytes on disk of a model: the .onnx file plus every external data file it references. */
export async function modelFootprint(modelPath: string): Promise<{ bytes: number; ops: Record<string, number>; loaded: LoadedModel }> {
  const loaded = await loadModel(modelPath);
  let bytes = loaded.fileBytes;
  const files = new Set<string>();
  for (const n of loaded.initializerNames()) {
    const e = loaded.initializerInfo(n)?.external;
    if (e) files.add(e.file);
  }
  for (const f of files) bytes += (await stat(f)).size;
  const ops: Record<string, number> = {};
  for (const node of loaded.model.graph?.node ?? []) {
    const op = node.opType ?? '';
    if (op === 'MatMul' || op === 'MatMulNBits' || op === 'Gemm') ops[op] = (ops[op] ?? 0) + 1;
  }
  return { bytes, ops, loaded };
}

/** Same layer in two graphs exported from one checkpoint: same weight initializer, else same block and role. */
export function matchLayer(target: LinearLayer, candidates: readonly LinearLayer[]): LinearLayer | undefined {
  return (
    candidates.find((c) => c.weightName === target.weightName) ??
    (target.block !== null && target.role !== 'other' ? candidates.find((c) => c.block === target.block && c.role === target.role) : undefined)
  );
}

/**
 * Writes `outPath`: `modelPath` (model.onnx or its KV-cache twin) with the compressed job's linear
 * layers packed as MatMulNBits by the pipeline's packed writer (the same one runCompression
 * uses). Returns a warning instead when a layer can't be matched or nothing could be packed.
 */
export async function packWithCompressedWeights(
  modelPath: string,
  report: CompressionReport,
  outPath: string,
  opts: { seed: number },
): Promise<{ path?: string; warning?: string; maxCodeError: number }> {
  const simulatedPath = report.outputs.simulated;
  if (!simulatedPath) return { warning: 'the compression wrote no simulated model to take the weights from', maxCodeError: 0 };
  const wbits = report.layers[0]?.wbits ?? 4;
  const qmax = 2 ** (wbits - 1);
  const groupSize = report.layers[0]?.groupSize ?? 0;
  const asymmetric = report.layers[0]?.asymmetric ?? false;
  const fromPacked = groupSize > 0 || asymmetric;
  if (fromPacked && !report.outputs.packed) return { warning: 'the compression wrote no packed model to take the group scales and zero points from', maxCodeError: 0 };
  const sim = await loadModel(simulatedPath);
  const target = await loadModel(modelPath);
  const packedJob = fromPacked ? await loadModel(report.outputs.packed!) : undefined;
  try {
    const simLayers = findLinearLayers(sim.model);
    const scalesByName = new Map(report.layers.map((l) => [l.name, l.rowScales]));
    const working = await WorkingModel.fromLoaded(target);
    if (report.options.rotated === true) {
      const r = rotateModel(working.proto, { seed: opts.seed });
      await working.replaceProto(r.model);
    }
    const packed: PackedLayer[] = [];
    let maxCodeError = 0;
    for (const layer of working.compressible().layers) {
      const src = matchLayer(layer, simLayers);
      if (src && packedJob) {
        const u = await unpackMatMulNBits(packedJob, src.name);
        if (!u) continue; // left dense in the compressed model too
        if (u.rows !== layer.outFeatures || u.cols !== layer.inFeatures) {
          return { warning: `layer ${layer.name} is ${layer.outFeatures}×${layer.inFeatures} in ${modelPath} but ${u.rows}×${u.cols} in the packed model`, maxCodeError };
        }
        // The packed blocks are the groups (groupSize > 0) or per-row values repeated per block.
        const groups = groupSize > 0 ? u.blocks : 1;
        const pick = (a: ArrayLike<number>) => Float64Array.from({ length: u.rows * groups }, (_, i) => a[groupSize > 0 ? i : i * u.blocks]!);
        packed.push({ layer, codes: u.codes, scales: pick(u.scales), ...(asymmetric ? { zeros: pick(u.zeros) } : {}), groupSize });
        continue;
      }
      const rowScales = src ? scalesByName.get(src.name) : undefined;
      if (!src || !rowScales) continue; // left dense in the compressed model too
      if (src.outFeatures !== layer.outFeatures || src.inFeatures !== layer.inFeatures) {
        return { warning: `layer ${layer.name} is ${layer.outFeatures}×${layer.inFeatures} in ${modelPath} but ${src.outFeatures}×${src.inFeatures} in the compressed model`, maxCodeError };
      }
      const w = await readLayerWeight64(sim, src); // [out, in] row-major
      const rows = layer.outFeatures;
      const cols = layer.inFeatures;
      const codes = new Int8Array(rows * cols);
      const scales = Float64Array.from(rowScales);
      for (let r = 0; r < rows; r++) {
        const s = scales[r]!;
        for (let c = 0; c < cols; c++) {
          const x = s > 0 ? w[r * cols + c]! / s : 0;
          const q = Math.max(-qmax, Math.min(qmax - 1, roundHalfEven(x)));
          maxCodeError = Math.max(maxCodeError, Math.abs(x - q));
          codes[r * cols + c] = q;
        }
      }
      packed.push({ layer, codes, scales, groupSize: 0 });
    }
    if (packed.length === 0) return { warning: `no linear layer of ${modelPath} matched the compressed model`, maxCodeError };
    const out = packedModel(working.proto, working.layers, packed, wbits);
    if (!out.model) return { warning: out.warning ?? 'the packed writer produced no model', maxCodeError };
    const model = out.model;
    await writeModel(model, outPath, { externalData: 'auto' });
    return { path: outPath, maxCodeError };
  } finally {
    await sim.close();
    await target.close();
    await packedJob?.close();
  }
}

// ---- onnxruntime feeds

type Meta = ort.InferenceSession.ValueMetadata;

function intTensor(meta: Meta | undefined, values: ArrayLike<number>, dims: number[]): ort.Tensor {
  if (meta && meta.isTensor && meta.type === 'int32') return new ort.Tensor('int32', Int32Array.from(values), dims);
  const a = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) a[i] = BigInt(values[i]!);
  return new ort.Tensor('int64', a, dims);
}

/** Feeds for a forward over `ids` after `past` cached positions; `cache` maps past input → tensor. */
function feedsFor(session: ort.InferenceSession, ids: ArrayLike<number>, past: number, cache?: Map<string, ort.Tensor>): Record<string, ort.Tensor> {
  const meta = new Map(session.inputMetadata.map((m) => [m.name, m]));
  const n = ids.length;
  const feeds: Record<string, ort.Tensor> = {};
  for (const name of session.inputNames) {
    if (name === 'input_ids') feeds[name] = intTensor(meta.get(name), ids, [1, n]);
    else if (name === 'attention_mask') feeds[name] = intTensor(meta.get(name), new Array<number>(past + n).fill(1), [1, past + n]);
    else if (name === 'position_ids') feeds[name] = intTensor(meta.get(name), Array.from({ length: n }, (_, i) => past + i), [1, n]);
    // An Optimum merged decoder picks its branch from this flag: with the cache once past > 0.
    else if (name === 'use_cache_branch') feeds[name] = new ort.Tensor('bool', Uint8Array.from([past > 0 ? 1 : 0]), [1]);
    else if (cache?.has(name)) feeds[name] = cache.get(name)!;
    else {
      const m = meta.get(name);
      const shape = m && m.isTensor ? m.shape : [];
      if (shape.length !== 4 || typeof shape[1] !== 'number' || typeof shape[3] !== 'number') {
        throw new Error(`can't feed "${name}" (shape [${shape.join(', ')}]); the runtime suite feeds input_ids, attention_mask, position_ids and past_key_values.* [batch, heads, past, head_dim]`);
      }
      const half = m && m.isTensor && m.type === 'float16';
      feeds[name] = new ort.Tensor(half ? 'float16' : 'float32', half ? new Uint16Array(0) : new Float32Array(0), [1, shape[1], 0, shape[3]]);
    }
  }
  return feeds;
}

/** Past input name → the output that carries its next value (past_key_values.0.key → present.0.key). */
export function presentNameOf(pastInput: string): string {
  return pastInput.replace(/^past_key_values\./, 'present.').replace(/^past\./, 'present.');
}

export interface VariantInput {
  label: 'dense' | 'packed';
  modelPath: string;
  pastModelPath?: string;
  executionProviders: readonly string[];
  prompt: Int32Array;
  decodeTokens: number;
  warmup: number;
  reps: number;
  threads?: number;
  signal?: AbortSignal;
}

async function openSession(modelPath: string, eps: readonly string[], threads?: number) {
  const options: ort.InferenceSession.SessionOptions = { logSeverityLevel: 3, graphOptimizationLevel: 'all' };
  if (threads) options.intraOpNumThreads = threads;
  return createSessionWithFallback(modelPath, eps, options);
}

/**
 * Measures one variant (dense or packed) in a fresh child process (runtimeProbe.ts): size, load,
 * prefill, decode with the cache, cache consistency and the child's peak memory.
 */
export async function measureVariant(input: VariantInput): Promise<RuntimeVariant> {
  const fp = await modelFootprint(input.modelPath);
  await fp.loaded.close();
  const pastFp = input.pastModelPath ? await modelFootprint(input.pastModelPath) : undefined;
  await pastFp?.loaded.close();
  const providers = platformProviders(input.executionProviders);
  if (!providers.includes('cpu')) providers.push('cpu');
  const probe = await runRuntimeProbe(
    {
      ortPath: require.resolve('onnxruntime-node'),
      modelPath: input.modelPath,
      pastModelPath: input.pastModelPath,
      providers,
      threads: input.threads,
      prompt: Array.from(input.prompt),
      decodeTokens: input.decodeTokens,
      warmup: input.warmup,
      reps: input.reps,
    },
    input.signal,
  );
  const prefillMs = summarize(probe.prefillMs);
  const result: RuntimeVariant = {
    label: input.label,
    modelPath: input.modelPath,
    pastModelPath: input.pastModelPath,
    fileBytes: fp.bytes,
    pastFileBytes: pastFp?.bytes,
    ops: fp.ops,
    loadMs: summarize(probe.loadMs),
    prefillMs,
    prefillTokensPerSecond: sig((input.prompt.length / prefillMs.median) * 1000),
    memory: { peakRssBytes: probe.peakRssBytes, baseRssBytes: probe.baseRssBytes, method: 'child-maxrss' },
    executionProvider: probe.used,
  };
  if (input.pastModelPath) {
    result.decodeMsPerToken = summarize(probe.decodeMsPerToken);
    result.decodeTokensPerSecond = sig(1000 / result.decodeMsPerToken.median);
    result.decodeCheck = { generated: probe.generated, finalPastLength: probe.finalPastLength };
    if (probe.cacheConsistencyMaxAbs !== undefined) result.cacheConsistencyMaxAbs = sig(probe.cacheConsistencyMaxAbs, 4);
  }
  return result;
}

/** One variant measured in two rounds: samples concatenated, the larger peak memory, the worst cache check. */
export function mergeVariants(a: RuntimeVariant, b: RuntimeVariant, promptTokens: number): RuntimeVariant {
  const merge = (x: Stat | undefined, y: Stat | undefined) => (x && y ? summarize([...x.samples, ...y.samples]) : (x ?? y));
  const out: RuntimeVariant = {
    ...a,
    loadMs: merge(a.loadMs, b.loadMs)!,
    prefillMs: merge(a.prefillMs, b.prefillMs)!,
    decodeMsPerToken: merge(a.decodeMsPerToken, b.decodeMsPerToken),
    memory: b.memory.peakRssBytes > a.memory.peakRssBytes ? b.memory : a.memory,
    cacheConsistencyMaxAbs: Math.max(a.cacheConsistencyMaxAbs ?? 0, b.cacheConsistencyMaxAbs ?? 0),
  };
  out.prefillTokensPerSecond = sig((promptTokens / out.prefillMs.median) * 1000);
  if (out.decodeMsPerToken) out.decodeTokensPerSecond = sig(1000 / out.decodeMsPerToken.median);
  if (a.cacheConsistencyMaxAbs === undefined && b.cacheConsistencyMaxAbs === undefined) delete out.cacheConsistencyMaxAbs;
  return out;
}

/**
 * Max |logit| difference between two models over the same prompt (all positions): the packed
 * model against the simulated one it was packed from should agree to float rounding.
 */
export async function logitsMaxAbsDiff(a: string, b: string, prompt: Int32Array, executionProviders: readonly string[]): Promise<number> {
  const ids = Array.from(prompt);
  const run = async (modelPath: string): Promise<Float32Array> => {
    const { session } = await openSession(modelPath, executionProviders);
    try {
      const out = await session.run(feedsFor(session, ids, 0), ['logits']);
      return Float32Array.from(out.logits!.data as Float32Array);
    } finally {
      await session.release();
    }
  };
  const x = await run(a);
  const y = await run(b);
  if (x.length !== y.length) return Number.POSITIVE_INFINITY;
  let maxAbs = 0;
  for (let i = 0; i < x.length; i++) maxAbs = Math.max(maxAbs, Math.abs(x[i]! - y[i]!));
  return sig(maxAbs, 4);
}

/** dense / packed time ratio of two medians (>1 = packed faster). */
export function speedRatio(dense: Stat | undefined, packed: Stat | undefined): number | undefined {
  if (!dense || !packed || !(packed.median > 0)) return undefined;
  return sig(dense.median / packed.median, 4);
}

/** Default KV-cache model beside a model: model_with_past.onnx (or NAME_with_past.onnx). */
export function defaultPastModel(modelPath: string): string[] {
  const dir = path.dirname(modelPath);
  const base = path.basename(modelPath).replace(/\.onnx$/i, '');
  return [path.join(dir, `${base}_with_past.onnx`), path.join(dir, 'model_with_past.onnx'), path.join(dir, 'decoder_with_past_model.onnx')];
}
