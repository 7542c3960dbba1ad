// Stage 4, write (staged in the working folder): the simulated model (fake-quant weights plus
// A/KV quantization nodes), the packed model (MatMulNBits) and, for outputs written elsewhere, the
// tokenizer and config beside them.
//
// Streaming: the working graph holds references to its weights (src/onnx/store.ts), and
// writeModel copies them into the output's external data file tensor by tensor. The packed model
// is built one block at a time from the checkpoint's codes and scales; each block's MatMulNBits
// tensors go to the working data file before the next block is packed.
import { memMark } from '../memlog';
import { countersSince, osCounters } from '../osCounters';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { setMetadata } from '../../onnx/graph';
import { findLinearLayers } from '../../onnx/linear';
import { mergedSource, remerge, withSharedWeightsOf, type MergedDecoder } from '../../onnx/merged';
import { rotateGraphOnly } from '../../onnx/rotate';
import type { ModelProto } from '../../onnx/proto';
import { writeModel } from '../../onnx/write';
import { throwIfAborted } from '../cancel';
import type { CompressionReport } from '../../protocol/report';
import type { Job } from '../job';
import { staged } from '../outputs';
import { packedModel, packedRowBlockSize, withFakeQuant, type PackedSize } from '../transforms';
import type { CompressedJob } from './calibrate';
import type { LoadedJob } from './load';
import { rotateOptionsOf } from './rotate';
import type { WorkingModel } from '../working';

