// Writing a ModelProto to disk: everything not replaced is kept (opsets, metadata, names, value
// infos, node order); weights go inline or to one external data file, streamed tensor by tensor
// (never one giant buffer). Writes are atomic: temp files in the target folder, renamed into place
// at the end, removed on any failure. The source model's files are never written over.
import { mkdir, open, rename, rm, realpath, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { encodeModel, type ModelProto, type TensorProto } from './proto';
import { ModelWriteInputError } from './errors';
import { cloneModel } from './graph';
import { describeInitializer, PROTOBUF_LIMIT_BYTES, wrapModel, type InitializerInfo, type TensorReader } from './load';
import { inlineTensorBytes, isExternal, tensorHeader } from './tensor';
import { replacedTensor } from './weights';

export interface WriteModelOptions {
  /**
   * true: weights ≥ sizeThreshold go to `<name>.data`; false: all inline (must stay < 2 GiB);
   * 'auto' (default): external only when the result would exceed protobuf's 2 GiB limit;
   * 'keep': tensors already external keep pointing at the source's data file (no copy; for
   * temporary graphs such as calibration models written beside the source), others inline.
   */
  externalData?: boolean | 'auto' | 'keep';
  /**
   * Where the graph's external data is read from: the model it came from (a LoadedModel) or the
   * job's working store (src/onnx/store.ts). Its files are never overwritten.
   */
  source?: TensorReader & { readonly path?: string };
  /** External data file name, in the output's folder (default: `<output file name>.data`). */
  dataFileName?: string;
  /** With external data, tensors smaller than this stay inline (default 1024 bytes, like onnx.save). */
  sizeThreshold?: number;
  /**
   * Replacement values per initializer, asked for one tensor at a time while writing (so compressed
   * weights can come from disk or be computed on demand): storage order and shape, or undefined to
   * keep the tensor.
   */
  weightProvider?: (name: string, info: InitializerInfo) => Promise<ArrayLike<number> | undefined> | ArrayLike<number> | undefined;
}

export interface WriteResult {
  path: string;
  /** External data file, when one was written. */
  dataPath?: string;
  /** Bytes of the .onnx file. */
  bytes: number;
  /** Bytes of the external data file (0 without). */
  dataBytes: number;
}

/** Leaves headroom under 2 GiB for the graph itself when deciding 'auto'. */
const AUTO_EXTERNAL_BYTES = PROTOBUF_LIMIT_BYTES - 64 * 1024 * 1024;
/** Offsets of big external tensors are page-aligned (mmap-friendly), small ones 64-byte aligned. */
const PAGE = 4096;

export async function writeModel(model: ModelProto, path: string, options: WriteModelOptions = {}): Promise<WriteResult> {
  if (!model.graph) throw new ModelWriteInputError('bad-option', 'writeModel: the model has no graph');
  const out = resolve(path);
  const outDir = dirname(out);
  if (!options.source && needsSource(model)) {
    throw new ModelWriteInputError(
      'bad-option',
      'writeModel: the model has external-data weights; pass `source` (the LoadedModel it came from) so they can be read',
    );
  }
  const source = options.source ?? wrapModel(model, outDir);
  const threshold = options.sizeThreshold ?? 1024;
  const inits = model.graph.initializer ?? [];
  const infos = inits.map((t, i) => describeInitializer(t, i, source.dir));
  const total = infos.reduce((s, x) => s + x.byteLength, 0);
  const mode = options.externalData ?? 'auto';
  const external = mode === true || (mode === 'auto' && total > AUTO_EXTERNAL_BYTES);
  if (mode === false && total > AUTO_EXTERNAL_BYTES) {
    throw new ModelWriteInputError(
      'bad-option',
      `the model's weights take ${(total / 2 ** 30).toFixed(2)} GiB, over protobuf's 2 GiB limit for one .onnx file; write it with external data (externalData: true or 'auto')`,
    );
  }
  const dataName = options.dataFileName ?? `${basename(out)}.data`;
  if (dataName.includes('/') || dataName.includes(sep) || dataName === '' || dataName === '.' || dataName === '..') {
    throw new ModelWriteInputError('bad-option', `dataFileName "${dataName}" must be a plain file name (it is stored relative to the model)`);
  }
  const dataPath = resolve(outDir, dataName);
  await refuseSourcePaths(options.source, infos, [out, ...(external ? [dataPath] : [])]);

  await mkdir(outDir, { recursive: true });
  const tag = `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmpModel = out + tag;
  const tmpData = dataPath + tag;
  let dataHandle: FileHandle | undefined;
  /** External bytes read inline (handed back to the reader once the model is encoded). */
  let inlineRead = 0;
  try {
    const result = cloneModel(model);
    const newInits: TensorProto[] = [];
    let offset = 0;
    if (external) dataHandle = await open(tmpData, 'w');
    for (let i = 0; i < inits.length; i++) {
      const t = inits[i];
      const info = infos[i];
      const replacement = options.weightProvider ? await options.weightProvider(info.name, info) : undefined;
      if (replacement) {
        const fresh = replacedTensor(t, replacement);
        if (external && info.byteLength >= threshold) {
          offset = align(offset, info.byteLength);
          await writeAll(dataHandle!, fresh.rawData!, offset);
          newInits.push(externalTensor(t, dataName, offset, info.byteLength));
          offset += info.byteLength;
        } else newInits.push(fresh);
        continue;
      }
      if (info.external) {
        if (mode === 'keep') {
          newInits.push(relocated(t, info.external.file, outDir));
        } else if (external && info.byteLength >= threshold) {
          offset = align(offset, info.byteLength);
          let at = offset;
          for await (const chunk of source.streamTensor(t)) {
            await writeAll(dataHandle!, chunk, at);
            at += chunk.length;
          }
          newInits.push(externalTensor(t, dataName, offset, info.byteLength));
          offset += info.byteLength;
        } else {
          const bytes = await source.readTensor(t);
          inlineRead += bytes.length;
          newInits.push(inlineTensor(t, bytes));
        }
        continue;
      }
      if (external && info.byteLength >= threshold) {
        offset = align(offset, info.byteLength);
        await writeAll(dataHandle!, inlineTensorBytes(t), offset);
        newInits.push(externalTensor(t, dataName, offset, info.byteLength));
        offset += info.byteLength;
      } else {
        newInits.push(t); // untouched: the very same message, bit for bit
      }
    }
    result.graph!.initializer = newInits;
    let dataBytes = 0;
    if (dataHandle) {
      await dataHandle.sync();
      dataBytes = (await dataHandle.stat()).size;
      await dataHandle.close();
      dataHandle = undefined;
    }
    const bytes = encodeModel(result);
    result.graph!.initializer = [];
    source.release(inlineRead);
    inlineRead = 0;
    if (bytes.length > PROTOBUF_LIMIT_BYTES) {
      throw new ModelWriteInputError('bad-option', `the .onnx would be ${bytes.length} bytes, over protobuf's 2 GiB limit; write it with external data`);
    }
    const fh = await open(tmpModel, 'w');
    try {
      await writeAll(fh, bytes, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (external) await rename(tmpData, dataPath);
    try {
      await rename(tmpModel, out);
    } catch (e) {
      if (external) await rm(dataPath, { force: true }); // no .data without its .onnx
      throw e;
    }
    return { path: out, dataPath: external ? dataPath : undefined, bytes: bytes.length, dataBytes };
  } catch (e) {
    source.release(inlineRead);
    if (dataHandle) await dataHandle.close().catch(() => undefined);
    await rm(tmpModel, { force: true });
    await rm(tmpData, { force: true });
    throw e;
  }
}

function align(offset: number, size: number): number {
  const a = size >= 65536 ? PAGE : 64;
  return Math.ceil(offset / a) * a;
}

async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < bytes.length; ) {
    const { bytesWritten } = await fh.write(bytes, done, Math.min(bytes.length - done, 1 << 30), position + done);
    done += bytesWritten;
  }
}

