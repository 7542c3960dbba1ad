// Pre-flight estimate of a compression job: peak memory, disk for the outputs and wall-clock
// time per stage, from the model's layer shapes and measured probes on this machine (one block
// forward at the job's batch; the core on each distinct layer shape at reduced rows, scaled —
// src/pipeline/probe.ts). The report stores this estimate beside the actual timings.
import { freemem, totalmem } from 'node:os';
import { decoderView } from '../onnx/merged';
import { loadModel } from '../onnx/load';
import { findLinearLayers } from '../onnx/linear';
import { refuseQuantized } from '../onnx/quantized';
import type { CompressOptions } from '../protocol/recipes';
import { resolveBaselines } from './compress';
import type { CompressionEstimate } from '../protocol/worker';
import { checkSeqlen, contextLength, defaultBatch } from './evaluate';
import { COMPRESSED_ROLES } from './working';
import { checkGroupSizeFits, planBlocks } from './compress';
import { forwardSeconds, probeCore, probeForward } from './probe';
import { BUNDLED_EVALUATION_TEXT, bundledText } from './assets';
import { readText } from '../runtime/text';
import { encodePrefix, loadTokenizer } from '../runtime/tokenizer';

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
}

export interface Preflight extends CompressionEstimate {
  /** Memory the OS reports as available now. */
  availableBytes: number;
  totalBytes: number;
  /** peakBytes ≤ availableBytes. */
  fits: boolean;
  /** Seconds of one whole-model forward of one window (from the block probe). */
  forwardSeconds?: number;
  breakdown: { loadSeconds: number; calibrateSeconds: number; compressSeconds: number; writeSeconds: number; evaluateSeconds: number; hessianBytes: number; modelBytes: number };
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
  const loaded = decoderView(await loadModel(modelPath));
  try {
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

    // Memory. The source model stays loaded, the working copy holds every weight inline, its
    // encoding is handed to onnxruntime, which keeps its own copy: ~4 × the weights.
    const modelBytes = loaded.weightBytes + loaded.fileBytes;
    const groupHessian = (g: ReadonlyArray<{ inputName: string; inFeatures: number }>) =>
      [...new Map(g.map((l) => [l.inputName, l.inFeatures])).values()].reduce((s, n) => s + n * n * 8, 0);
    let hessianBytes = 0;
    if (options.calibrationMode === 'oneshot') {
      const inputs = new Map(layers.map((l) => [l.inputName, l.inFeatures]));
      for (const n of inputs.values()) hessianBytes += n * n * 8;
    } else {
      for (const b of blocks) for (const g of b.groups) hessianBytes = Math.max(hessianBytes, groupHessian(g));
    }
    const largest = layers.reduce((m, l) => Math.max(m, l.inFeatures * l.outFeatures), 0);
    const maxCols = Math.max(0, ...layers.map((l) => l.inFeatures));
    // core: weight copies (f64 ×4), codes + mask, damped H, its factor and inverse (f64 ×4)
    const coreBytes = largest * (8 * 4 + 2) + maxCols * maxCols * 8 * 4;
    const activationBytes = batch * seqlen * (2 * vocab + 16 * hidden + 4 * inter) * 4;
    // Baselines keep their compressed weights as float32 until they are evaluated, and one
    // baseline model (inline weights) is alive at a time during its evaluation.
    const baselines = resolveBaselines(pre.baselines, options.recipe);
    const baselineBytes = baselines.length ? baselines.length * params * 4 + loaded.weightBytes : 0;
    const peakBytes = Math.round(4 * loaded.weightBytes + loaded.fileBytes + hessianBytes + coreBytes + activationBytes + baselineBytes + 150 * 2 ** 20);

    // Disk: the simulated model has the source's size; the packed one stores 4-bit codes plus
    // a scale (and zero point) per row or per group for the compressed layers, everything else as is.
    const layerBytes = layers.reduce((s, l) => s + l.inFeatures * l.outFeatures * (l.dtype === 'float32' ? 4 : 2), 0);
    const scaleBytes = layers.reduce((s, l) => s + l.outFeatures * (options.groupSize > 0 ? Math.ceil(l.inFeatures / options.groupSize) : 1) * 4.5, 0);
    const outputBytes = Math.round(2 * loaded.fileBytes + loaded.weightBytes + (loaded.weightBytes - layerBytes) + (params * options.wbits) / 8 + scaleBytes);

    // Time, per stage, from probes on this machine (src/pipeline/probe.ts).
    const notes: string[] = [];
    const recipes = [options.recipe, ...baselines];
    const groupsPerBlock = blocks.length ? blocks.reduce((s, b) => s + b.groups.length, 0) / blocks.length : 0;
    const oneshot = options.calibrationMode === 'oneshot';
    // Evaluation windows: the text's non-overlapping windows (§1.11), at most evalWindows.
    let evalWindows = pre.evalWindows ?? 64;
    if (pre.evaluate !== false) {
      try {
        const tokenizer = await loadTokenizer(modelPath);
        const text = await readText(pre.evalText ?? bundledText(BUNDLED_EVALUATION_TEXT));
        const all = Math.floor(encodePrefix(tokenizer, text.text, pre.evalWindows ? pre.evalWindows * seqlen : undefined).length / seqlen);
        evalWindows = pre.evalWindows ? Math.min(pre.evalWindows, all) : all;
      } catch {
        // no tokenizer or text here: the job itself reports that
      }
    }
    const evaluations = pre.evaluate === false ? 0 : 2 + baselines.length;
    let calibrateSeconds: number;
    let evaluateSeconds: number;
    let compressSeconds: number;
    let windowSeconds: number | undefined;
    const probe = pre.probe !== false ? await probeForward(loaded, all, Math.max(1, Math.min(batch, options.samples)), seqlen, vocab, options.executionProviders) : undefined;
    if (probe) {
      // Streamed (§1.5): one prelude, then per block `groups` capture forwards (~10 % more work
      // for the XᵀX products) and one forward to the next block; one-shot: one capture forward.
      const L = blocks.length;
      const n = options.samples;
      const perBlock = oneshot
        ? forwardSeconds(probe.block, n, probe.batch, 1.1)
        : groupsPerBlock * forwardSeconds(probe.block, n, probe.batch, 1.1) + forwardSeconds(probe.block, n, probe.batch);
      calibrateSeconds = forwardSeconds(probe.prelude, n, probe.batch) + L * perBlock;
      const onePass = forwardSeconds(probe.prelude, evalWindows, probe.batch) + L * forwardSeconds(probe.block, evalWindows, probe.batch) + forwardSeconds(probe.tail, evalWindows, probe.batch);
      evaluateSeconds = evaluations * onePass;
      windowSeconds = (probe.prelude.run + L * probe.block.run + probe.tail.run) / probe.batch;
      notes.push(
        `probe on ${probe.executionProvider}: block forward ${(probe.block.run * 1000).toFixed(0)} ms per batch of ${probe.batch} × ${seqlen} tokens (+ ${((probe.block.session + probe.block.warmup) * 1000).toFixed(0)} ms per session), tail ${(probe.tail.run * 1000).toFixed(0)} ms`,
      );
    } else {
      // No probe: about 30 GFLOP/s for the forwards (2 flops per weight per token).
      windowSeconds = (2 * (loaded.weightBytes / 4) * seqlen) / 30e9;
      calibrateSeconds = (oneshot ? 1 : groupsPerBlock + 1) * options.samples * windowSeconds;
      evaluateSeconds = evaluations * evalWindows * windowSeconds;
    }
    if (pre.probe !== false) {
      const core = await probeCore(layers, recipes, options, pre.threads);
      compressSeconds = recipes.reduce((t, recipe) => t + layers.reduce((s, l) => s + core.get(`${recipe} ${l.outFeatures}x${l.inFeatures}`)!, 0), 0);
      const shapes = [...new Set(layers.map((l) => `${l.outFeatures}×${l.inFeatures}`))];
      notes.push(`core probe: ${recipes.join(', ')} on ${shapes.join(', ')} at 16 and 64 rows, scaled to the full row counts`);
    } else {
      compressSeconds = recipes.reduce((t, recipe) => t + layers.reduce((s, l) => s + coreSecondsEstimate(l.outFeatures, l.inFeatures, recipe), 0), 0);
    }
    // Reading and writing: about 500 MB/s in, two models out at about 300 MB/s.
    const loadSeconds = 0.5 + modelBytes / 500e6;
    const writeSeconds = 0.2 + (2 * modelBytes) / 300e6;
    const seconds = loadSeconds + calibrateSeconds + compressSeconds + writeSeconds + evaluateSeconds;
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
      breakdown: { loadSeconds, calibrateSeconds, compressSeconds, writeSeconds, evaluateSeconds, hessianBytes, modelBytes },
    };
  } finally {
    await loaded.close();
  }
}

/** The pre-flight's seconds per stage, stored in the report (report.estimate) beside the actual timings. */
export function stageEstimate(pre: Preflight): Record<string, number> {
  const b = pre.breakdown;
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return { load: r(b.loadSeconds), calibrate: r(b.calibrateSeconds), compress: r(b.compressSeconds), write: r(b.writeSeconds), evaluate: r(b.evaluateSeconds), total: r(pre.seconds) };
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
