// Stage 4, write (staged in the working folder): the simulated model (fake-quant weights plus
// A/KV quantization nodes), the packed model (MatMulNBits) and, for outputs written elsewhere, the
// tokenizer and config beside them.
import { existsSync } from 'node:fs';
import { copyFile, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { findLinearLayers } from '../../onnx/linear';
import { mergedSource, remerge, withSharedWeightsOf, type MergedDecoder } from '../../onnx/merged';
import { rotateModel } from '../../onnx/rotate';
import { configGeometry } from '../geometry';
import type { ModelProto } from '../../onnx/proto';
import { writeModel } from '../../onnx/write';
import { throwIfAborted } from '../cancel';
import type { CompressionReport } from '../../protocol/report';
import type { Job } from '../job';
import { staged } from '../outputs';
import { packedModel, withFakeQuant, type PackedLayer } from '../transforms';
import type { CompressedJob } from './calibrate';
import type { LoadedJob } from './load';

export interface WrittenJob {
  /** The simulated model as written (fake-quant nodes included): evaluated next. */
  simulated: ModelProto;
  packedWritten: boolean;
  /** The packed model's bytes on disk and its layers' storage (codes + scales + zero points). */
  packedSize?: CompressionReport['packedSize'];
}

export async function writeStage(job: Job, input: LoadedJob, compressed: CompressedJob): Promise<WrittenJob> {
  const { options, paths, signal } = job;
  const { loaded, working } = input;
  const { layers, states } = compressed;
  const t = performance.now();
  await mkdir(paths.stagingDir, { recursive: true });
  job.progress.report('write', 0, 3, 'simulated model');
  const external = loaded.initializerNames().some((n) => loaded.initializerInfo(n)?.external) ? true : 'auto';
  const fq = options.abits < 16 || options.kvbits < 16 ? withFakeQuant(working.proto, { abits: options.abits, kvbits: options.kvbits }) : { model: working.proto, warnings: [] };
  job.warnings.push(...fq.warnings);
  // A merged decoder is written merged again: the same transform on its with-past branch, with
  // the compressed weights it shares with the no-past branch the pipeline worked on.
  const merged = mergedSource(loaded);
  const withPast = merged ? mergedWithPast(job, merged, working.proto) : undefined;
  const asSource = (plain: ModelProto, transform: (withPast: ModelProto) => ModelProto): ModelProto =>
    merged && withPast ? remerge(merged, plain, transform(withPast)) : plain;
  await writeModel(
    asSource(fq.model, (wp) => (options.abits < 16 || options.kvbits < 16 ? withFakeQuant(wp, { abits: options.abits, kvbits: options.kvbits }).model : wp)),
    staged(paths, paths.simulated),
    { externalData: external },
  );
  throwIfAborted(signal);
  job.progress.report('write', 1, 3, 'packed model');
  const packedLayers: PackedLayer[] = layers.map((l) => {
    const st = states.get(l.name)!;
    return { layer: working.layer(l.name), codes: st.codes, scales: st.scales, ...(st.zeros ? { zeros: st.zeros } : {}), groupSize: options.groupSize };
  });
  const packed = packedModel(working.proto, working.layers, packedLayers, options.wbits);
  if (packed.model) {
    packed.model = asSource(packed.model, (wp) => {
      // The with-past branch's layers read the same weights: matched by weight name.
      const wpLayers = findLinearLayers(wp);
      const byWeight = new Map(wpLayers.map((l) => [l.weightName, l]));
      const mapped = packedLayers.map((p) => {
        const layer = byWeight.get(p.layer.weightName);
        if (!layer) throw new Error(`internal: the merged decoder's with-past branch has no layer reading ${p.layer.weightName}`);
        return { ...p, layer };
      });
      return packedModel(wp, wpLayers, mapped, options.wbits).model!;
    });
  }
  let packedWritten = false;
  let packedSize: WrittenJob['packedSize'];
  if (packed.model) {
    const packedPath = staged(paths, paths.packed);
    // In a drop-in folder (layouts.ts) the external data keeps the source's file name.
    const dataFileName = paths.folder?.dataFile;
    await writeModel(packed.model, packedPath, { externalData: external, ...(dataFileName ? { dataFileName } : {}) });
    packedWritten = true;
    packedSize = { ...packed.size!, fileBytes: await filesBytes(packedPath, dataFileName) };
  } else if (packed.warning) job.warnings.push(packed.warning);
  // Outputs written elsewhere keep their tokenizer and config beside them (obr eval needs them).
  if (paths.dir !== path.dirname(job.source)) {
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json']) {
      const from = path.join(path.dirname(job.source), f);
      if (existsSync(from) && !existsSync(path.join(paths.dir, f))) await copyFile(from, path.join(paths.stagingDir, f));
    }
  }
  job.timings.write = (performance.now() - t) / 1000;
  job.progress.report('write', 3, 3, undefined, 0.78);
  throwIfAborted(signal);
  return { simulated: fq.model, packedWritten, ...(packedSize ? { packedSize } : {}) };
}

/**
 * A merged decoder's with-past branch as the pipeline's no-past branch now is: rotated the same
 * way when the job rotates (the rotation is a function of the graph and the seed, so the branch
 * gets the same online Hadamards; its weights are then replaced), with the compressed weights.
 */
function mergedWithPast(job: Job, merged: MergedDecoder, compressed: ModelProto): ModelProto {
  const { options } = job;
  let branch = withSharedWeightsOf(merged, merged.withPast, compressed);
  if (options.abits < 16 || options.kvbits < 16) {
    branch = rotateModel(branch, { seed: options.seed, geometry: job.extra.geometry, configGeometry: configGeometry(job.source) }).model;
    branch = withSharedWeightsOf(merged, branch, compressed);
  }
  return branch;
}

/** Bytes on disk of a written model: the .onnx file plus its external data file, if any. */
async function filesBytes(modelPath: string, dataFileName?: string): Promise<number> {
  let bytes = (await stat(modelPath)).size;
  const data = dataFileName ? path.join(path.dirname(modelPath), dataFileName) : `${modelPath}.data`;
  if (existsSync(data)) bytes += (await stat(data)).size;
  return bytes;
}
