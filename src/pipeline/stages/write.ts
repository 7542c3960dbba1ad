// Stage 4, write (staged in the working folder): the simulated model (fake-quant weights plus
// A/KV quantization nodes), the packed model (MatMulNBits) and, for outputs written elsewhere, the
// tokenizer and config beside them.
import { existsSync } from 'node:fs';
import { copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { ModelProto } from '../../onnx/proto';
import { writeModel } from '../../onnx/write';
import { throwIfAborted } from '../cancel';
import type { Job } from '../job';
import { staged } from '../outputs';
import { packedModel, withFakeQuant } from '../transforms';
import type { CompressedJob } from './calibrate';
import type { LoadedJob } from './load';

export interface WrittenJob {
  /** The simulated model as written (fake-quant nodes included): evaluated next. */
  simulated: ModelProto;
  packedWritten: boolean;
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
  await writeModel(fq.model, staged(paths, paths.simulated), { externalData: external });
  throwIfAborted(signal);
  job.progress.report('write', 1, 3, 'packed model');
  const packed = packedModel(
    working.proto,
    working.layers,
    layers.map((l) => ({ layer: working.layer(l.name), codes: states.get(l.name)!.codes, scales: states.get(l.name)!.scales })),
    options.wbits,
  );
  let packedWritten = false;
  if (packed.model) {
    await writeModel(packed.model, staged(paths, paths.packed), { externalData: external });
    packedWritten = true;
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
  return { simulated: fq.model, packedWritten };
}