function externalTensor(t: TensorProto, location: string, offset: number, length: number): TensorProto {
  return {
    ...tensorHeader(t),
    dataLocation: 1, // EXTERNAL
    externalData: [
      { key: 'location', value: location },
      { key: 'offset', value: String(offset) },
      { key: 'length', value: String(length) },
    ],
  };
}

function inlineTensor(t: TensorProto, bytes: Uint8Array): TensorProto {
  const out: TensorProto = { ...tensorHeader(t), rawData: bytes };
  // An empty doc string spelled out in the message is kept (the same bytes as the tensor inline).
  if (Object.prototype.hasOwnProperty.call(t, 'docString') && typeof t.docString === 'string') out.docString = t.docString;
  return out;
}

/** The same external tensor with `location` relative to a new model folder. */
function relocated(t: TensorProto, file: string, outDir: string): TensorProto {
  const location = relative(outDir, file);
  return {
    ...tensorHeader(t),
    dataLocation: 1,
    externalData: (t.externalData ?? []).map((e) => (e.key === 'location' ? { key: 'location', value: isAbsolute(location) ? file : location } : e)),
  };
}

async function canonical(p: string): Promise<string> {
  try {
    return await realpath(p);
  } catch {
    try {
      return resolve(await realpath(dirname(p)), basename(p));
    } catch {
      return resolve(p);
    }
  }
}

/** Refuses to write over the source model or any of the external data files it reads from. */
async function refuseSourcePaths(source: { readonly path?: string } | undefined, infos: InitializerInfo[], targets: string[]): Promise<void> {
  const protectedFiles = new Set<string>();
  if (source?.path) protectedFiles.add(await canonical(source.path));
  for (const i of infos) if (i.external) protectedFiles.add(await canonical(i.external.file));
  for (const target of targets) {
    if (protectedFiles.has(await canonical(target))) {
      throw new ModelWriteInputError(
        'overwrite-source',
        `refusing to write ${target}: it is the source model (or its external data) being read; choose another output name — OBR Studio writes results beside the source, never over it`,
      );
    }
  }
}

/** Whether a tensor will need its source's files (external data) to be written. */
export function needsSource(model: ModelProto): boolean {
  return (model.graph?.initializer ?? []).some(isExternal);
}
