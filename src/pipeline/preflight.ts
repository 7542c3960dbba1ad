// Pre-flight estimate of a compression job: peak memory, disk for the outputs and wall-clock
// time per stage. The time comes from measured probes on this machine (src/pipeline/probe.ts: the
// job's own code timed on a one-block cut of the model, and the core on each distinct layer shape
// at reduced rows), scaled to the job by `stageSeconds` below — every formula is written there.
// The report stores this estimate beside the actual timings (report.estimate / report.timings).
import { freemem, totalmem } from 'node:os';
import { decoderView } from '../onnx/merged';
import { loadModel } from '../onnx/load';
import { findLinearLayers } from '../onnx/linear';
import { refuseQuantized } from '../onnx/quantized';
import type { AttentionGeometry } from '../onnx/types';
import type { CompressOptions } from '../protocol/recipes';
import { resolveBaselines } from './compress';
import type { CompressionEstimate } from '../protocol/worker';
import { checkSeqlen, contextLength, defaultBatch } from './evaluate';
import { COMPRESSED_ROLES } from './working';
import { checkGroupSizeFits, planBlocks } from './compress';
import { coreProbeRows, coreSamples, forwardSeconds, probeCore, probeCut, probeWindows, type CutProbe, type ForwardCost } from './probe';
import { BUNDLED_CALIBRATION_TEXT, bundledText, defaultEvaluationText } from './assets';
import { calibrationWindows, readText } from '../runtime/text';
import { encodePrefix, loadTokenizer } from '../runtime/tokenizer';
import { configGeometry } from './geometry';
import { sha256File } from './stages/load';
import { DEFAULT_ACTIVATION_CACHE_MIB } from './job';
import { estimateMemory, type MemoryEstimate } from './memoryEstimate';

export interface PreflightOptions {
  /** Run the probes: block forwards and the core on each layer shape (default true). */
  probe?: boolean;
  evalWindows?: number;
  /** Windows in the evaluation text when known (default: evalWindows or 64). */
  batch?: number;
  /** Baseline recipes of the job (each: its layers on the same Hessians + one more evaluation). */
  baselines?: readonly string[];
  /** false: the job skips perplexity. */
  evaluate?: boolean;
  /** Evaluation text (default: the bundled test split). */
  evalText?: string;
  /** Core threads of the job. */
  threads?: number;
  /** Attention geometry from the user (the rotation probe needs it where the job does). */
  geometry?: AttentionGeometry;
  /** Compress only these blocks (the pipeline's onlyBlocks). */
  onlyBlocks?: readonly number[];
  /** The job's activation cache budget (MiB; default DEFAULT_ACTIVATION_CACHE_MIB). */
  activationCacheMiB?: number;
}

export interface Preflight extends CompressionEstimate {
  /** Memory the OS reports as available now. */
  availableBytes: number;
  totalBytes: number;
  /** peakBytes ≤ availableBytes. */
  fits: boolean;
  /** Seconds of one whole-model forward of one window (from the block probe). */
  forwardSeconds?: number;
  /** What the time estimate was computed from (absent without the forward probe). */
  inputs?: EstimateInputs;
  breakdown: { loadSeconds: number; rotateSeconds: number; calibrateSeconds: number; compressSeconds: number; writeSeconds: number; evaluateSeconds: number; hessianBytes: number; modelBytes: number };
  /** The memory estimate's terms (src/pipeline/memoryEstimate.ts). */
  memory: MemoryEstimate;
}

