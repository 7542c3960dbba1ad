// Reading an ONNX model: the ModelProto (protobuf via onnx-proto), plus lazy access to weights.
// Weights stored inside the .onnx are views of the file buffer (no copy); external-data weights
// (`location`/`offset`/`length` relative to the model's folder) are read only when requested, with
// positioned reads on a kept file handle, so a multi-GB model never sits in memory whole.
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { constants as bufferConstants } from 'node:buffer';
import { dirname, isAbsolute, resolve } from 'node:path';
import { decodeModel, type ModelProto, type TensorProto } from './proto';
import { ModelFormatError } from './errors';
import {
  dataTypeName,
  decodeFloats,
  elementCount,
  elementSize,
  externalDataEntry,
  inlineTensorBytes,
  isExternal,
  tensorDims,
  toNumber,
  type LongLike,
} from './tensor';

/** Protobuf's hard limit: a serialized message (the .onnx itself) must stay under 2 GiB. */
export const PROTOBUF_LIMIT_BYTES = 2 ** 31 - 1;
/** Positioned reads are chunked; a single read(2) can't return more than ~2 GiB. */
const READ_CHUNK_BYTES = 64 * 1024 * 1024;

export interface ExternalLocation {
  /** Absolute path of the data file. */
  file: string;
  /** `location` as written in the model (relative to the model's folder). */
  location: string;
  offset: number;
  length: number;
}

export interface InitializerInfo {
  name: string;
  dims: number[];
  /** ONNX TensorProto.DataType code. */
  dataType: number;
  /** Readable element type: float32, float16, bfloat16, int64, … */
  dtype: string;
  elementCount: number;
  /** Bytes of the stored values. */
  byteLength: number;
  /** Set when the values live in an external data file. */
  external?: ExternalLocation;
  /** Index in graph.initializer. */
  index: number;
}

export interface ReadWeightOptions {
  /** Accept NaN/±Inf values instead of throwing ModelFormatError('non-finite-weight'). */
  allowNonFinite?: boolean;
}

/**
 * Reads an initializer's stored bytes from its own TensorProto: inline bytes, or the external data
 * its `location`/`offset`/`length` point at (relative to `dir`, or absolute). Reading by the tensor
 * rather than by name lets graphs that share names but differ in weights (the dense and the
 * compressed working copies) read the right bytes through one reader.
 */
export interface TensorReader {
  /** Folder relative external-data locations are resolved against. */
  readonly dir: string;
  /** The stored little-endian bytes (a view for inline tensors; don't mutate). */
  readTensor(t: TensorProto): Promise<Uint8Array>;
  /** The stored bytes in chunks of at most `chunkBytes` (each chunk is reused: copy it or use it at once). */
  streamTensor(t: TensorProto, chunkBytes?: number): AsyncGenerator<Uint8Array>;
  /**
   * Hands back `bytes` returned by readTensor once they are dropped (resident-bytes accounting of
   * the working store, src/onnx/store.ts; a no-op for a model opened from disk).
   */
  release(bytes: number): void;
}

export interface LoadedModel extends TensorReader {
  /** Absolute path of the .onnx file. */
  readonly path: string;
  /** Folder external-data locations are relative to. */
  readonly dir: string;
  readonly model: ModelProto;
  /** Size of the .onnx file itself. */
  readonly fileBytes: number;
  /** Sum of all initializer bytes (inline + external). */
  readonly weightBytes: number;
  initializerInfo(name: string): InitializerInfo | undefined;
  initializerNames(): string[];
  /** The initializer's stored little-endian bytes (a view for inline tensors; don't mutate). */
  readBytes(name: string): Promise<Uint8Array>;
  /** Float weights (fp32/fp16/bf16/fp64 storage) as float32 values, in storage order. */
  readWeight(name: string, options?: ReadWeightOptions): Promise<Float32Array>;
  /** Same as readWeight, as float64. */
  readWeight64(name: string, options?: ReadWeightOptions): Promise<Float64Array>;
  /** Streams an initializer's stored bytes in chunks (for copying big external tensors). */
  streamBytes(name: string, chunkBytes?: number): AsyncGenerator<Uint8Array>;
  /** Closes the external-data file handles; the model proto stays usable. */
  close(): Promise<void>;
}

