// Measured probes for the pre-flight estimate (src/pipeline/preflight.ts), on this machine:
//
// - block forwards: the prelude, block 0 and the tail (with the NLL head) are cut out of the
//   model (src/onnx/blocks.ts) with only their own weights read from disk, and each runs one
//   batch of the job's shape; session creation and run are timed apart, because every streamed
//   forward opens a session;
// - the core: compressLayer on every distinct layer shape with a reduced row count (two row
//   counts r₁ = 16 < r₂ = 64), on a random weight and a random SPD Hessian, and the time scaled linearly in
//   the rows: t(rows) = t(r₁) + (t(r₂) − t(r₁))·(rows − r₁)/(r₂ − r₁). The per-layer fixed part
//   (Cholesky/inverse of H, scale search) is in t(r₁); the per-row part (OBR's row solves, the
//   GPTQ sweep) scales with the rows.
import * as ort from 'onnxruntime-node';
import { compressLayer } from '../core/compress';
import { seededRandom } from '../core/random';
import { elementTypeOf, regionModel, splitBlocks, type GraphRegion } from '../onnx/blocks';
import type { LoadedModel } from '../onnx/load';
import { addNllHead } from '../onnx/nll';
import { encodeModel, type ModelProto } from '../onnx/proto';
import type { LinearLayer } from '../onnx/types';
import type { CompressOptions, RecipeName } from '../protocol/recipes';
import { windowFeeds } from '../runtime/lm';
import { createOrtBackend, type OrtMatrixBackend } from '../runtime/ortBackend';
import { createSessionWithFallback } from '../runtime/providers';
import { inlineExternalWeights } from './blockStream';
import { sparsityFor } from './job';

/** Seconds to open a region's session, extra seconds of its first runs, seconds per batch run after that. */
export interface RegionTiming {
  session: number;
  warmup: number;
  run: number;
}

/** Region timings by kind, at one batch of the job's shape. */
export interface ForwardProbe {
  batch: number;
  seqlen: number;
  prelude: RegionTiming;
  block: RegionTiming;
  /** The tail with the NLL head (evaluation only). */
  tail: RegionTiming;
  executionProvider: string;
}

/** Seconds of one streamed forward of a region over `windows` windows. */
export function forwardSeconds(t: RegionTiming, windows: number, batch: number, work = 1): number {
  return t.session + t.warmup + Math.ceil(windows / batch) * t.run * work;
}

/** A region of the loaded model as a model of its own, with its external weights read inline. */
export async function inlineRegion(loaded: LoadedModel, model: ModelProto, region: GraphRegion, types: ReadonlyMap<string, number>, outputs?: readonly string[]): Promise<ModelProto> {
  return inlineExternalWeights(regionModel(model, region, types, outputs), loaded);
}

/** Times prelude, block 0 and tail forwards on one batch of `batch` windows of `seqlen` tokens. */
export async function probeForward(loaded: LoadedModel, layers: readonly LinearLayer[], batch: number, seqlen: number, vocab: number, executionProviders: readonly string[]): Promise<ForwardProbe | undefined> {
  const model = loaded.model;
  const split = splitBlocks(model, layers);
  if ('err' in split) return undefined;
  const regions = split.ok.regions;
  const prelude = regions[0]!;
  const block = regions.find((r) => r.kind === 'block')!;
  const tail = regions[regions.length - 1]!;
  const ids = new Int32Array(batch * seqlen).map((_, i) => (i * 7919 + 13) % Math.max(2, vocab));
  const state = new Map<string, ort.Tensor>();
  let used = 'cpu';
  const time = async (region: GraphRegion, build: (types: Map<string, number>) => Promise<ModelProto>, outputs: string[]): Promise<RegionTiming> => {
    // An empty region (no prelude when the embedding op also holds block 0's norm) costs nothing.
    if (region.end <= region.start && outputs.length === 0) return { session: 0, warmup: 0, run: 0 };
    const types = new Map(region.reads.map((r) => [r, elementTypeOf(state.get(r)!.type)]));
    const sub = await build(types);
    const t0 = performance.now();
    const choice = await createSessionWithFallback(encodeModel(sub), executionProviders, { logSeverityLevel: 3 });
    const session = (performance.now() - t0) / 1000;
    used = choice.used;
    try {
      const names = choice.session.inputNames;
      const feeds: Record<string, ort.Tensor> = windowFeeds(choice.session, names.filter((n) => !state.has(n)), ids, batch, seqlen);
      for (const n of names) if (state.has(n)) feeds[n] = state.get(n)!;
      // The first runs of a session pay one-time set-up (memory arena, thread pool); every
      // streamed forward opens a new session, so it pays them too: `warmup` is that extra.
      const times: number[] = [];
      let out: ort.InferenceSession.OnnxValueMapType = {};
      for (let k = 0; k < 4; k++) {
        const t1 = performance.now();
        out = await choice.session.run(feeds, outputs);
        times.push((performance.now() - t1) / 1000);
      }
      const run = Math.min(times[2]!, times[3]!);
      const warmup = Math.max(0, times[0]! + times[1]! - 2 * run);
      for (const w of region.writes) if (out[w]) state.set(w, out[w] as ort.Tensor);
      return { session, warmup, run };
    } finally {
      await choice.session.release();
    }
  };
  const p = await time(prelude, (types) => inlineRegion(loaded, model, prelude, types), prelude.writes);
  const b = await time(block, (types) => inlineRegion(loaded, model, block, types), block.writes);
  // The tail reads the last block's hidden state: block 0's output stands in for it (same shape and type).
  const lastBlock = regions[regions.length - 2]!;
  const hidden = block.writes.find((w) => split.ok.idsDependent.has(w));
  if (hidden) for (const w of lastBlock.writes) if (split.ok.idsDependent.has(w)) state.set(w, state.get(hidden)!);
  let t: RegionTiming = { session: 0, warmup: 0, run: 0 };
  const hasHead = (model.graph?.output ?? []).some((o) => o.name === 'logits');
  if (hasHead && tail.reads.every((r) => state.has(r))) {
    t = await time(
      tail,
      async (types) => {
        const sub = await inlineRegion(loaded, model, tail, types, ['logits']);
        const idsInput = (model.graph?.input ?? []).find((v) => v.name === 'input_ids');
        if (idsInput && !sub.graph!.input!.some((v) => v.name === 'input_ids')) sub.graph!.input = [...sub.graph!.input!, idsInput];
        return addNllHead(sub, { dropLogits: true });
      },
      ['token_nll'],
    );
  }
  return { batch, seqlen, prelude: p, block: b, tail: t, executionProvider: used };
}

