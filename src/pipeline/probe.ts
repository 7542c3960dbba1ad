// Measured probes for the pre-flight estimate (src/pipeline/preflight.ts), on this machine.
//
// Everything is timed on a ONE-BLOCK CUT of the job's model: the prelude, decoder block 0 and the
// tail (final norm, lm_head), the tail reading block 0's output in place of the last block's
// (`oneBlockCut`), through a working store like the job's (src/onnx/store.ts: weights read from
// the source, changed ones in a working data file, each block session reading its own). The same
// code the job runs is timed on it, each stage the way the job runs it:
//
// - rotate: the streamed rotation (each weight read, rotated, written to the working data file)
//   and the streamed rotation check (dense and rotated cut on two windows, simulated on one),
//   timed apart;
// - calibrate: a BlockStream over the cut (rotated when the job rotates) on windows of the job's
//   calibration text at the job's batch: the prelude, one capture forward per input group of
//   block 0 and the advance forward. Each forward runs two batches, so its time splits into a
//   fixed part (subgraph, serialization, session opening, first-run set-up) and a per-batch part;
// - evaluate: the same for the dense cut and the simulated (fake-quant) rotated cut, with the
//   tail's NLL head;
// - write: the simulated and packed cut written as the write stage writes them, the packing of
//   block 0's layers timed apart from the two writes;
// - compress: compressLayer on every distinct layer shape of the job with a reduced row count (two
//   row counts r₁ < r₂), on the cut's real (rotated) weight rows and the Hessian captured above,
//   with the job's solver; t(rows) = t(r₁) + (t(r₂) − t(r₁))·(rows − r₁)/(r₂ − r₁).
//
// How these scale to the whole job is in preflight.ts (`stageSeconds`).
import { mkdtemp, rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BACKEND_LOSS_MIN_WORK, compressLayer } from '../core/compress';
import { seededRandom } from '../core/random';
import { splitBlocks } from '../onnx/blocks';
import { findLinearLayers } from '../onnx/linear';
import { describeInitializer, wrapModel, type LoadedModel, type TensorReader } from '../onnx/load';
import { cloneModel } from '../onnx/graph';
import { type ModelProto, type NodeProto, type TensorProto } from '../onnx/proto';
import { elementCount, elementSize, tensorDims } from '../onnx/tensor';
import { rotateModelStreamed } from '../onnx/rotate';
import { readLayerWeight64 } from '../onnx/weights';
import { writeModel } from '../onnx/write';
import { countersSince, osCounters } from './osCounters';
import type { AttentionGeometry, LinearLayer } from '../onnx/types';
import type { CompressOptions, RecipeName } from '../protocol/recipes';
import type { TokenWindows } from '../runtime/text';
import { createOrtBackend, type OrtMatrixBackend } from '../runtime/ortBackend';
import { BlockStream } from './blockStream';
import { WeightStore } from '../onnx/store';
import { requestsFor, type CapturedStats } from './capture';
import { checkRotationStreamed } from './rotationCheck';
import { DEFAULT_ACTIVATION_CACHE_MIB, sparsityFor } from './job';
import { packedModel, withFakeQuant } from './transforms';
import { COMPRESSED_ROLES } from './working';
import { memMark } from './memlog';

/**
 * Windows a probed forward runs: the job's own count (of calibration or evaluation windows) up to
 * four batches. A forward's cost is not proportional to its windows — each opens a session and
 * pays a first run — so it is timed at the job's own batches where they are few (measured, not
 * scaled), and split into a fixed and a per-batch part only to scale beyond four batches.
 */
export function probeWindows(windows: number, batch: number): number {
  return Math.max(1, Math.min(windows, 4 * batch));
}

/** Seconds of one streamed forward of a region: `fixed` once, `perBatch` per full batch. */
export interface ForwardCost {
  fixed: number;
  perBatch: number;
}

/** Seconds of a forward of `windows` windows at `batch` windows per batch (a partial batch costs its share). */
export function forwardSeconds(c: ForwardCost, windows: number, batch: number): number {
  return windows > 0 ? c.fixed + c.perBatch * (windows / batch) : 0;
}

/**
 * Splits a forward's time into fixed and per-batch parts from the times at which its batches
 * finished (`marks`, after `start`; the forward returned at `end`) and the windows in each batch
 * (`counts`; all full when omitted): the per-window part is the median over the batches after the
 * first of their time per window (robust to one batch slowed by other work on the machine), times
 * `batch` for a full batch; the rest (subgraph, weights read and session opened before the first
 * batch, the first run's extra, release after the last) is fixed. So fixed + perBatch·(windows run
 * / batch) is exactly the measured time, whatever the batches were.
 */