/** Parses ONNX bytes into a ModelProto, mapping protobuf failures to ModelFormatError. */
export function parseModel(bytes: Uint8Array, label = 'the model'): ModelProto {
  if (bytes.length === 0) {
    throw new ModelFormatError('empty-file', `${label} is empty (0 bytes); the download or export did not finish — export it again`);
  }
  let model: ModelProto;
  try {
    model = decodeModel(bytes);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    // Exporters write ir_version (field 1, a small varint) first; a file that starts like that and
    // runs out of bytes mid-record is a cut-off model, anything else is not ONNX at all.
    const onnxPrefix = bytes[0] === 0x08 && bytes[1] >= 1 && bytes[1] <= 15;
    if (/index out of range/.test(msg) && onnxPrefix) {
      throw new ModelFormatError(
        'truncated',
        `${label} ends in the middle of a record (${bytes.length} bytes read): the file is truncated; copy or export it again`,
        { cause: e },
      );
    }
    throw new ModelFormatError(
      'not-onnx',
      `${label} is not an ONNX model (protobuf decoding failed: ${msg}); pick a .onnx file exported with torch.onnx.export or Optimum`,
      { cause: e },
    );
  }
  if (!model.graph || toNumber(model.irVersion as number | LongLike) <= 0) {
    const why = !model.graph ? 'it has no graph' : 'it has no ir_version';
    throw new ModelFormatError(
      model.graph ? 'not-onnx' : 'no-graph',
      `${label} is not a usable ONNX model: ${why}; pick a .onnx file exported with torch.onnx.export or Optimum`,
    );
  }
  return model;
}

/** Opens a model: parses the .onnx and indexes its initializers; external data stays on disk. */
export async function loadModel(path: string): Promise<LoadedModel> {
  const abs = resolve(path);
  let size: number;
  try {
    const st = await stat(abs);
    if (!st.isFile()) throw new ModelFormatError('not-onnx', `${abs} is not a file; pick a .onnx model file`);
    size = st.size;
  } catch (e) {
    if (e instanceof ModelFormatError) throw e;
    throw new ModelFormatError('not-onnx', `can't open ${abs}: ${(e as Error).message}; check the path`, { cause: e });
  }
  if (size > PROTOBUF_LIMIT_BYTES) {
    throw new ModelFormatError(
      'too-large',
      `${abs} is ${(size / 2 ** 30).toFixed(1)} GiB, over protobuf's 2 GiB limit for one .onnx file; save the model with external data (onnx.save(model, path, save_as_external_data=True))`,
    );
  }
  let bytes: Uint8Array;
  try {
    bytes = await readFile(abs);
  } catch (e) {
    throw new ModelFormatError('not-onnx', `can't read ${abs}: ${(e as Error).message}; check the file's permissions`, { cause: e });
  }
  const model = parseModel(bytes, abs);
  const loaded = new LoadedOnnxModel(abs, model, size);
  await loaded.checkExternalFiles();
  return loaded;
}

/** Wraps an in-memory ModelProto (no external data unless `dir` resolves it) in the same API. */
export function wrapModel(model: ModelProto, dir = process.cwd(), path = resolve(dir, 'in-memory.onnx')): LoadedModel {
  return new LoadedOnnxModel(resolve(path), model, 0, resolve(dir));
}

class LoadedOnnxModel implements LoadedModel {
  readonly dir: string;
  readonly weightBytes: number;
  private readonly infos = new Map<string, InitializerInfo>();
  private readonly tensors = new Map<string, TensorProto>();
  private readonly handles = new Map<string, Promise<FileHandle>>();

  constructor(
    readonly path: string,
    readonly model: ModelProto,
    readonly fileBytes: number,
    dir?: string,
  ) {
    this.dir = dir ?? dirname(path);
    let total = 0;
    const inits = model.graph?.initializer ?? [];
    for (let index = 0; index < inits.length; index++) {
      const t = inits[index];
      const name = t.name ?? '';
      const info = describeInitializer(t, index, this.dir);
      this.infos.set(name, info);
      this.tensors.set(name, t);
      total += info.byteLength;
    }
    this.weightBytes = total;
  }