/** A random SPD matrix n×n: a positive diagonal plus a few random rank-one terms (timing only). */
function randomSpd(n: number, rand: () => number): Float64Array {
  const h = new Float64Array(n * n);
  for (let i = 0; i < n; i++) h[i * n + i] = 1 + rand();
  const v = new Float64Array(n);
  for (let k = 0; k < 4; k++) {
    for (let i = 0; i < n; i++) v[i] = rand() - 0.5;
    for (let i = 0; i < n; i++) {
      const vi = v[i]! / n;
      for (let j = 0; j < n; j++) h[i * n + j] += vi * v[j]!;
    }
  }
  return h;
}

/** Seconds of compressLayer for each distinct (rows, cols) shape and recipe, measured at reduced rows and scaled. */
export async function probeCore(
  layers: readonly LinearLayer[],
  recipes: readonly RecipeName[],
  options: CompressOptions,
  threads: number | undefined,
  probeRows: { r1: number; r2: number } = { r1: 16, r2: 64 },
): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const rand = seededRandom(1);
  // OBR recipes are timed with the job's solver (the batched one on onnxruntime by default).
  const batched = (options.solver ?? 'batched') === 'batched' && recipes.some((r) => r === 'obr-rtn' || r === 'obr-gptq');
  const backend: OrtMatrixBackend | undefined = batched ? await createOrtBackend({ executionProviders: options.executionProviders, threads }) : undefined;
  try {
    const shapes = new Map<string, { rows: number; cols: number }>();
    for (const l of layers) shapes.set(`${l.outFeatures}x${l.inFeatures}`, { rows: l.outFeatures, cols: l.inFeatures });
    for (const { rows, cols } of shapes.values()) {
      const hessian = randomSpd(cols, rand);
      const channelEnergy = new Float64Array(cols).map((_, j) => hessian[j * cols + j]!);
      for (const recipe of recipes) {
        const time = async (r: number): Promise<number> => {
          const weight = new Float64Array(r * cols).map(() => (rand() - 0.5) * 0.1);
          const t0 = performance.now();
          await compressLayer(
            { weight, rows: r, cols, hessian, channelEnergy },
            { method: recipe, sparsity: sparsityFor(recipe, options), wbits: options.wbits, groupSize: options.groupSize, asymmetric: options.asymmetric, alpha: options.alpha, damp: options.damp },
            { threads, ...(backend ? { backend } : { solver: 'exact' as const }) },
          );
          return (performance.now() - t0) / 1000;
        };
        const r1 = Math.min(rows, probeRows.r1);
        const r2 = Math.min(rows, probeRows.r2);
        await time(Math.min(rows, 4)); // warm-up: kernels compiled, worker threads started
        // Best of two at each row count: the probe shares the machine with whatever else runs.
        const t1 = Math.min(await time(r1), await time(r1));
        const t2 = r2 > r1 ? Math.min(await time(r2), await time(r2)) : t1;
        const perRow = r2 > r1 ? Math.max(0, (t2 - t1) / (r2 - r1)) : 0;
        out.set(`${recipe} ${rows}x${cols}`, t1 + perRow * (rows - r1));
      }
    }
  } finally {
    await backend?.release();
  }
  return out;
}