/** What the time estimate is computed from: the job's shape and the measured probes. */
export interface EstimateInputs {
  samples: number;
  evalWindows: number;
  batch: number;
  /** Decoder blocks of the model (every one runs in evaluation). */
  modelBlocks: number;
  /** Block indices the job compresses (0-based, graph order). */
  plannedBlocks: readonly number[];
  oneshot: boolean;
  rotates: boolean;
  /** Perplexity evaluations after the dense one: the compressed model + one per baseline (0 with no evaluation). */
  evaluations: number;
  /** Stored weight bytes of the whole model, and those in external data files. */
  modelWeightBytes: number;
  externalBytes: number;
  /** Measured here: opening the model (parse, external data index), loading the tokenizer and
   *  tokenizing the texts, hashing the model file. */
  openSeconds: number;
  textSeconds: number;
  hashSeconds: number;
  probe: Pick<
    CutProbe,
    | 'cutWeightBytes'
    | 'blockWeightBytes'
    | 'readBytes'
    | 'readSeconds'
    | 'rotateSeconds'
    | 'rotateTransformSeconds'
    | 'rotateCheckSeconds'
    | 'rotateCheckBlockSeconds'
    | 'calibrate'
    | 'evalDense'
    | 'evalCompressed'
    | 'writeSeconds'
    | 'writeProbeBytes'
    | 'writeProbeSeconds'
    | 'writeAddedBytes'
    | 'writeSimulatedSeconds'
    | 'writePackSeconds'
    | 'writePackedSeconds'
  >;
  /** Σ over the job's layers (and baselines) of the core probe's seconds. */
  coreSeconds: number;
  /**
   * Bytes the write stage writes (`writtenBytes`): the simulated model (every weight, as stored)
   * plus the packed one (the compressed blocks' layers as codes and scales, every other weight as
   * stored), each an .onnx file and its external data.
   */
  writeBytes?: number;
}

/**
 * Bytes the write stage writes: the simulated model (the graph and every weight, as stored) and
 * the packed model (the same, less each compressed layer's stored weight, plus its 4-bit codes
 * and a float32 scale — and a zero point's share — per row or group). `graphBytes`: the source
 * .onnx file without the weights stored in it; `addedBytes`: weights the job's graph adds to the
 * source's (the rotation's online Hadamard matrices, fake-quant constants), in both models.
 */
export function writtenBytes(x: { graphBytes: number; weightBytes: number; addedBytes?: number; wbits: number; groupSize: number; layers: ReadonlyArray<{ rows: number; cols: number; storedBytes: number }> }): number {
  const added = x.addedBytes ?? 0;
  let packed = x.graphBytes + x.weightBytes + added;
  for (const l of x.layers) {
    const groups = x.groupSize > 0 ? Math.ceil(l.cols / x.groupSize) : 1;
    packed += (l.rows * l.cols * x.wbits) / 8 + l.rows * groups * 4.5 - l.storedBytes;
  }
  return x.graphBytes + x.weightBytes + added + packed;
}

export interface StageSeconds {
  load: number;
  rotate: number;
  calibrate: number;
  compress: number;
  write: number;
  evaluate: number;
}

/**
 * Seconds per stage of a job from its measured probes. With f(c, n) = c.fixed + c.perBatch·n/batch
 * for a probed forward c over n windows (exactly the measured time at the probed windows, which are
 * the job's own up to four batches), B the blocks, W the model's weight bytes, W_cut that of the cut:
 *
 *   load      = open + texts + hash                                  (weights stay on disk)
 *   rotate    = transform(cut) · W / W_cut + check(cut) + (B − 1)·c₁
 *               (the streamed rotation scales with the weight bytes; the streamed check runs the
 *               dense, rotated and simulated model through every block: c₀ = block 0's three
 *               forwards in the cut's check, c₁ = c₀ with the part of it that is block 0's fixed
 *               cost, min(c₀, 3·advance.fixed), scaled by W_b / W_0; 0 without rotation. A probe
 *               without the split: rotate(cut) · W / W_cut)
 *   calibrate = f(prelude, n) + Σ_{b ≤ last planned} ( planned b: Σ_g f_b(capture_g, n)
 *               + [b < last] f_b(advance, n);  not planned: f_b(advance, n) )
 *               (one-shot: a planned block is one forward, 1.1·f_b(advance, n))
 *   compress  = Σ_layers core(rows × cols)                          (probeCore, scaled in rows)
 *   write     = t_w · D / D_w + pack₀ · Σ_{b planned} s_b
 *               (the two model writes go by the bytes written: D = the simulated + packed models'
 *               bytes (`writtenBytes`: every untouched weight twice, the compressed layers once
 *               as stored and once packed), t_w / D_w = the probe's seconds per byte of the same
 *               writes on a slice of the model of at least WRITE_PROBE_BYTES (or all of it);
 *               packing — a block's codes into MatMulNBits, stored — runs once per compressed
 *               block: pack₀ = block 0's in the probe, s_0 = 1, s_b = W_b / W_0 as below. Probes
 *               recorded before the slice: (simulated(cut) + packed(cut)) · W / W_cut + the packing,
 *               or write(cut) · W / W_cut)
 *   evaluate  = f(prelude, m) + Σ_b f_b(block, m) + f(tail, m)      (dense, weights from the source)
 *               + evaluations × (the same with the simulated cut's forwards)
 *   n = samples, m = evaluation windows; every probed forward reads its weights as the job's do.
 *
 * f_b: the probe times block 0. A block's fixed part (its weights read, its session opened) grows
 * with its weight bytes, and block 0 may hold more than the others (the embedding table when the
 * token Gather sits in block 0's region, as in the scale benchmark's graph: 220 MB against 88 MB),
 * so for b ≥ 1 the fixed part is scaled by W_b / W_0 with W_b = (W − W_cut)/(B − 1); the per-batch
 * part (the block's arithmetic) is the same for every block.
 */