/** Metadata key the packing writes its summary under (src/onnx/packed.ts). */
const PACKED_META = 'obr.transform.matmulnbits';

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
  const { layers, blocks, checkpoint } = compressed;
  /** Where the graphs' weights are read from: the working store (or the source model, whose external data the in-memory copy reads). */
  const source = working.store ?? loaded;
  const t = performance.now();
  const os0 = osCounters();
  await mkdir(paths.stagingDir, { recursive: true });
  job.progress.report('write', 0, 3, 'simulated model');
  const external = loaded.initializerNames().some((n) => loaded.initializerInfo(n)?.external) ? true : 'auto';
  const fq = options.abits < 16 || options.kvbits < 16 ? withFakeQuant(working.proto, { abits: options.abits, kvbits: options.kvbits }) : { model: working.proto, warnings: [] };
  job.warnings.push(...fq.warnings);
  // A merged decoder is written merged again: the same transform on its with-past branch, with
  // the compressed weights it shares with the no-past branch the pipeline worked on.
  const merged = mergedSource(loaded);
  let withPast = merged ? await mergedWithPast(job, merged, input.working) : undefined;
  const asSource = (plain: ModelProto, transform: (withPast: ModelProto) => ModelProto): ModelProto =>
    merged && withPast ? remerge(merged, plain, transform(withPast)) : plain;
  await writeModel(
    asSource(fq.model, (wp) => (options.abits < 16 || options.kvbits < 16 ? withFakeQuant(wp, { abits: options.abits, kvbits: options.kvbits }).model : wp)),
    staged(paths, paths.simulated),
    { externalData: external, source },
  );
  const simulatedAt = performance.now();
  throwIfAborted(signal);
  memMark('written simulated');
  job.progress.report('write', 1, 3, 'packed model');
  const rowBlockSize = packedRowBlockSize(layers.map((l) => working.layer(l.name)));
  let model: ModelProto | undefined = working.proto;
  const size: Omit<PackedSize, 'bitsPerWeight'> = { layerBytes: 0, weights: 0 };
  let packedLayers = 0;
  for (const block of blocks) {
    throwIfAborted(signal);
    const saved = await checkpoint.loadBlock(block.id, { weights: false });
    const blockLayers = saved.map((st) => ({ layer: working.layer(st.report.name), codes: st.codes, scales: st.scales, ...(st.zeros ? { zeros: st.zeros } : {}), groupSize: options.groupSize }));
    const packed = packedModel(model, working.layers, blockLayers, options.wbits, rowBlockSize);
    if (!packed.model) {
      if (packed.warning) job.warnings.push(packed.warning);
      model = undefined;
      break;
    }
    if (withPast) {
      // The with-past branch's layers read the same weights: matched by weight name. Its packed
      // tensors stay inline, so the merge finds them equal to the no-past branch's and stores them once.
      const wpLayers = findLinearLayers(withPast);
      const byWeight = new Map(wpLayers.map((l) => [l.weightName, l]));
      const mapped = blockLayers.map((p) => {
        const layer = byWeight.get(p.layer.weightName);
        if (!layer) throw new Error(`internal: the merged decoder's with-past branch has no layer reading ${p.layer.weightName}`);
        return { ...p, layer };
      });
      withPast = packedModel(withPast, wpLayers, mapped, options.wbits, rowBlockSize).model!;
      model = packed.model;
    } else model = working.store ? await working.store.externalize(packed.model) : packed.model;
    packedLayers += JSON.parse(model.metadataProps?.find((p) => p.key === PACKED_META)?.value ?? '{"layers":0}').layers as number;
    size.layerBytes += packed.size!.layerBytes;
    size.weights += packed.size!.weights;
  }
  const packedAt = performance.now();
  let packedWritten = false;
  let packedSize: WrittenJob['packedSize'];
  if (model) {
    // Each block's packing records its own layer count: the model's is their sum.
    for (const m of [model, withPast]) {
      const meta = m?.metadataProps?.find((p) => p.key === PACKED_META);
      if (m && meta) setMetadata(m, PACKED_META, JSON.stringify({ ...JSON.parse(meta.value ?? '{}'), layers: packedLayers }));
    }
    model = asSource(model, () => withPast!);
    const packedPath = staged(paths, paths.packed);
    // In a drop-in folder (layouts.ts) the external data keeps the source's file name.
    const dataFileName = paths.folder?.dataFile;
    await writeModel(model, packedPath, { externalData: external, source, ...(dataFileName ? { dataFileName } : {}) });
    packedWritten = true;
    packedSize = { ...size, bitsPerWeight: size.weights ? Number(((size.layerBytes / size.weights) * 8).toFixed(4)) : 0, fileBytes: await filesBytes(packedPath, dataFileName) };
  }
  // Outputs written elsewhere keep their tokenizer and config beside them (obr eval needs them).
  if (paths.dir !== path.dirname(job.source)) {
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json']) {
      const from = path.join(path.dirname(job.source), f);
      if (existsSync(from) && !existsSync(path.join(paths.dir, f))) await copyFile(from, path.join(paths.stagingDir, f));
    }
  }
  const writtenAt = performance.now();
  job.timings.write = (writtenAt - t) / 1000;
  // Where the stage's time goes (the pre-flight models each part: preflight.ts stageSeconds).
  const sec = (a: number, b: number) => ((b - a) / 1000).toFixed(2);
  job.log('debug', `write stage: simulated model ${sec(t, simulatedAt)} s, packing ${sec(simulatedAt, packedAt)} s, packed model ${sec(packedAt, writtenAt)} s; ${countersSince(os0)}`);
  job.progress.report('write', 3, 3, undefined, 0.78);
  throwIfAborted(signal);
  return { simulated: fq.model, packedWritten, ...(packedSize ? { packedSize } : {}) };
}

/**
 * A merged decoder's with-past branch as the pipeline's no-past branch now is: rotated the same
 * way when the job rotates (the rotation is a function of the graph and the seed, so the branch
 * gets the same online Hadamards and the same names for what it rewrites), with the compressed
 * weights. Only the branch's graph is rotated (rotateGraphOnly): every weight the rotation would
 * write is the rotated no-past branch's, taken by name — no weight of the branch is read.
 */
async function mergedWithPast(job: Job, merged: MergedDecoder, working: WorkingModel): Promise<ModelProto> {
  const { options } = job;
  const compressed = working.proto;
  let branch = withSharedWeightsOf(merged, merged.withPast, compressed);
  if (options.abits < 16 || options.kvbits < 16) {
    const plan = await rotateGraphOnly(branch, rotateOptionsOf(job), working.store);
    branch = withSharedWeightsOf(merged, plan.model, compressed);
    const unfilled = (plan.model.graph?.initializer ?? []).filter((t) => plan.placeholders.has(t.name ?? ''));
    const left = new Set(branch.graph?.initializer ?? []);
    const missing = unfilled.filter((t) => left.has(t));
    if (missing.length > 0) {
      throw new Error(`internal: the rotated with-past branch reads ${missing.map((t) => `"${t.name}"`).join(', ')}, which the no-past branch has no rotated weight for`);
    }
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