export function splitForward(start: number, marks: readonly number[], end: number, counts?: readonly number[], batch?: number): ForwardCost {
  const total = Math.max(0, end - start);
  const full = batch ?? Math.max(1, ...(counts ?? [1]));
  const count = (i: number) => counts?.[i] ?? full;
  if (marks.length < 2) return { fixed: 0, perBatch: marks.length === 1 ? (total * full) / count(0) : total };
  const perWindow = marks
    .slice(1)
    .map((m, i) => (m - marks[i]!) / count(i + 1))
    .sort((a, b) => a - b);
  const mid = perWindow.length >> 1;
  const perBatch = Math.max(0, (perWindow.length % 2 ? perWindow[mid]! : (perWindow[mid - 1]! + perWindow[mid]!) / 2) * full);
  const windows = marks.reduce((s, _, i) => s + count(i), 0);
  return { fixed: Math.max(0, total - (windows / full) * perBatch), perBatch };
}

/**
 * A forward timed on one batch only (`splitForward` put all of it in the per-batch part): split it
 * with `perBatch` measured on the same block elsewhere (the calibration advance, two batches or
 * more), the rest fixed — so that the fixed part (weights read, session opened) can be scaled per
 * block. Unchanged when it was already split or there is no per-batch measurement.
 */
export function resplitOneBatch(c: ForwardCost, windows: number, batch: number, perBatch: number): ForwardCost {
  if (c.fixed > 0 || !(perBatch > 0)) return c;
  const total = c.perBatch * (windows / batch);
  const compute = Math.min(total, perBatch * (windows / batch));
  return { fixed: total - compute, perBatch: compute / (windows / batch) };
}

/** Streamed evaluation forwards of one model: prelude, one block, the tail with the NLL head. */
export interface EvalForwards {
  prelude: ForwardCost;
  block: ForwardCost;
  tail: ForwardCost;
}

/** Everything measured on the one-block cut. */
export interface CutProbe {
  batch: number;
  seqlen: number;
  executionProvider: string;
  /** Weight bytes of the cut (prelude + block 0 + tail) and of its block 0. */
  cutWeightBytes: number;
  blockWeightBytes: number;
  /** Bytes read from the model file for the cut's weights, and the seconds that took. */
  readBytes: number;
  readSeconds: number;
  /** The rotation stage on the cut (absent when the job doesn't rotate): transform + check. */
  rotateSeconds?: number;
  /** Its two parts: the streamed rotation of the cut's weights (read, rotate, store) and the streamed check (three passes through the cut). */
  rotateTransformSeconds?: number;
  rotateCheckSeconds?: number;
  /** Of the check: block 0's forwards in its three passes (what each further block adds). */
  rotateCheckBlockSeconds?: number;
  calibrate: { prelude: ForwardCost; captures: ForwardCost[]; advance: ForwardCost };
  evalDense: EvalForwards;
  evalCompressed: EvalForwards;
  /** Writing the cut's simulated + packed models (the sum of the three parts below). */
  writeSeconds: number;
  /**
   * The write stage's copy path measured at size: bytes of the two models written (the simulated
   * model of a slice of the job's model — the cut plus further blocks' weights up to
   * WRITE_PROBE_BYTES, or the whole model when smaller — and the packed cut: .onnx + external
   * data) and the seconds those two writes took (read from the store, written, fsync, rename).
   */
  writeProbeBytes?: number;
  writeProbeSeconds?: number;
  /** Bytes of the weights the simulated graph holds that the source doesn't (the rotation's
   *  online Hadamard matrices, the fake-quant constants), on the cut: both output models hold them. */
  writeAddedBytes?: number;
  /** Its parts: the simulated model written, block 0's layers packed (MatMulNBits built and
   *  stored), the packed model written. */
  writeSimulatedSeconds?: number;
  writePackSeconds?: number;
  writePackedSeconds?: number;
  /** Hessians captured on block 0 by layer input, and the cut's (rotated) layers, for the core probe. */
  stats: Map<string, CapturedStats>;
  layers: LinearLayer[];
  /** The model the core probe reads weights from (the rotated cut when the job rotates). */
  weightsModel: ModelProto;
}

/**
 * The model cut to its prelude, decoder block 0 and tail: the tail's reads of the last block's
 * outputs are renamed to block 0's (same order; a block's outputs are the hidden state and
 * whatever else crosses to the next block), graph outputs reduced to `logits`. Undefined when the
 * graph can't be cut into blocks this way (the estimate then has no measured forwards).
 */