export function stageSeconds(x: EstimateInputs): StageSeconds {
  const { probe: p, batch } = x;
  const f = (c: ForwardCost, n: number) => forwardSeconds(c, n, batch);
  const scaleToModel = p.cutWeightBytes > 0 ? x.modelWeightBytes / p.cutWeightBytes : 1;
  const otherBlock = otherBlockScale(x);
  /** Forward c of block b over n windows. */
  const fb = (c: ForwardCost, b: number, n: number) => (b === 0 ? f(c, n) : f({ fixed: c.fixed * otherBlock, perBatch: c.perBatch }, n));
  const load = x.openSeconds + x.textSeconds + x.hashSeconds;
  const n = x.samples;
  let rotate = 0;
  if (x.rotates && p.rotateTransformSeconds !== undefined && p.rotateCheckSeconds !== undefined && p.rotateCheckBlockSeconds !== undefined) {
    const c0 = p.rotateCheckBlockSeconds;
    const fixed0 = Math.min(c0, 3 * p.calibrate.advance.fixed);
    const c1 = c0 - fixed0 * (1 - otherBlock);
    rotate = p.rotateTransformSeconds * scaleToModel + p.rotateCheckSeconds + Math.max(0, x.modelBlocks - 1) * c1;
  } else if (x.rotates && p.rotateSeconds !== undefined) rotate = p.rotateSeconds * scaleToModel;
  const planned = new Set(x.plannedBlocks);
  const last = Math.max(-1, ...x.plannedBlocks);
  let calibrate = last >= 0 ? f(p.calibrate.prelude, n) : 0;
  for (let b = 0; b <= last; b++) {
    if (!planned.has(b)) calibrate += fb(p.calibrate.advance, b, n);
    else if (x.oneshot) calibrate += 1.1 * fb(p.calibrate.advance, b, n);
    else calibrate += p.calibrate.captures.reduce((s, c) => s + fb(c, b, n), 0) + (b < last ? fb(p.calibrate.advance, b, n) : 0);
  }
  const m = x.evalWindows;
  const B = x.modelBlocks;
  const pass = (e: CutProbe['evalDense']) => {
    let s = f(e.prelude, m) + f(e.tail, m);
    for (let b = 0; b < B; b++) s += fb(e.block, b, m);
    return s;
  };
  const evaluate = m > 0 && x.evaluations > 0 ? pass(p.evalDense) + x.evaluations * pass(p.evalCompressed) : 0;
  let write = p.writeSeconds * scaleToModel;
  if (p.writeSimulatedSeconds !== undefined && p.writePackSeconds !== undefined && p.writePackedSeconds !== undefined) {
    const packedBlocks = x.plannedBlocks.reduce((s, b) => s + (b === 0 ? 1 : otherBlock), 0);
    const copy =
      p.writeProbeBytes && p.writeProbeSeconds !== undefined && x.writeBytes !== undefined
        ? (p.writeProbeSeconds * x.writeBytes) / p.writeProbeBytes
        : (p.writeSimulatedSeconds + p.writePackedSeconds) * scaleToModel;
    write = copy + p.writePackSeconds * packedBlocks;
  }
  return { load, rotate, calibrate, compress: x.coreSeconds, write, evaluate };
}

/** W_b / W_0: a block after the first against the probed block 0, by weight bytes (1 with one block). */
export function otherBlockScale(x: Pick<EstimateInputs, 'modelBlocks' | 'modelWeightBytes' | 'probe'>): number {
  const { cutWeightBytes, blockWeightBytes } = x.probe;
  if (x.modelBlocks < 2 || blockWeightBytes <= 0) return 1;
  const other = (x.modelWeightBytes - cutWeightBytes) / (x.modelBlocks - 1);
  return other > 0 ? other / blockWeightBytes : 1;
}

