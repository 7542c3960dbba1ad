// Compressing one layer on its captured Hessian (§1.7, src/core), with the job's recipe and every
// baseline recipe on the same Hessian; progress and live inspector updates per layer.
import type { MatrixBackend } from '../../core/backend';
import { compressLayer, type CompressOptionsCore } from '../../core/compress';
import type { LinearLayer } from '../../onnx/types';
import type { RecipeName } from '../../protocol/recipes';
import { createOrtBackend } from '../../runtime/ortBackend';
import type { LayerReport } from '../../protocol/report';
import { throwIfAborted } from '../cancel';
import { collectGarbage } from '../memlog';
import type { CapturedStats } from '../capture';
import type { BaselineLayer, LayerState } from '../checkpoint';
import { round6, sparsityFor, type Job } from '../job';
import { effectiveSparsity } from '../outputs';
import type { WorkingModel } from '../working';

/** Counts of finished work across the calibrate ⇄ compress stage, for progress and timings. */
export class LayerProgress {
  unitsDone = 0;
  layersDone = 0;
  baselineLayersDone = 0;
  calibSeconds = 0;
  compressSeconds = 0;
  baselineSeconds = 0;

  constructor(
    /** Capture passes + layers × (1 + baselines). */
    readonly units: number,
    readonly layers: number,
  ) {}

  /** Overall job fraction while in this stage (5 % … 75 %). */
  overall(partialUnit = 0): number {
    return 0.05 + 0.7 * ((this.unitsDone + partialUnit) / this.units);
  }
}

/**
 * Core options for one recipe on one layer: OBR recipes get the job's solver; the batched one
 * runs its products on onnxruntime with the job's providers (one backend per job, opened here at
 * the first OBR layer) and reports its iterations as progress.
 */
async function solverOptions(job: Job, recipe: RecipeName, label: string, p: LayerProgress): Promise<CompressOptionsCore> {
  const { signal, extra, options } = job;
  if (recipe !== 'obr-rtn' && recipe !== 'obr-gptq') return { signal, threads: extra.threads };
  if ((options.solver ?? 'batched') === 'exact') return { signal, threads: extra.threads, solver: 'exact' };
  if (!job.matrixBackend) {
    job.matrixBackend = await createOrtBackend({ executionProviders: options.executionProviders, threads: extra.threads });
    const { used, tried } = job.matrixBackend.provider;
    const failed = tried.filter((x) => x.error);
    job.log('info', `batched OBR solver: products on ${used}${failed.length ? ` (fell back from ${failed.map((x) => `${x.name}: ${x.error}`).join('; ')})` : ''}`);
  }
  return {
    signal,
    threads: extra.threads,
    solver: 'batched',
    backend: job.matrixBackend as MatrixBackend,
    onSolverIteration: (q) => job.progress.report('compress', p.layersDone, p.layers, `${label}: solver step ${q.step}, iteration ${q.iteration}`, p.overall()),
  };
}

export async function compressOneLayer(job: Job, working: WorkingModel, layer: LinearLayer, st: CapturedStats, p: LayerProgress): Promise<LayerState> {
  const { options, signal, baselines } = job;
  throwIfAborted(signal);
  const t0 = performance.now();
  const weight = await working.readWeight(layer);
  collectGarbage(weight.byteLength); // the weight's stored bytes, before the core allocates its copies
  const r = await compressLayer(
    { weight, rows: layer.outFeatures, cols: layer.inFeatures, hessian: st.hessian, channelEnergy: st.channelEnergy },
    { method: options.recipe, sparsity: effectiveSparsity(options), wbits: options.wbits, groupSize: options.groupSize, asymmetric: options.asymmetric, alpha: options.alpha, damp: options.damp },
    await solverOptions(job, options.recipe, layer.name, p),
  );
  p.compressSeconds += (performance.now() - t0) / 1000;
  p.unitsDone++;
  const report: LayerReport = {
    name: layer.name,
    block: layer.block,
    role: layer.role,
    rows: layer.outFeatures,
    cols: layer.inFeatures,
    sparsity: r.stats.sparsity,
    wbits: options.wbits,
    groupSize: options.groupSize,
    asymmetric: options.asymmetric,
    loss: r.stats.loss,
    seconds: r.stats.seconds,
    codeHistogram: r.stats.codeHistogram,
    // Per row only: group scales (rows × groups) live in the packed model's MatMulNBits
    // initializers, where the inspector reads them; the report stays small.
    ...(options.groupSize === 0 ? { rowScales: Array.from(r.scales, round6) } : {}),
    ...(options.groupSize === 0 && r.zeros ? { rowZeros: Array.from(r.zeros) } : {}),
  };
  p.layersDone++;
  job.hooks.onLayer?.(report);
  job.progress.report('compress', p.layersDone, p.layers, `${layer.name} (${layer.role}, ${layer.outFeatures}×${layer.inFeatures})`, p.overall());
  // The same layer with each baseline recipe: same dense weight, same captured Hessian.
  const baselineLayers: BaselineLayer[] = [];
  for (const recipe of baselines) {
    throwIfAborted(signal);
    const t1 = performance.now();
    const b = await compressLayer(
      { weight, rows: layer.outFeatures, cols: layer.inFeatures, hessian: st.hessian, channelEnergy: st.channelEnergy },
      { method: recipe, sparsity: sparsityFor(recipe, options), wbits: options.wbits, groupSize: options.groupSize, asymmetric: options.asymmetric, alpha: options.alpha, damp: options.damp },
      await solverOptions(job, recipe, `${recipe}: ${layer.name}`, p),
    );
    baselineLayers.push({ recipe, loss: b.stats.loss, weight: Float32Array.from(b.weight) });
    p.baselineSeconds += (performance.now() - t1) / 1000;
    p.unitsDone++;
    p.baselineLayersDone++;
    job.progress.report('baseline', p.baselineLayersDone, p.layers * baselines.length, `${recipe}: ${layer.name}`, p.overall());
  }
  return { report, weight: r.weight, scales: r.scales, codes: r.codes, ...(r.zeros ? { zeros: r.zeros } : {}), ...(baselines.length ? { baselines: baselineLayers } : {}) };
}