export function oneBlockCut(model: ModelProto, layers: readonly LinearLayer[]): { model: ModelProto; blockInitializers: Set<string> } | undefined {
  const split = splitBlocks(model, layers);
  if ('err' in split) return undefined;
  const regions = split.ok.regions;
  const blocks = regions.filter((r) => r.kind === 'block');
  const first = blocks[0];
  const last = blocks[blocks.length - 1];
  const tail = regions[regions.length - 1];
  if (!first || !last || !tail || tail.kind !== 'tail') return undefined;
  if (!(model.graph?.output ?? []).some((o) => o.name === 'logits')) return undefined;
  const graph = model.graph!;
  const nodes = graph.node ?? [];
  // Block 0 may also write what every block reads (mask, rotary tables computed in it), so the
  // last block's outputs are matched to block 0's by their producer's place counted from the
  // region's end (decoder blocks repeat the same nodes), checked by op type and output slot.
  const rename = new Map<string, string>();
  if (last !== first) {
    const producerAt = (w: string, r: typeof first): number => {
      for (let i = r.end - 1; i >= r.start; i--) if ((nodes[i]!.output ?? []).includes(w)) return i;
      return -1;
    };
    for (const w of last.writes) {
      if (!tail.reads.includes(w)) continue;
      const p = producerAt(w, last);
      const q = first.end - (last.end - p);
      if (p < 0 || q < first.start) return undefined;
      const slot = nodes[p]!.output!.indexOf(w);
      const twin = nodes[q]!.output?.[slot];
      if (nodes[q]!.opType !== nodes[p]!.opType || !twin || !first.writes.includes(twin)) return undefined;
      rename.set(w, twin);
    }
  }
  const kept: NodeProto[] = [];
  for (let i = 0; i < nodes.length; i++) {
    if (i < first.end) kept.push(nodes[i]!);
    else if (i >= tail.start && i < tail.end) {
      const n = nodes[i]!;
      kept.push({ ...n, input: (n.input ?? []).map((x) => rename.get(x) ?? x) });
    }
  }
  // Everything the kept nodes read must come from a kept node, an initializer or a graph input.
  const produced = new Set<string>([...(graph.input ?? []).map((v) => v.name ?? ''), ...(graph.initializer ?? []).map((t) => t.name ?? ''), '']);
  for (const n of kept) {
    for (const x of n.input ?? []) if (!produced.has(x)) return undefined;
    for (const o of n.output ?? []) produced.add(o);
  }
  const read = new Set<string>();
  for (const n of kept) for (const x of n.input ?? []) read.add(x);
  const out = cloneModel(model);
  const g = out.graph!;
  g.node = kept;
  g.initializer = (graph.initializer ?? []).filter((t) => read.has(t.name ?? ''));
  g.output = (graph.output ?? []).filter((o) => o.name === 'logits');
  g.valueInfo = (graph.valueInfo ?? []).filter((v) => produced.has(v.name ?? ''));
  const blockInitializers = new Set<string>();
  for (let i = first.start; i < first.end; i++) for (const x of nodes[i]!.input ?? []) if ((graph.initializer ?? []).some((t) => t.name === x)) blockInitializers.add(x);
  return { model: out, blockInitializers };
}

/** Stored bytes of the named initializers (inline or external). */
function initializerBytes(loaded: LoadedModel, names: Iterable<string>): number {
  let s = 0;
  for (const n of names) s += loaded.initializerInfo(n)?.byteLength ?? 0;
  return s;
}

/** OBR_PROBE_TRACE=1: every probe measurement to stderr (raw batch times, for checking the estimate's formulas). */
const TRACE = process.env.OBR_PROBE_TRACE === '1';
function trace(what: string, data: unknown): void {
  if (TRACE) process.stderr.write(`probe-trace ${what} ${JSON.stringify(data)}\n`);
}

/**
 * Warm repetitions of a cheap probe (the rotation and the write of a small cut): the job runs
 * each stage once, warm and on a machine whose load drifts, so the probe's estimate of it is the
 * median of a few warm runs — one run slowed by other work does not become the estimate.
 */
const WARM_RUNS = 3;

/** Per-part median of repeated timings (each run a record of seconds). */
export function medianParts<T extends Record<string, number>>(runs: readonly T[]): T {
  const out = {} as Record<string, number>;
  for (const k of Object.keys(runs[0]!)) {
    const v = runs.map((r) => r[k]!).sort((a, b) => a - b);
    const mid = v.length >> 1;
    out[k] = v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  }
  return out as T;
}

