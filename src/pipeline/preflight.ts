// Pre-flight estimate of a compression job: peak memory, disk for the outputs and wall-clock
// time, from the model's layer shapes and a short probe (one forward pass on this machine).
import { freemem, totalmem } from 'node:os';
import path from 'node:path';
import { loadModel } from '../onnx/load';
import { findLinearLayers } from '../onnx/linear';
import { refuseQuantized } from '../onnx/quantized';
import type { CompressOptions } from '../protocol/recipes';
import { resolveBaselines } from './compress';
import type { CompressionEstimate } from '../protocol/worker';
import { CausalLm } from '../runtime/lm';
import { checkSeqlen, contextLength, defaultBatch } from './evaluate';
import { COMPRESSED_ROLES } from './working';
import { planBlocks } from './compress';

export interface PreflightOptions {
  /** Run the one-window probe to time a forward pass (default true). */
  probe?: boolean;
  evalWindows?: number;
  /** Windows in the evaluation text when known (default: evalWindows or 64). */
  batch?: number;
  /** Baseline recipes of the job (each: its layers on the same Hessians + one more evaluation). */
  baselines?: readonly string[];
}

export interface Preflight extends CompressionEstimate {
  /** Memory the OS reports as available now. */
  availableBytes: number;
  totalBytes: number;
  /** peakBytes ≤ availableBytes. */
  fits: boolean;
  /** Seconds of one forward pass of one window, measured (undefined without the probe). */
  forwardSeconds?: number;
  breakdown: { calibrateSeconds: number; compressSeconds: number; evaluateSeconds: number; hessianBytes: number; modelBytes: number };
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
  const loaded = await loadModel(modelPath);
  try {
    refuseQuantized(loaded.model);
    const all = findLinearLayers(loaded.model);
    const layers = all.filter((l) => l.block !== null && COMPRESSED_ROLES.has(l.role) && !l.weightShared);
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
    // per-row scales for the compressed layers and everything else as is.
    const layerBytes = layers.reduce((s, l) => s + l.inFeatures * l.outFeatures * (l.dtype === 'float32' ? 4 : 2), 0);
    const outputBytes = Math.round(2 * loaded.fileBytes + loaded.weightBytes + (loaded.weightBytes - layerBytes) + (params * options.wbits) / 8 + layers.reduce((s, l) => s + l.outFeatures * 4, 0));

    // Time.
    let forwardSeconds: number | undefined;
    const notes: string[] = [];
    if (pre.probe !== false) {
      const lm = await CausalLm.open(path.resolve(modelPath), { executionProviders: options.executionProviders });
      try {
        const ids = new Int32Array(batch * seqlen).map((_, i) => (i * 7919) % Math.max(2, vocab));
        await lm.runOutputs(ids.subarray(0, seqlen), 1, seqlen, [lm.session.outputNames[0]!]); // warm-up
        const t0 = performance.now();
        await lm.runOutputs(ids, batch, seqlen, [lm.session.outputNames[0]!]);
        forwardSeconds = (performance.now() - t0) / 1000 / batch;
        notes.push(`probe: ${(forwardSeconds * 1000).toFixed(0)} ms per ${seqlen}-token window on ${lm.executionProvider.used}`);
      } finally {
        await lm.release();
      }
    } else {
      forwardSeconds = (2 * (loaded.weightBytes / 4) * seqlen) / 30e9;
    }
    // Streamed calibration (§1.5): every block runs once per sub-group capture plus once more to
    // produce the next block's inputs (one-shot: once), i.e. about (groups + 1) whole-model
    // forwards of the calibration set.
    const groupsPerBlock = blocks.length ? blocks.reduce((s, b) => s + b.groups.length, 0) / blocks.length : 0;
    const passes = options.calibrationMode === 'oneshot' ? 1 : groupsPerBlock + 1;
    const calibrateSeconds = passes * options.samples * forwardSeconds * 1.15;
    const compressSeconds = [options.recipe, ...baselines].reduce((t, recipe) => t + layers.reduce((s, l) => s + coreSecondsEstimate(l.outFeatures, l.inFeatures, recipe), 0), 0);
    const evaluateSeconds = (2 + baselines.length) * (pre.evalWindows ?? 64) * forwardSeconds;
    const seconds = calibrateSeconds + compressSeconds + evaluateSeconds + 2;
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
      forwardSeconds,
      breakdown: { calibrateSeconds, compressSeconds, evaluateSeconds, hessianBytes, modelBytes },
    };
  } finally {
    await loaded.close();
  }
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
