// Per-layer sensitivity: perplexity of the dense model with only ONE layer replaced by its
// compressed weights, for each layer, on a few evaluation windows spread over the text. Shows
// which layers the compression hurts most (the inspector plots it). Cached in the report.
import { readFile } from 'node:fs/promises';
import { decoderView } from '../onnx/merged';
import { loadModel } from '../onnx/load';
import { findLinearLayers } from '../onnx/linear';
import type { ModelProto } from '../onnx/proto';
import { rotateModel } from '../onnx/rotate';
import type { LinearLayer } from '../onnx/types';
import { readLayerWeight64, replaceLayerWeights } from '../onnx/weights';
import type { CompressionReport } from '../protocol/report';
import { evaluationWindows, readText, type TokenWindows } from '../runtime/text';
import { loadTokenizer } from '../runtime/tokenizer';
import type { PipelineHooks } from './api';
import { defaultEvaluationText } from './assets';
import { throwIfAborted } from './cancel';
import { atomicWrite } from './checkpoint';
import { defaultBatch, openForPerplexity, perplexityOf } from './evaluate';
import { WorkingModel } from './working';

export const DEFAULT_SENSITIVITY_WINDOWS = 8;

export async function layerSensitivity(
  base: ModelProto,
  allLayers: readonly LinearLayer[],
  compressed: ReadonlyArray<{ name: string; weight: Float64Array }>,
  windows: TokenWindows,
  opts: { executionProviders: readonly string[]; batch?: number; signal?: AbortSignal; onLayer?(done: number, total: number, name: string): void },
): Promise<Array<{ name: string; perplexity: number }>> {
  const out: Array<{ name: string; perplexity: number }> = [];
  for (let i = 0; i < compressed.length; i++) {
    throwIfAborted(opts.signal);
    const { name, weight } = compressed[i]!;
    const lm = await openForPerplexity(replaceLayerWeights(base, allLayers, new Map([[name, weight]])), opts.executionProviders);
    try {
      const r = await perplexityOf(lm, windows, { batch: opts.batch ?? defaultBatch(windows.seqlen), signal: opts.signal });
      out.push({ name, perplexity: r.perplexity });
    } finally {
      await lm.release();
    }
    opts.onLayer?.(i + 1, compressed.length, name);
  }
  return out;
}

/**
 * Sensitivity of the layers of a finished job, from its report: the source model (rotated as the
 * job did), one compressed layer at a time read from the simulated model. The result is written
 * into the report file too.
 */
export async function computeSensitivity(
  reportPath: string,
  hooks: PipelineHooks = {},
  windowsWanted = DEFAULT_SENSITIVITY_WINDOWS,
): Promise<Array<{ name: string; perplexity: number }>> {
  const report = JSON.parse(await readFile(reportPath, 'utf8')) as CompressionReport;
  if (!report.outputs.simulated) throw new Error(`${reportPath} names no simulated model`);
  const o = report.options as { rotated?: boolean; seed?: number; executionProviders?: string[]; evalText?: string | null };
  const eps = o.executionProviders ?? ['cpu'];
  const source = decoderView(await loadModel(report.source.path));
  const sim = decoderView(await loadModel(report.outputs.simulated));
  try {
    const working = await WorkingModel.fromLoaded(source);
    if (o.rotated) await working.replaceProto(rotateModel(working.proto, { seed: o.seed ?? 0 }).model);
    const simLayers = new Map(findLinearLayers(sim.model).map((l) => [l.name, l]));
    const compressed: Array<{ name: string; weight: Float64Array }> = [];
    for (const l of report.layers) {
      const s = simLayers.get(l.name);
      if (s) compressed.push({ name: l.name, weight: await readLayerWeight64(sim, s) });
    }
    const tokenizer = await loadTokenizer(report.source.path);
    const text = await readText(o.evalText ?? (typeof report.options.evalText === 'string' ? report.options.evalText : defaultEvaluationText(report.source.path)));
    const windows = evaluationWindows(tokenizer.encode(text.text), report.calibration.seqlen, { maxWindows: windowsWanted, spread: true });
    const result = await layerSensitivity(working.proto, working.layers, compressed, windows, {
      executionProviders: eps,
      signal: hooks.signal,
      onLayer: (done, total, name) => hooks.onProgress?.({ stage: 'evaluate', done, total, message: `sensitivity ${name}` }),
    });
    await atomicWrite(reportPath, JSON.stringify({ ...report, sensitivity: result }, null, 1) + '\n');
    return result;
  } finally {
    await source.close();
    await sim.close();
  }
}