/** Times one BlockStream call whose batches report through `onBatch` (windows done so far). */
async function timeForward(run: (onBatch: (done: number) => void) => Promise<unknown>, batch: number, label = 'forward'): Promise<ForwardCost> {
  const marks: number[] = [];
  const counts: number[] = [];
  let before = 0;
  const os0 = osCounters();
  const start = performance.now();
  await run((done) => {
    marks.push(performance.now());
    counts.push(done - before);
    before = done;
  });
  const end = performance.now();
  const cost = scale(splitForward(start, marks, end, counts, batch), 1 / 1000);
  trace(label, { marks: marks.map((m) => Number(((m - start) / 1000).toFixed(3))), counts, end: Number(((end - start) / 1000).toFixed(3)), os: countersSince(os0), ...cost });
  return cost;
}

function scale(c: ForwardCost, f: number): ForwardCost {
  return { fixed: c.fixed * f, perBatch: c.perBatch * f };
}

/** Block 0's compressible layers grouped by input, in graph order (the job's capture groups). */
function block0Groups(layers: readonly LinearLayer[]): LinearLayer[][] {
  const mine = layers.filter((l) => l.block === 0 && COMPRESSED_ROLES.has(l.role) && !l.weightShared);
  const groups = new Map<string, LinearLayer[]>();
  for (const l of mine) {
    if (!groups.has(l.inputName)) groups.set(l.inputName, []);
    groups.get(l.inputName)!.push(l);
  }
  return [...groups.values()].sort((a, b) => Math.min(...a.map((l) => l.order ?? 0)) - Math.min(...b.map((l) => l.order ?? 0)));
}

/** Streamed perplexity forwards of `model` (prelude, block 0, tail with the NLL head). */
async function timeEvaluation(model: ModelProto, windows: TokenWindows, batch: number, eps: readonly string[], weights: TensorReader): Promise<{ forwards: EvalForwards; used: string }> {
  const s = BlockStream.open(model, findLinearLayers(model), windows, { executionProviders: eps, batch, weights, onExecutionProvider: (c) => (used = c.used) });
  let used = 'cpu';
  if ('err' in s) throw new Error(`internal: the cut model can't be streamed (${s.err})`);
  try {
    const prelude = await timeForward((b) => s.ok.begin(model, b), batch, 'eval prelude');
    const block = await timeForward((b) => s.ok.advance(model, b), batch, 'eval block');
    const tail = await timeForward((b) => s.ok.tailNll(model, b), batch, 'eval tail');
    return { forwards: { prelude, block, tail }, used };
  } finally {
    s.ok.dispose();
  }
}

export interface CutProbeOptions {
  options: CompressOptions;
  batch: number;
  /** Windows of the job's calibration text (`probeWindows` of its samples). */
  windows: TokenWindows;
  /** Windows the evaluation forwards are timed on (`probeWindows` of the job's evaluation windows; default `windows`). */
  evalWindows?: TokenWindows;
  /** Where the model's config.json lives (geometry for the rotation). */
  modelPath: string;
  geometry?: AttentionGeometry;
  configGeometry?: AttentionGeometry;
  evaluate: boolean;
}

/**
 * Bytes the write probe writes at least (the whole model when smaller). The write stage streams
 * every weight of the model twice (simulated and packed model) through the page cache to the
 * disk with an fsync per file: timed on the one-block cut alone (351 MB of the scale model's
 * 2.2 GB) the per-byte rate was 2–3× the job's (docs/bench-scale.md, estimates): a few hundred MB
 * written and synced fit the caches that GBs overrun, and a short write is at the mercy of one
 * busy second. A gibibyte is a few seconds of the pre-flight on a model that big.
 */
export const WRITE_PROBE_BYTES = 2 ** 30;

/**
 * `model` with further initializers of `full` appended — those it doesn't hold, in graph order,
 * up to `target` stored bytes in all (`bytesOf` gives an initializer's stored bytes): the write
 * probe's slice of the job's model, so that its bytes go through the write stage's own copy path
 * (the untouched blocks' weights read from where the job reads them, written, synced). The graph
 * is written only, never run.
 */
export function writeSlice(model: ModelProto, full: ModelProto, bytesOf: (name: string) => number, target: number): { model: ModelProto; bytes: number } {
  const out = cloneModel(model);
  const inits = out.graph!.initializer ?? [];
  const have = new Set(inits.map((t) => t.name ?? ''));
  let bytes = inits.reduce((s, t) => s + bytesOf(t.name ?? ''), 0);
  for (const t of full.graph?.initializer ?? []) {
    if (bytes >= target) break;
    const name = t.name ?? '';
    if (have.has(name)) continue;
    inits.push(t);
    have.add(name);
    bytes += bytesOf(name);
  }
  out.graph!.initializer = inits;
  return { model: out, bytes };
}

