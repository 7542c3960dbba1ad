// The worker's one seam onto the pipeline and the ONNX reader: every import of src/pipeline and
// src/onnx by the worker goes through here, so the request handlers stay small.
import type { PipelineHooks } from '../pipeline/api';
import { runCompression as runPipeline } from '../pipeline/compress';
import { estimateCompression as estimatePipeline, stageEstimate } from '../pipeline/preflight';
import { computeSensitivity as sensitivityOf } from '../pipeline/sensitivity';
import { findLinearLayers as findInProto } from '../onnx/linear';
import { loadModel, type LoadedModel } from '../onnx/load';
import { unpackMatMulNBits } from '../onnx/packed';
import type { LinearLayer } from '../onnx/types';
import type { CompressOptions } from '../protocol/recipes';
import type { CompressionReport } from '../protocol/report';
import type { CompressionEstimate, JobSettings } from '../protocol/worker';

export { loadModel, type LoadedModel };

/** The last pre-flight per model and options, so the job's report can store it beside its timings. */
const lastEstimate = new Map<string, Record<string, number>>();
const estimateKey = (modelPath: string, options: CompressOptions) => `${modelPath}\n${JSON.stringify(options)}`;

export function runCompression(modelPath: string, options: CompressOptions, hooks: PipelineHooks, job: JobSettings = {}): Promise<CompressionReport> {
  return runPipeline(modelPath, options, hooks, {
    estimate: lastEstimate.get(estimateKey(modelPath, options)),
    evalText: job.evaluate === false ? null : undefined,
    evalWindows: job.evalWindows && job.evalWindows > 0 ? job.evalWindows : undefined,
    sensitivity: job.sensitivity,
    baselines: job.baselines,
    activationCacheMiB: job.activationCacheMiB,
    layout: job.layout,
  });
}

/** The pipeline's pre-flight estimate (memory, disk, time on this machine). */
export async function estimateCompression(modelPath: string, options: CompressOptions, job: JobSettings = {}): Promise<CompressionEstimate | undefined> {
  const pre = await estimatePipeline(modelPath, options, { evalWindows: job.evalWindows, baselines: job.baselines, evaluate: job.evaluate !== false });
  lastEstimate.set(estimateKey(modelPath, options), stageEstimate(pre));
  return pre;
}

export function findLinearLayers(model: LoadedModel): LinearLayer[] {
  return findInProto(model.model);
}

/** Perplexity with one layer compressed at a time, from a finished report (also written into it). */
export function computeSensitivity(reportPath: string, hooks: PipelineHooks): Promise<Array<{ name: string; perplexity: number }>> {
  return sensitivityOf(reportPath, hooks);
}

/**
 * A layer's group scales, zero points and codes as the job's packed model stores them (MatMulNBits
 * node named like the compressed layer): scales/zeros rows×groups, codes rows×cols. Undefined when
 * the packed model has no such node.
 */
export async function packedQuantization(
  packedPath: string,
  layerName: string,
  asymmetric: boolean,
): Promise<{ scales: Float32Array; zeros?: Int8Array; codes: Int8Array } | undefined> {
  const packed = await loadModel(packedPath);
  try {
    const u = await unpackMatMulNBits(packed, layerName);
    return u ? { scales: u.scales, ...(asymmetric ? { zeros: u.zeros } : {}), codes: u.codes } : undefined;
  } finally {
    await packed.close();
  }
}
