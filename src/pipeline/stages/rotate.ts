// Stage 2, rotate: QuaRot (§1.3) for activation / KV quantization, as a graph transform on the
// working model. Keeps the unrotated dense graph (the perplexity reference) and the rotated dense
// graph (the reference for baselines, sensitivity and one-shot calibration).
import type { ModelProto } from '../../onnx/proto';
import { rotateModel } from '../../onnx/rotate';
import type { Job } from '../job';
import type { LoadedJob } from './load';

export interface RotatedJob {
  /** Inline, unrotated, dense: the dense perplexity reference. */
  sourceProto: ModelProto;
  /** Rotated (when `rotated`), dense. */
  baseProto: ModelProto;
  rotated: boolean;
}

export function rotateStage(job: Job, input: LoadedJob): RotatedJob {
  const { options } = job;
  const { working } = input;
  const sourceProto = working.proto;
  const rotated = options.abits < 16 || options.kvbits < 16;
  if (rotated) {
    const t = performance.now();
    job.progress.report('rotate', 0, 1, 'rotating the residual stream (QuaRot)');
    const r = rotateModel(working.proto, { seed: options.seed });
    working.replaceProto(r.model);
    job.warnings.push(...r.warnings);
    job.timings.rotate = (performance.now() - t) / 1000;
    job.progress.report('rotate', 1, 1);
  }
  return { sourceProto, baseProto: working.proto, rotated };
}