/** Runs the cut probes; undefined when the model can't be cut into one block (see oneBlockCut). */
export async function probeCut(loaded: LoadedModel, all: readonly LinearLayer[], o: CutProbeOptions): Promise<CutProbe | undefined> {
  const { options, batch, windows } = o;
  const eps = options.executionProviders;
  const found = oneBlockCut(loaded.model, all);
  if (!found) return undefined;
  const names = (found.model.graph!.initializer ?? []).map((t) => t.name ?? '');
  const cutWeightBytes = initializerBytes(loaded, names);
  const blockWeightBytes = initializerBytes(loaded, found.blockInitializers);
  const dir = await mkdtemp(path.join(tmpdir(), 'obr-probe-'));
  // The job's working store (src/onnx/store.ts): weights read from the source, changed ones
  // written to a working data file, each block session reading its own weights from it.
  const store = new WeightStore(loaded.dir, path.join(dir, 'working.data'));
  try {
    // Weights read inline from the model file, as the rotation stage reads them (→ read throughput).
    const t0 = performance.now();
    // Only the bytes are kept: the inline copy (hundreds of MB with a 32000-token vocabulary's
    // embedding and head) was held through the whole probe.
    const readBytes = (await store.inlined(found.model)).bytes;
    const readSeconds = (performance.now() - t0) / 1000;
    store.release(readBytes);
    memMark('probe: cut read');

    const rotates = options.abits < 16 || options.kvbits < 16;
    let calibModel = found.model;
    let rotateSeconds: number | undefined;
    let rotateTransformSeconds: number | undefined;
    let rotateCheckSeconds: number | undefined;
    let rotateCheckBlockSeconds: number | undefined;
    if (rotates) {
      const halfPrecision = findLinearLayers(found.model).some((l) => l.dtype !== 'float32');
      // As the rotate stage: the rotation tensor by tensor through the store (rotateModelStreamed),
      // then the check streamed through the blocks (dense and rotated on two windows, the
      // simulated graph on one), each timed: the transform scales with weight bytes, the check
      // with the blocks (stageSeconds).
      const rotate = async (): Promise<{ model: ModelProto; transform: number; check: number; checkBlock: number }> => {
        const t = performance.now();
        const r = await rotateModelStreamed(found.model, { seed: options.seed, geometry: o.geometry, configGeometry: o.configGeometry }, store);
        const stored = await store.externalize(r.model);
        const t1 = performance.now();
        // Each pass's block-0 forward, timed from the end of the forward before it.
        let lastEnd = t1;
        const blockForwards: number[] = [];
        await checkRotationStreamed(found.model, stored, windows, {
          onForward: (region) => {
            const now = performance.now();
            if (region.kind === 'block') blockForwards.push((now - lastEnd) / 1000);
            lastEnd = now;
          },
          executionProviders: eps,
          abits: options.abits,
          kvbits: options.kvbits,
          halfPrecision,
          weights: store,
          spillDir: dir,
          activations: { budgetBytes: DEFAULT_ACTIVATION_CACHE_MIB * 2 ** 20, spillDir: path.join(dir, 'activations-rotation') },
        });
        return { model: stored, transform: (t1 - t) / 1000, check: (performance.now() - t1) / 1000, checkBlock: blockForwards.reduce((a, b) => a + b, 0) };
      };
      // The job rotates with its code already warm (the pre-flight ran in the same process): on a
      // small cut the first run's JIT and onnxruntime set-up would dominate, so it is timed warm
      // (WARM_RUNS more runs, the median of each part).
      const first = await rotate();
      let r = first;
      if (cutWeightBytes < 64 * 2 ** 20) {
        const warm: Array<typeof first> = [];
        for (let i = 0; i < WARM_RUNS; i++) warm.push(await rotate());
        r = { ...medianParts(warm.map(({ transform, check, checkBlock }) => ({ transform, check, checkBlock }))), model: warm[warm.length - 1]!.model };
      }
      rotateSeconds = r.transform + r.check;
      rotateTransformSeconds = r.transform;
      rotateCheckSeconds = r.check;
      rotateCheckBlockSeconds = r.checkBlock;
      calibModel = r.model;
      trace('rotate', { transform: r.transform, check: r.check, checkBlock: r.checkBlock, cutWeightBytes });
      memMark('probe: rotated');
    } else calibModel = await store.externalize(found.model);
    const layers = findLinearLayers(calibModel);
    let used = 'cpu';
    const s = BlockStream.open(calibModel, layers, windows, { executionProviders: eps, batch, weights: store, onExecutionProvider: (c) => (used = c.used) });
    if ('err' in s) return undefined;
    const stats = new Map<string, CapturedStats>();
    let calibrate: CutProbe['calibrate'];
    try {
      const prelude = await timeForward((b) => s.ok.begin(calibModel, b), batch, 'calibrate prelude');
      const captures: ForwardCost[] = [];
      for (const group of block0Groups(layers)) {
        let got: Map<string, CapturedStats> = new Map();
        captures.push(await timeForward(async (b) => (got = await s.ok.capture(calibModel, group, requestsFor(group), { onBatch: b })), batch, `calibrate capture ${group.map((l) => l.role).join(',')}`));
        for (const [k, v] of got) stats.set(k, v);
      }
      const advance = await timeForward((b) => s.ok.advance(calibModel, b), batch, 'calibrate advance');
      calibrate = { prelude, captures, advance };
      memMark('probe: calibrated');
    } finally {
      s.ok.dispose();
    }

    const fakeQuant = () => (rotates ? withFakeQuant(calibModel, { abits: options.abits, kvbits: options.kvbits }).model : calibModel);
    const simulated = fakeQuant();
    let evalDense: EvalForwards = { prelude: { fixed: 0, perBatch: 0 }, block: { fixed: 0, perBatch: 0 }, tail: { fixed: 0, perBatch: 0 } };
    let evalCompressed = evalDense;
    if (o.evaluate) {
      // The dense model reads its weights from the source file, the simulated one from the store.
      const ew = o.evalWindows ?? windows;
      evalDense = (await timeEvaluation(found.model, ew, batch, eps, loaded)).forwards;
      evalCompressed = (await timeEvaluation(simulated, ew, batch, eps, store)).forwards;
      // One batch can't be split; the block's per-batch arithmetic is the calibration advance's.
      const per = calibrate.advance.perBatch;
      evalDense = { ...evalDense, block: resplitOneBatch(evalDense.block, ew.count, batch, per) };
      evalCompressed = { ...evalCompressed, block: resplitOneBatch(evalCompressed.block, ew.count, batch, per) };
      memMark('probe: evaluated');
    }

    // As the write stage: the fake-quant graph built, the simulated model written, the packed one
    // built (codes of block 0's layers) and written — timed apart: the two writes scale with the
    // weight bytes, the packing with the blocks the job compresses (stageSeconds).
    const external = loaded.initializerNames().some((n) => loaded.initializerInfo(n)?.external) ? true : 'auto';
    const compressed = layers.filter((l) => l.block === 0 && COMPRESSED_ROLES.has(l.role) && !l.weightShared);
    const groups = options.groupSize > 0 ? (l: LinearLayer) => Math.ceil(l.inFeatures / options.groupSize) : () => 1;
    // The simulated model is written for a slice of the job's model (the cut plus further blocks'
    // weights, WRITE_PROBE_BYTES in all), so the copy path is timed at a size like the job's.
    const bytesOf = (name: string) => loaded.initializerInfo(name)?.byteLength ?? 0;
    // Never more than a quarter of the free space where the probe writes (a small temporary folder
    // gets a smaller slice; the cut is always written).
    const free = await statfs(dir).then((f) => f.bavail * f.bsize).catch(() => Infinity);
    const sliceBytes = Math.min(WRITE_PROBE_BYTES, free / 4);
    const writeCut = async (): Promise<{ simulated: number; pack: number; packed: number; bytes: number }> => {
      const os0 = osCounters();
      const t0 = performance.now();
      const slice = writeSlice(fakeQuant(), loaded.model, bytesOf, sliceBytes);
      const sim = await writeModel(slice.model, path.join(dir, 'simulated.onnx'), { externalData: external, source: store });
      const t1 = performance.now();
      const packed = packedModel(
        calibModel,
        layers,
        compressed.map((l) => ({ layer: l, codes: new Int8Array(l.outFeatures * l.inFeatures), scales: new Float64Array(l.outFeatures * groups(l)).fill(1e-3), groupSize: options.groupSize })),
        options.wbits,
      );
      const packedStored = packed.model ? await store.externalize(packed.model) : undefined;
      const t2 = performance.now();
      const pw = packedStored ? await writeModel(packedStored, path.join(dir, 'packed.onnx'), { externalData: external, source: store }) : undefined;
      const t3 = performance.now();
      await rm(path.join(dir, 'simulated.onnx'), { force: true });
      await rm(path.join(dir, 'simulated.onnx.data'), { force: true });
      await rm(path.join(dir, 'packed.onnx'), { force: true });
      await rm(path.join(dir, 'packed.onnx.data'), { force: true });
      const bytes = sim.bytes + sim.dataBytes + (pw ? pw.bytes + pw.dataBytes : 0);
      trace('write cut', { bytes, os: countersSince(os0) });
      return { simulated: (t1 - t0) / 1000, pack: (t2 - t1) / 1000, packed: (t3 - t2) / 1000, bytes };
    };
    // The job writes with its code already warm (the pre-flight ran in the same process), so a
    // cheap cut is written WARM_RUNS more times and the median of each part kept, as the rotation.
    const firstWrite = await writeCut();
    let written = firstWrite;
    if (firstWrite.simulated + firstWrite.pack + firstWrite.packed < 1) {
      const warm: Array<typeof firstWrite> = [];
      for (let i = 0; i < WARM_RUNS; i++) warm.push(await writeCut());
      written = medianParts(warm);
    }
    const writeSeconds = written.simulated + written.pack + written.packed;
    const sourceNames = new Set(loaded.initializerNames());
    const writeAddedBytes = (simulated.graph?.initializer ?? []).reduce((t, x, i) => t + (sourceNames.has(x.name ?? '') ? 0 : describeInitializer(x, i, loaded.dir).byteLength), 0);
    const writeProbeBytes = firstWrite.bytes;
    const writeProbeSeconds = written.simulated + written.packed;
    trace('write parts', { first: firstWrite, median: written, bytesPerSecond: writeProbeBytes / Math.max(writeProbeSeconds, 1e-9) });
    trace('write', { seconds: writeSeconds, read: { bytes: readBytes, seconds: readSeconds } });
    memMark('probe: written');
    // What coreSamples reads — block 0's layer weights (and small tensors such as dequantization
    // scales) — not the whole cut inline (its embedding and head: 250 MB at a 32000-token vocabulary).
    const sampled = new Set(layers.filter((l) => l.block === 0).map((l) => l.weightName));
    const needed = (t: TensorProto): boolean => sampled.has(t.name ?? '') || elementCount(tensorDims(t)) * (elementSize(t.dataType ?? 0) ?? 8) < 2 ** 20;
    const weightsModel = (await store.inlined({ ...calibModel, graph: { ...calibModel.graph, initializer: (calibModel.graph?.initializer ?? []).filter(needed) } })).model;
    return {
      batch,
      seqlen: windows.seqlen,
      executionProvider: used,
      cutWeightBytes,
      blockWeightBytes,
      readBytes,
      readSeconds,
      ...(rotateSeconds !== undefined ? { rotateSeconds } : {}),
      ...(rotateTransformSeconds !== undefined && rotateCheckSeconds !== undefined ? { rotateTransformSeconds, rotateCheckSeconds } : {}),
      ...(rotateCheckBlockSeconds !== undefined ? { rotateCheckBlockSeconds } : {}),
      calibrate,
      evalDense,
      evalCompressed,
      writeSeconds,
      writeProbeBytes,
      writeProbeSeconds,
      writeAddedBytes,
      writeSimulatedSeconds: written.simulated,
      writePackSeconds: written.pack,
      writePackedSeconds: written.packed,
      stats,
      layers,
      weightsModel,
    };
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
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

/** A layer problem the core probe can use for a shape: real weight rows and a captured Hessian. */
export interface CoreSample {
  /** rows×cols, row-major (at least the probe's row counts). */
  weight: Float64Array;
  rows: number;
  hessian: Float64Array;
  channelEnergy: Float64Array;
}

/** Real layer problems from the cut probe, by `${rows}x${cols}` of the job's layers. */
export async function coreSamples(probe: CutProbe): Promise<Map<string, CoreSample>> {
  const out = new Map<string, CoreSample>();
  const wrapped = wrapModel(probe.weightsModel);
  for (const l of probe.layers) {
    const key = `${l.outFeatures}x${l.inFeatures}`;
    const st = probe.stats.get(l.inputName);
    if (!st || out.has(key) || l.block !== 0) continue;
    out.set(key, { weight: await readLayerWeight64(wrapped, l), rows: l.outFeatures, hessian: st.hessian, channelEnergy: st.channelEnergy });
  }
  return out;
}

/**
 * Row counts the core probe times a layer of `rows` rows at: r₁ = 32 and r₂ = max(4·r₁, rows/8)
 * (at most `rows`). A layer's time is a fixed part (its Hessian's factorizations, solver set-up) and
 * a per-row part; at 16 and 64 rows the fixed part hid the per-row part in the machine's noise (a
 * 2048×2048 obr-gptq layer measured 8.2 s at 16 rows and 6.4 s at 64 on the scale model), so r₂
 * grows with the layer.
 */
export function coreProbeRows(rows: number): { r1: number; r2: number } {
  const r1 = Math.min(rows, 32);
  return { r1, r2: Math.min(rows, Math.max(4 * r1, Math.ceil(rows / 8))) };
}

/**
 * Seconds of compressLayer for each distinct (rows, cols) shape and recipe, measured at reduced
 * rows (`coreProbeRows`, or `probeRows` when given) and scaled linearly in rows: on the real weight rows and captured Hessian from `samples` where there is one
 * for the shape, else on random rows and a random SPD Hessian (an easier problem: the iterative
 * solver converges faster on it, so that estimate is low).
 */
export async function probeCore(
  layers: readonly LinearLayer[],
  recipes: readonly RecipeName[],
  options: CompressOptions,
  threads: number | undefined,
  probeRows?: { r1: number; r2: number },
  samples: ReadonlyMap<string, CoreSample> = new Map(),
): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const rand = seededRandom(1);
  // OBR recipes are timed with the job's solver (the batched one on onnxruntime by default), and
  // every recipe on a big layer with its loss terms where the job takes them (on the backend's
  // float64 product; stages/layers.ts): a few rows of such a layer are under the size rule, so
  // the route is set by the whole layer's size, or the rows' slope would be the kernel's (13×).
  const isObr = (r: RecipeName): boolean => r === 'obr-rtn' || r === 'obr-gptq';
  const batched = (options.solver ?? 'batched') === 'batched' && recipes.some(isObr);
  const bigLayer = (rows: number, cols: number): boolean => rows * cols * cols >= BACKEND_LOSS_MIN_WORK;
  const anyBig = layers.some((l) => bigLayer(l.outFeatures, l.inFeatures));
  const backend: OrtMatrixBackend | undefined = batched || anyBig ? await createOrtBackend({ executionProviders: options.executionProviders, threads }) : undefined;
  try {
    let warm = false;
    const shapes = new Map<string, { rows: number; cols: number }>();
    for (const l of layers) shapes.set(`${l.outFeatures}x${l.inFeatures}`, { rows: l.outFeatures, cols: l.inFeatures });
    for (const [key, { rows, cols }] of shapes) {
      const sample = samples.get(key);
      const hessian = sample?.hessian ?? randomSpd(cols, rand);
      const channelEnergy = sample?.channelEnergy ?? new Float64Array(cols).map((_, j) => hessian[j * cols + j]!);
      for (const recipe of recipes) {
        const time = async (r: number): Promise<number> => {
          const weight = sample ? sample.weight.slice(0, r * cols) : new Float64Array(r * cols).map(() => (rand() - 0.5) * 0.1);
          const t0 = performance.now();
          await compressLayer(
            { weight, rows: r, cols, hessian, channelEnergy },
            { method: recipe, sparsity: sparsityFor(recipe, options), wbits: options.wbits, groupSize: options.groupSize, asymmetric: options.asymmetric, alpha: options.alpha, damp: options.damp },
            {
              threads,
              lossOnBackend: bigLayer(rows, cols),
              ...(isObr(recipe) && !batched ? { solver: 'exact' as const } : {}),
              ...(backend && (bigLayer(rows, cols) || (isObr(recipe) && batched)) ? { backend } : {}),
            },
          );
          return (performance.now() - t0) / 1000;
        };
        const at = probeRows ?? coreProbeRows(rows);
        const r1 = Math.min(rows, at.r1);
        const r2 = Math.min(rows, at.r2);
        if (!warm) await time(Math.min(rows, 4)); // warm-up: kernels compiled, worker threads started
        warm = true;
        // Best of two at each row count when that is cheap (the probe shares the machine with
        // whatever else runs); one measurement when a layer shape takes seconds.
        const best = async (r: number): Promise<number> => {
          const first = await time(r);
          return first < 2 ? Math.min(first, await time(r)) : first;
        };
        const t1 = await best(r1);
        const t2 = r2 > r1 ? await best(r2) : t1;
        const perRow = r2 > r1 ? Math.max(0, (t2 - t1) / (r2 - r1)) : 0;
        out.set(`${recipe} ${rows}x${cols}`, t1 + perRow * (rows - r1));
        trace('core', { recipe, rows, cols, r1, t1, r2, t2, estimate: t1 + perRow * (rows - r1) });
        memMark(`probe: core ${recipe} ${rows}x${cols}`);
      }
    }
  } finally {
    await backend?.release();
  }
  return out;
}
