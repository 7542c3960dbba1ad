// The working store of a compression job: where the weights of the working copy live while the
// job runs, so memory is bounded by one block, not the model (issue #12 item 2).
//
// The working ModelProto keeps every weight that is not small as an external-data reference:
// the source's external tensors stay in the source's data file (read lazily by offset), and
// every tensor the job changes (rotated or compressed weights, packed MatMulNBits tensors) is
// appended to one working data file in the job's working folder (`.NAME.obr-partial/`), whose
// location is stored absolute. The file is append-only, so every earlier version of the graph
// (the dense copy one-shot calibration reads, the rotated baseline) stays readable beside the
// newest one. Readers ask for the bytes of a TensorProto (src/onnx/load.ts TensorReader): a block
// subgraph's session reads that block's weights, uses them and hands them back.
//
// Resident-bytes accounting: every byte readTensor returns from a data file counts as resident
// until its reader calls release(); `peakResident` is the high-water mark (tests bound it by one
// block plus the biggest tensor outside the blocks). Inline tensors are not counted: in a job they
// are the small ones (norms, biases, shape constants) or views of a source file read whole.
import { open, rm, type FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import { closeHandles, openHandle, readTensorWith, streamTensorWith, type TensorReader } from './load';
import { cloneModel } from './graph';
import type { ModelProto, TensorProto } from './proto';
import { elementCount, elementSize, inlineTensorBytes, isExternal, tensorDims, tensorHeader } from './tensor';

/** Tensors below this many bytes stay inline in the working graph (as onnx.save's default). */
export const INLINE_BELOW_BYTES = 1024;
/** Offsets of big tensors in the working data file are page-aligned. */
const PAGE = 4096;

export class WeightStore implements TensorReader {
  /** Bytes handed out by readTensor and not yet released. */
  resident = 0;
  /** High-water mark of `resident`. */
  peakResident = 0;
  /** Bytes appended to the working data file. */
  written = 0;
  private readonly handles = new Map<string, Promise<FileHandle>>();
  private data?: Promise<FileHandle>;
  private end = 0;

  /** The working data file (absolute; created on the first write, removed by close()). */
  readonly dataFile: string;

  constructor(
    /** Folder the source's relative external-data locations are resolved against. */
    readonly dir: string,
    dataFile: string,
    readonly inlineBelow = INLINE_BELOW_BYTES,
  ) {
    this.dataFile = resolve(dataFile);
  }

  hold(bytes: number): void {
    this.resident += bytes;
    if (this.resident > this.peakResident) this.peakResident = this.resident;
  }

  release(bytes: number): void {
    this.resident = Math.max(0, this.resident - bytes);
  }

  async readTensor(t: TensorProto): Promise<Uint8Array> {
    if (!isExternal(t)) return inlineTensorBytes(t);
    // Written tensors are read through the write handle (it also reads): the file may not be flushed to a second one.
    const bytes = await readTensorWith(t, this.dir, (f) => this.handleOf(f));
    this.hold(bytes.length);
    return bytes;
  }

  async *streamTensor(t: TensorProto, chunkBytes?: number): AsyncGenerator<Uint8Array> {
    for await (const chunk of streamTensorWith(t, this.dir, (f) => this.handleOf(f), chunkBytes)) {
      this.hold(chunk.length);
      try {
        yield chunk;
      } finally {
        this.release(chunk.length);
      }
    }
  }

  /**
   * `header` (name, dims, element type) holding `bytes`: appended to the working data file and
   * returned as an external reference, or inline when smaller than `inlineBelow`.
   */
  async put(header: TensorProto, bytes: Uint8Array): Promise<TensorProto> {
    const h = tensorHeader(header);
    // An empty doc string the source spelled out is kept, so the written model matches byte for byte.
    if (Object.prototype.hasOwnProperty.call(header, 'docString') && typeof header.docString === 'string') h.docString = header.docString;
    const size = elementSize(h.dataType ?? 0);
    if (size !== undefined && elementCount(tensorDims(h)) * size !== bytes.length) {
      throw new Error(`internal: ${bytes.length} bytes for tensor "${h.name}" of shape [${tensorDims(h).join(', ')}]`);
    }
    if (bytes.length < this.inlineBelow) return { ...h, rawData: bytes };
    const fh = await this.dataHandle();
    const offset = Math.ceil(this.end / PAGE) * PAGE;
    this.end = offset + bytes.length;
    for (let done = 0; done < bytes.length; ) {
      const { bytesWritten } = await fh.write(bytes, done, Math.min(bytes.length - done, 1 << 30), offset + done);
      done += bytesWritten;
    }
    this.written += bytes.length;
    return {
      ...h,
      dataLocation: 1, // EXTERNAL
      externalData: [
        { key: 'location', value: this.dataFile },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(bytes.length) },
      ],
    };
  }

  /**
   * A copy of `model` whose inline tensors of at least `inlineBelow` bytes are moved to the working
   * data file (e.g. a rotated graph or a packed block): the graph then holds references only.
   */
  async externalize(model: ModelProto): Promise<ModelProto> {
    const out = cloneModel(model);
    const inits = out.graph!.initializer!;
    for (let i = 0; i < inits.length; i++) {
      const t = inits[i]!;
      if (isExternal(t)) continue;
      const bytes = inlineTensorBytes(t);
      if (bytes.length >= this.inlineBelow) inits[i] = await this.put(t, bytes);
    }
    return out;
  }

  /**
   * A copy of `model` with every external tensor read inline (for whole-model sessions: the
   * fallbacks for graphs that can't be cut into blocks, and the rotation until it streams). The
   * bytes count as resident until `release(result.bytes)`.
   */
  async inlined(model: ModelProto): Promise<{ model: ModelProto; bytes: number }> {
    const out = cloneModel(model);
    const inits = out.graph!.initializer!;
    let bytes = 0;
    for (let i = 0; i < inits.length; i++) {
      const t = inits[i]!;
      if (!isExternal(t)) continue;
      const raw = await this.readTensor(t);
      bytes += raw.length;
      inits[i] = { ...tensorHeader(t), rawData: raw };
    }
    return { model: out, bytes };
  }

  /** Closes the files and removes the working data file. */
  async close(): Promise<void> {
    await closeHandles(this.handles);
    const data = this.data;
    this.data = undefined;
    if (data) await (await data.catch(() => undefined))?.close().catch(() => undefined);
    await rm(this.dataFile, { force: true });
  }

  private handleOf(file: string): Promise<FileHandle> {
    return file === this.dataFile && this.data ? this.data : openHandle(this.handles, file);
  }

  private dataHandle(): Promise<FileHandle> {
    // 'w+': a working file left by an earlier (crashed) run of the job is started over.
    this.data ??= open(this.dataFile, 'w+');
    return this.data;
  }
}