/**
 * Rough per-layer core time: a fixed overhead, the O(rows·n²) row passes and, for OBR, one
 * (n/2)³/3 Cholesky per row (§2.7), at ~1 GFLOP/s of plain JavaScript (docs/environment.md).
 */
export function coreSecondsEstimate(rows: number, cols: number, recipe: string): number {
  const obr = recipe.startsWith('obr');
  const half = cols / 2;
  return 0.2 + rows * cols * cols * 5e-8 + (obr ? (rows * (half ** 3 / 3 + (half / 2) ** 3 / 3)) / 1e9 : (cols ** 3 * 2) / 1e9);
}

export async function estimateCompression(modelPath: string, options: CompressOptions, pre: PreflightOptions = {}): Promise<Preflight> {
  const opened = performance.now();
  const loaded = decoderView(await loadModel(modelPath));
  let openSeconds = (performance.now() - opened) / 1000;
  try {
    // The job opens the model with its code warm (after the pre-flight, same process): a cheap
    // open is timed once more and the faster kept (the first pays the parser's first use).
    if (openSeconds < 2) {
      const again = performance.now();
      await (await loadModel(modelPath)).close();
      openSeconds = Math.min(openSeconds, (performance.now() - again) / 1000);
    }
    refuseQuantized(loaded.model);
    const all = findLinearLayers(loaded.model);
    const layers = all.filter((l) => l.block !== null && COMPRESSED_ROLES.has(l.role) && !l.weightShared);
    checkGroupSizeFits(options.groupSize, layers); // a group wider than a layer: refuse before any work
    const params = layers.reduce((s, l) => s + l.inFeatures * l.outFeatures, 0);
    const seqlen = options.seqlen ?? contextLength(modelPath);
    checkSeqlen(loaded.model, modelPath, seqlen);
    const batch = pre.batch ?? defaultBatch(seqlen);
    const vocab = all.find((l) => l.role === 'lm_head')?.outFeatures ?? 32000;
    const hidden = layers.find((l) => l.role === 'q')?.inFeatures ?? layers[0]?.inFeatures ?? 0;
    const inter = Math.max(0, ...layers.filter((l) => l.role === 'down').map((l) => l.inFeatures));
    const blocks = planBlocks(layers);

    // Memory: weights stay on disk and are read a block at a time, so the peak is a fixed part
    // plus the largest of one block's capture, one layer in the core, one evaluation session
    // (every formula in src/pipeline/memoryEstimate.ts).
    const modelBytes = loaded.weightBytes + loaded.fileBytes;
    const baselines = resolveBaselines(pre.baselines, options.recipe);
    const memoryLayers = pre.onlyBlocks ? layers.filter((l) => pre.onlyBlocks!.includes(l.block ?? -1)) : layers;
    const stored = (name: string) => loaded.initializerInfo(name)?.byteLength ?? 0;
    const perBlock = new Map<number, number>();
    for (const l of layers) perBlock.set(l.block ?? -1, (perBlock.get(l.block ?? -1) ?? 0) + stored(l.weightName));
    const blockWeights = new Set(layers.map((l) => l.weightName));
    const outsideBytes = loaded.initializerNames().reduce((m, n) => (blockWeights.has(n) ? m : Math.max(m, stored(n))), 0);
    const inputsOf = (g: ReadonlyArray<{ inputName: string; inFeatures: number }>) => [...new Map(g.map((l) => [l.inputName, l.inFeatures])).values()];
    const memBlocks = planBlocks(memoryLayers);
    const captureGroups = options.calibrationMode === 'oneshot' ? memBlocks.map((b) => inputsOf(b.groups.flat())) : memBlocks.flatMap((b) => b.groups.map(inputsOf));
    const memory = estimateMemory({
      recipes: [options.recipe, ...baselines],
      layers: memoryLayers.map((l) => ({ rows: l.outFeatures, cols: l.inFeatures, inputName: l.inputName })),
      captureGroups,
      blockBytes: Math.max(0, ...perBlock.values()),
      outsideBytes,
      graphBytes: loaded.fileBytes,
      batch,
      seqlen,
      samples: options.samples,
      hidden,
      intermediate: inter,
      vocab,
      activationBudgetBytes: (pre.activationCacheMiB ?? DEFAULT_ACTIVATION_CACHE_MIB) * 2 ** 20,
      alpha: options.alpha,
    });
    const hessianBytes = Math.max(0, ...captureGroups.map((g) => g.reduce((s, n) => s + n * n * 8, 0)));
    const peakBytes = memory.peakBytes;

    // Disk: the simulated model has the source's size; the packed one stores 4-bit codes plus
    // a scale (and zero point) per row or per group for the compressed layers, everything else as is.
    const layerBytes = layers.reduce((s, l) => s + l.inFeatures * l.outFeatures * (l.dtype === 'float32' ? 4 : 2), 0);
    const scaleBytes = layers.reduce((s, l) => s + l.outFeatures * (options.groupSize > 0 ? Math.ceil(l.inFeatures / options.groupSize) : 1) * 4.5, 0);
    const outputBytes = Math.round(2 * loaded.fileBytes + loaded.weightBytes + (loaded.weightBytes - layerBytes) + (params * options.wbits) / 8 + scaleBytes);

    // Time, per stage, from probes on this machine (src/pipeline/probe.ts).
    const notes: string[] = [];
    const recipes = [options.recipe, ...baselines];
    const oneshot = options.calibrationMode === 'oneshot';
    const jobLayers = pre.onlyBlocks ? layers.filter((l) => pre.onlyBlocks!.includes(l.block ?? -1)) : layers;
    const blockIds = [...new Set(layers.map((l) => l.block ?? -1))].sort((x, y) => x - y);
    const plannedBlocks = [...new Set(jobLayers.map((l) => blockIds.indexOf(l.block ?? -1)))].sort((x, y) => x - y);
    // The texts as the load stage reads them: tokenizer, calibration text, evaluation windows
    // (the text's non-overlapping windows, §1.11, at most evalWindows).
    // Timed on a second pass: the job reads them with its code already warm (same process).
    let evalWindows = pre.evalWindows ?? 64;
    let calibIds: Int32Array | undefined;
    const readTexts = async (): Promise<void> => {
      try {
        const tokenizer = await loadTokenizer(modelPath);
        calibIds = tokenizer.encode((await readText(options.calibText ?? bundledText(BUNDLED_CALIBRATION_TEXT))).text);
        if (pre.evaluate !== false) {
          const text = await readText(pre.evalText ?? defaultEvaluationText(modelPath));
          const count = Math.floor(encodePrefix(tokenizer, text.text, pre.evalWindows ? pre.evalWindows * seqlen : undefined).length / seqlen);
          evalWindows = pre.evalWindows ? Math.min(pre.evalWindows, count) : count;
        }
      } catch {
        // no tokenizer or text here: the job itself reports that
      }
    };
    await readTexts();
    const textStarted = performance.now();
    await readTexts();
    const textSeconds = (performance.now() - textStarted) / 1000;
    const hashStarted = performance.now();
    await sha256File(loaded.path);
    const hashSeconds = (performance.now() - hashStarted) / 1000;
    const evaluations = pre.evaluate === false ? 0 : 1 + baselines.length;
    const rotates = options.abits < 16 || options.kvbits < 16;
    const probeBatch = Math.max(1, batch);

    let probe: CutProbe | undefined;
    let why: string | undefined;
    if (pre.probe !== false && calibIds) {
      try {
        const windows = calibrationWindows(calibIds, probeWindows(options.samples, probeBatch), seqlen, options.seed);
        // Evaluation forwards are timed on as many windows as the job evaluates (up to four batches).
        const evalProbe = calibrationWindows(calibIds, probeWindows(Math.max(1, evalWindows), probeBatch), seqlen, options.seed);
        probe = await probeCut(loaded, all, { options, batch: probeBatch, windows, evalWindows: evalProbe, modelPath, geometry: pre.geometry, configGeometry: configGeometry(modelPath), evaluate: evaluations > 0 });
        if (!probe) why = "the graph can't be cut into blocks";
      } catch (e) {
        why = (e as Error).message;
      }
    }
    let core: Map<string, number> | undefined;
    if (pre.probe !== false) {
      core = await probeCore(jobLayers, recipes, options, pre.threads, undefined, probe ? await coreSamples(probe) : undefined);
      const shapes = [...new Set(jobLayers.map((l) => `${l.outFeatures}×${l.inFeatures}`))];
      const rowsAt = [...new Set(jobLayers.map((l) => { const r = coreProbeRows(l.outFeatures); return `${r.r1}/${r.r2}`; }))];
      notes.push(`core probe: ${recipes.join(', ')} on ${shapes.join(', ')} at ${rowsAt.join(', ')} rows${probe ? ' (real weight rows and captured Hessians)' : ''}, scaled to the full row counts`);
    }
    const coreSeconds = recipes.reduce(
      (t, recipe) => t + jobLayers.reduce((s, l) => s + (core ? core.get(`${recipe} ${l.outFeatures}x${l.inFeatures}`)! : coreSecondsEstimate(l.outFeatures, l.inFeatures, recipe)), 0),
      0,
    );
    const externalBytes = loaded.initializerNames().reduce((s, n) => s + (loaded.initializerInfo(n)?.external ? (loaded.initializerInfo(n)?.byteLength ?? 0) : 0), 0);
    let stages: StageSeconds;
    let windowSeconds: number;
    let inputs: EstimateInputs | undefined;
    if (probe) {
      const { cutWeightBytes, blockWeightBytes, readBytes, readSeconds, rotateSeconds, rotateTransformSeconds, rotateCheckSeconds, calibrate, evalDense, evalCompressed, writeSeconds } = probe;
      inputs = {
        samples: options.samples,
        evalWindows: evaluations > 0 ? evalWindows : 0,
        batch: probeBatch,
        modelBlocks: blockIds.length,
        plannedBlocks,
        oneshot,
        rotates,
        evaluations,
        modelWeightBytes: loaded.weightBytes,
        externalBytes,
        openSeconds,
        textSeconds,
        hashSeconds,
        probe: {
          cutWeightBytes,
          blockWeightBytes,
          readBytes,
          readSeconds,
          ...(probe.writeSimulatedSeconds !== undefined && probe.writePackSeconds !== undefined && probe.writePackedSeconds !== undefined
            ? { writeSimulatedSeconds: probe.writeSimulatedSeconds, writePackSeconds: probe.writePackSeconds, writePackedSeconds: probe.writePackedSeconds }
            : {}),
          ...(probe.writeProbeBytes !== undefined && probe.writeProbeSeconds !== undefined ? { writeProbeBytes: probe.writeProbeBytes, writeProbeSeconds: probe.writeProbeSeconds, writeAddedBytes: probe.writeAddedBytes ?? 0 } : {}),
          ...(rotateSeconds !== undefined ? { rotateSeconds } : {}),
          ...(rotateTransformSeconds !== undefined && rotateCheckSeconds !== undefined ? { rotateTransformSeconds, rotateCheckSeconds } : {}),
          ...(probe.rotateCheckBlockSeconds !== undefined ? { rotateCheckBlockSeconds: probe.rotateCheckBlockSeconds } : {}),
          calibrate,
          evalDense,
          evalCompressed,
          writeSeconds,
        },
        coreSeconds,
        writeBytes: writtenBytes({
          graphBytes: Math.max(0, loaded.fileBytes - (loaded.weightBytes - externalBytes)),
          addedBytes: probe.writeAddedBytes ?? 0,
          weightBytes: loaded.weightBytes,
          wbits: options.wbits,
          groupSize: options.groupSize,
          layers: jobLayers.map((l) => ({ rows: l.outFeatures, cols: l.inFeatures, storedBytes: stored(l.weightName) })),
        }),
      };
      stages = stageSeconds(inputs);
      const c = probe.calibrate;
      windowSeconds = (c.prelude.perBatch + blockIds.length * probe.evalDense.block.perBatch + probe.evalDense.tail.perBatch) / probeBatch;
      const ms = (x: number) => `${(x * 1000).toFixed(0)} ms`;
      notes.push(
        `probe on ${probe.executionProvider} (a one-block cut of the model, batch ${probeBatch} × ${seqlen} tokens): block forward ${ms(c.advance.perBatch)} per batch + ${ms(c.advance.fixed)} per forward; captures ${c.captures.map((x) => ms(x.perBatch)).join(' / ')} per batch; tail ${ms(probe.evalDense.tail.perBatch)}${probe.readBytes > 0 ? `; weights read at ${(probe.readBytes / Math.max(probe.readSeconds, 1e-9) / 1e6).toFixed(0)} MB/s` : ''}`,
      );
      if (probe.writeProbeBytes && probe.writeProbeSeconds !== undefined && inputs.writeBytes !== undefined) {
        const mb = (b: number) => (b / 1e6).toFixed(0);
        notes.push(`write: ${mb(probe.writeProbeBytes)} MB of a slice of the model written in ${probe.writeProbeSeconds.toFixed(1)} s (${mb(probe.writeProbeBytes / Math.max(probe.writeProbeSeconds, 1e-9))} MB/s, synced), scaled to the job's ${mb(inputs.writeBytes)} MB`);
      }
      if (probe.rotateTransformSeconds !== undefined && probe.rotateCheckSeconds !== undefined) {
        notes.push(`rotation of the cut (${(probe.cutWeightBytes / 1e6).toFixed(0)} MB of weights): ${probe.rotateTransformSeconds.toFixed(1)} s, scaled to the model's ${(loaded.weightBytes / 1e6).toFixed(0)} MB; its check ${probe.rotateCheckSeconds.toFixed(1)} s, of which block 0's three forwards ${(probe.rotateCheckBlockSeconds ?? 0).toFixed(1)} s (added per further block)`);
      }
    } else {
      if (why) notes.push(`no forward probe (${why}): the time of the forwards, rotation and I/O is a rough constant-rate guess`);
      // No probe: about 30 GFLOP/s for the forwards (2 flops per weight per token), 500 MB/s in,
      // 300 MB/s out, 50 MB/s of weights rotated.
      windowSeconds = (2 * (loaded.weightBytes / 4) * seqlen) / 30e9;
      const groupsPerBlock = blocks.length ? blocks.reduce((s, b) => s + b.groups.length, 0) / blocks.length : 0;
      const fraction = blocks.length ? plannedBlocks.length / blocks.length : 1;
      stages = {
        load: openSeconds + textSeconds + hashSeconds,
        rotate: rotates ? loaded.weightBytes / 50e6 : 0,
        calibrate: fraction * (oneshot ? 1 : groupsPerBlock + 1) * options.samples * windowSeconds,
        compress: coreSeconds,
        write: 0.2 + (2 * modelBytes) / 300e6,
        evaluate: (evaluations > 0 ? 1 + evaluations : 0) * evalWindows * windowSeconds,
      };
    }
    const loadSeconds = stages.load;
    const rotateSeconds = stages.rotate;
    const calibrateSeconds = stages.calibrate;
    const compressSeconds = stages.compress;
    const writeSeconds = stages.write;
    const evaluateSeconds = stages.evaluate;
    const seconds = loadSeconds + rotateSeconds + calibrateSeconds + compressSeconds + writeSeconds + evaluateSeconds;
    const groupsPerBlock = blocks.length ? blocks.reduce((s, b) => s + b.groups.length, 0) / blocks.length : 0;
    const passes = oneshot ? 1 : groupsPerBlock + 1;
    // OBR_AVAILABLE_MEMORY (bytes) caps what the job may assume is free (shared machines, tests).
    const cap = Number(process.env.OBR_AVAILABLE_MEMORY);
    const availableBytes = Number.isFinite(cap) && cap > 0 ? Math.min(cap, freemem()) : freemem();
    notes.push(`${layers.length} layers in ${blocks.length} blocks, ${passes} whole-model-equivalent calibration pass(es) of ${options.samples} × ${seqlen} tokens`);
    if (baselines.length) notes.push(`baselines: ${baselines.join(', ')} — each layer also compressed with them on the same Hessians, and each evaluated`);
    return {
      layers: layers.length,
      params,
      seconds,
      peakBytes,
      outputBytes,
      notes,
      availableBytes,
      totalBytes: totalmem(),
      fits: peakBytes <= availableBytes,
      forwardSeconds: windowSeconds,
      ...(inputs ? { inputs } : {}),
      breakdown: { loadSeconds, rotateSeconds, calibrateSeconds, compressSeconds, writeSeconds, evaluateSeconds, hessianBytes, modelBytes },
      memory,
    };
  } finally {
    await loaded.close();
  }
}

/** The pre-flight's seconds per stage, stored in the report (report.estimate) beside the actual timings. */
export function stageEstimate(pre: Preflight): Record<string, number> {
  const b = pre.breakdown;
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return { load: r(b.loadSeconds), rotate: r(b.rotateSeconds), calibrate: r(b.calibrateSeconds), compress: r(b.compressSeconds), write: r(b.writeSeconds), evaluate: r(b.evaluateSeconds), total: r(pre.seconds) };
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatSeconds(s: number): string {
  if (s < 90) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