  /** Every external file must exist and be long enough for every tensor that points into it. */
  async checkExternalFiles(): Promise<void> {
    const needed = new Map<string, { end: number; tensor: string }>();
    for (const info of this.infos.values()) {
      if (!info.external) continue;
      const end = info.external.offset + info.external.length;
      const prev = needed.get(info.external.file);
      if (!prev || end > prev.end) needed.set(info.external.file, { end, tensor: info.name });
    }
    for (const [file, { end, tensor }] of needed) {
      let size: number;
      try {
        size = (await stat(file)).size;
      } catch (e) {
        throw new ModelFormatError(
          'external-data-missing',
          `the model's weights are stored in an external data file ${file}, which can't be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); keep the .data file next to the .onnx file with its original name`,
          { cause: e },
        );
      }
      if (size < end) {
        throw new ModelFormatError(
          'external-data-short',
          `the external data file ${file} has ${size} bytes but initializer "${tensor}" needs bytes up to ${end}: the file is truncated or belongs to another export; copy it again`,
        );
      }
    }
  }

  initializerInfo(name: string): InitializerInfo | undefined {
    return this.infos.get(name);
  }

  initializerNames(): string[] {
    return [...this.infos.keys()];
  }

  private tensor(name: string): { t: TensorProto; info: InitializerInfo } {
    const t = this.tensors.get(name);
    const info = this.infos.get(name);
    if (!t || !info) {
      throw new ModelFormatError('unknown-initializer', `the model has no initializer named "${name}"; run \`obr inspect\` to list its weights`);
    }
    return { t, info };
  }

  async readBytes(name: string): Promise<Uint8Array> {
    const { t, info } = this.tensor(name);
    if (!info.external) return inlineTensorBytes(t);
    if (info.byteLength > bufferConstants.MAX_LENGTH) {
      throw new ModelFormatError('too-large', `initializer "${name}" (${info.byteLength} bytes) is larger than one buffer can hold; stream it with streamBytes`);
    }
    const out = new Uint8Array(info.byteLength);
    await this.readExternalInto(info.external, out);
    return out;
  }

  async *streamBytes(name: string, chunkBytes = READ_CHUNK_BYTES): AsyncGenerator<Uint8Array> {
    yield* this.streamTensor(this.tensor(name).t, chunkBytes);
  }

  readTensor(t: TensorProto): Promise<Uint8Array> {
    return readTensorWith(t, this.dir, (f) => this.handle(f));
  }

  streamTensor(t: TensorProto, chunkBytes = READ_CHUNK_BYTES): AsyncGenerator<Uint8Array> {
    return streamTensorWith(t, this.dir, (f) => this.handle(f), chunkBytes);
  }

  release(): void {
    // bytes read from the source model are not accounted
  }

  readWeight(name: string, options?: ReadWeightOptions): Promise<Float32Array> {
    return this.readFloats(name, (n) => new Float32Array(n), options);
  }

  readWeight64(name: string, options?: ReadWeightOptions): Promise<Float64Array> {
    return this.readFloats(name, (n) => new Float64Array(n), options);
  }

  private async readFloats<T extends Float32Array | Float64Array>(
    name: string,
    alloc: (n: number) => T,
    options?: ReadWeightOptions,
  ): Promise<T> {
    const { t, info } = this.tensor(name);
    const out = alloc(info.elementCount);
    if (info.external && out instanceof Float32Array && info.dataType === 1) {
      // fp32 external: read straight into the result's buffer, no second copy.
      await this.readExternalInto(info.external, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
    } else {
      const bytes = info.external ? await this.readBytes(name) : inlineTensorBytes(t);
      decodeFloats(bytes, info.dataType, out);
    }
    if (!options?.allowNonFinite) assertFinite(name, out);
    return out;
  }

  private handle(file: string): Promise<FileHandle> {
    return openHandle(this.handles, file);
  }

  private async readExternalInto(ext: ExternalLocation, out: Uint8Array): Promise<void> {
    await readExternalInto(await this.handle(ext.file), ext, out);
  }

  async close(): Promise<void> {
    await closeHandles(this.handles);
  }
}

/** The kept read handle of `file` in `handles`, opened on first use. */
export function openHandle(handles: Map<string, Promise<FileHandle>>, file: string): Promise<FileHandle> {
  let h = handles.get(file);
  if (!h) {
    h = open(file, 'r').catch((e: NodeJS.ErrnoException) => {
      handles.delete(file);
      throw new ModelFormatError(
        'external-data-missing',
        `can't open the external data file ${file} (${e.code ?? e.message}); keep the .data file next to the .onnx file with its original name`,
        { cause: e },
      );
    });
    handles.set(file, h);
  }
  return h;
}

export async function closeHandles(handles: Map<string, Promise<FileHandle>>): Promise<void> {
  const hs = [...handles.values()];
  handles.clear();
  for (const h of hs) {
    try {
      await (await h).close();
    } catch {
      // a handle that never opened has nothing to close
    }
  }
}

async function readExternalInto(fh: FileHandle, ext: ExternalLocation, out: Uint8Array): Promise<void> {
  for (let done = 0; done < out.length; ) {
    const n = Math.min(READ_CHUNK_BYTES, out.length - done);
    await readFully(fh, out.subarray(done, done + n), n, ext.offset + done, ext.file);
    done += n;
  }
}

/** readTensor over kept handles (src/onnx/store.ts shares it). */
export async function readTensorWith(t: TensorProto, dir: string, handle: (file: string) => Promise<FileHandle>): Promise<Uint8Array> {
  if (!isExternal(t)) return inlineTensorBytes(t);
  const ext = describeInitializer(t, 0, dir).external!;
  if (ext.length > bufferConstants.MAX_LENGTH) {
    throw new ModelFormatError('too-large', `initializer "${t.name}" (${ext.length} bytes) is larger than one buffer can hold; stream it with streamTensor`);
  }
  const out = new Uint8Array(ext.length);
  await readExternalInto(await handle(ext.file), ext, out);
  return out;
}

/** streamTensor over kept handles. */
export async function* streamTensorWith(t: TensorProto, dir: string, handle: (file: string) => Promise<FileHandle>, chunkBytes = READ_CHUNK_BYTES): AsyncGenerator<Uint8Array> {
  if (!isExternal(t)) {
    yield inlineTensorBytes(t);
    return;
  }
  const ext = describeInitializer(t, 0, dir).external!;
  const fh = await handle(ext.file);
  const buf = new Uint8Array(Math.min(chunkBytes, Math.max(1, ext.length)));
  for (let done = 0; done < ext.length; ) {
    const n = Math.min(buf.length, ext.length - done);
    await readFully(fh, buf, n, ext.offset + done, ext.file);
    done += n;
    yield buf.subarray(0, n);
  }
}

async function readFully(fh: FileHandle, buf: Uint8Array, n: number, position: number, file: string): Promise<void> {
  let got = 0;
  while (got < n) {
    const { bytesRead } = await fh.read(buf, got, n - got, position + got);
    if (bytesRead === 0) {
      throw new ModelFormatError(
        'external-data-short',
        `the external data file ${file} ended at byte ${position + got} while reading weights; the file is truncated — copy it again`,
      );
    }
    got += bytesRead;
  }
}

export function describeInitializer(t: TensorProto, index: number, dir: string): InitializerInfo {
  const name = t.name ?? '';
  const dims = tensorDims(t);
  const dataType = t.dataType ?? 0;
  const count = elementCount(dims);
  const size = elementSize(dataType);
  let external: ExternalLocation | undefined;
  if (isExternal(t)) {
    const e = externalDataEntry(t);
    const expected = size === undefined ? undefined : count * size;
    const length = e.length ?? expected;
    if (length === undefined) {
      throw new ModelFormatError(
        'unsupported-dtype',
        `external initializer "${name}" has element type ${dataTypeName(dataType)} and no length; OBR Studio can't size it`,
      );
    }
    if (expected !== undefined && length !== expected) {
      throw new ModelFormatError(
        'external-data-invalid',
        `external initializer "${name}" declares ${length} bytes but its shape [${dims.join(', ')}] of ${dataTypeName(dataType)} needs ${expected}; re-export the model's external data`,
      );
    }
    external = { file: isAbsolute(e.location) ? e.location : resolve(dir, e.location), location: e.location, offset: e.offset, length };
  }
  const byteLength = external ? external.length : size === undefined ? (t.rawData?.length ?? 0) : count * size;
  return { name, dims, dataType, dtype: dataTypeName(dataType), elementCount: count, byteLength, external, index };
}

export function assertFinite(name: string, values: Float32Array | Float64Array): void {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v - v !== 0) {
      throw new ModelFormatError(
        'non-finite-weight',
        `weight "${name}" contains ${Number.isNaN(v) ? 'NaN' : 'an infinite value'} at element ${i}; the model is broken (diverged training or a bad conversion) — fix or re-export it before compressing`,
      );
    }
  }
}
