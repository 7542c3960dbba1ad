// The activation cache of block streaming (§1.5): the tensors crossing the cut in front of the
// next block (the hidden state entering it, plus the side tensors every block reads: attention
// mask, rotary tables, sequence-length scalars), per batch, in the dtype the model computes in
// (an fp16 model's hidden states stay fp16).
//
// Tensors whose values depend on the token ids (src/onnx/blocks.ts `idsDependent`) are kept per
// batch; the others depend only on the batch geometry (every window has the same mask and
// positions) and are kept once per batch size. Above `budgetBytes` in memory, per-batch tensors
// spill to files in `spillDir` (inside the job's working folder) and are read back when a block
// needs them; dispose() removes the files.
import { mkdirSync, rmSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';

export interface CalibrationBatch {
  /** First window of the batch. */
  start: number;
  /** Windows in the batch. */
  count: number;
}

export interface SpillOptions {
  /** Bytes of per-batch tensors held in memory before new ones go to disk (default: no limit). */
  budgetBytes?: number;
  /** Folder for the spill files (required when budgetBytes is set). */
  spillDir?: string;
}

/** A tensor written to disk: its file, element type and shape. */
interface Spilled {
  file: string;
  type: ort.Tensor.Type;
  dims: readonly number[];
  bytes: number;
}

type Entry = ort.Tensor | Spilled;

function isSpilled(e: Entry): e is Spilled {
  return (e as Spilled).file !== undefined;
}

function tensorBytes(t: ort.Tensor): number {
  return (t.data as ArrayBufferView).byteLength ?? 0;
}

/** A typed array of `type` over a copy of `buf`. */
function typedArray(type: ort.Tensor.Type, buf: Buffer): ort.Tensor.DataType {
  const copy = new ArrayBuffer(buf.byteLength);
  new Uint8Array(copy).set(buf);
  switch (type) {
    case 'float32':
      return new Float32Array(copy);
    case 'float16':
      return new Uint16Array(copy);
    case 'float64':
      return new Float64Array(copy);
    case 'int64':
      return new BigInt64Array(copy);
    case 'int32':
      return new Int32Array(copy);
    case 'bool':
    case 'uint8':
      return new Uint8Array(copy);
    case 'int8':
      return new Int8Array(copy);
    default:
      throw new Error(`internal: can't spill a ${type} tensor`);
  }
}

export class ActivationCache {
  private readonly perBatch: Array<Map<string, Entry>>;
  private readonly shared = new Map<number, Map<string, ort.Tensor>>();
  private held = 0;
  private spilledBytes = 0;
  private seq = 0;
  /** Bytes written to disk over the cache's life (reports and tests). */
  spilledTotal = 0;

  constructor(
    readonly batches: readonly CalibrationBatch[],
    private readonly idsDependent: ReadonlySet<string>,
    private readonly spill: SpillOptions = {},
  ) {
    this.perBatch = batches.map(() => new Map());
    if (spill.budgetBytes !== undefined && !spill.spillDir) throw new Error('internal: a spill budget needs a spill folder');
  }

  private sharedFor(batch: number): Map<string, ort.Tensor> {
    const size = this.batches[batch]!.count;
    let m = this.shared.get(size);
    if (!m) this.shared.set(size, (m = new Map()));
    return m;
  }

  has(name: string): boolean {
    return this.perBatch[0]!.has(name) || this.sharedFor(0).has(name);
  }

  /** Element type of a cached tensor. */
  typeOf(name: string): ort.Tensor.Type {
    const e = this.perBatch[0]!.get(name) ?? this.sharedFor(0).get(name);
    if (!e) throw new Error(`internal: activation ${name} is not cached`);
    return e.type;
  }

  async get(batch: number, name: string): Promise<ort.Tensor> {
    const e = this.perBatch[batch]!.get(name) ?? this.sharedFor(batch).get(name);
    if (!e) throw new Error(`internal: activation ${name} of batch ${batch} is not cached`);
    if (!isSpilled(e)) return e;
    return new ort.Tensor(e.type, typedArray(e.type, await readFile(e.file)) as never, e.dims);
  }

  /** Stores a tensor (a geometry-only tensor already held for this batch size is kept, the copy disposed). */
  async put(batch: number, name: string, t: ort.Tensor): Promise<void> {
    if (!this.idsDependent.has(name)) {
      const shared = this.sharedFor(batch);
      if (shared.has(name)) t.dispose();
      else shared.set(name, t);
      return;
    }
    await this.drop(this.perBatch[batch]!, name);
    const bytes = tensorBytes(t);
    const { budgetBytes, spillDir } = this.spill;
    if (budgetBytes !== undefined && spillDir && this.held + bytes > budgetBytes) {
      mkdirSync(spillDir, { recursive: true });
      const file = path.join(spillDir, `activation-${this.seq++}.bin`);
      const view = t.data as ArrayBufferView;
      await writeFile(file, new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
      this.perBatch[batch]!.set(name, { file, type: t.type, dims: [...t.dims], bytes });
      this.spilledBytes += bytes;
      this.spilledTotal += bytes;
      t.dispose();
      return;
    }
    this.perBatch[batch]!.set(name, t);
    this.held += bytes;
  }

  private async drop(m: Map<string, Entry>, name: string): Promise<void> {
    const e = m.get(name);
    if (!e) return;
    m.delete(name);
    if (isSpilled(e)) {
      this.spilledBytes -= e.bytes;
      await rm(e.file, { force: true });
    } else {
      this.held -= tensorBytes(e);
      e.dispose();
    }
  }

  /** Drops (and disposes or deletes) every tensor not named in `live`. */
  async retain(live: ReadonlySet<string>): Promise<void> {
    for (const m of this.perBatch) for (const name of [...m.keys()]) if (!live.has(name)) await this.drop(m, name);
    for (const m of this.shared.values()) {
      for (const [name, t] of m) {
        if (live.has(name)) continue;
        t.dispose();
        m.delete(name);
      }
    }
  }

  /** Bytes held in memory and on disk. */
  bytes(): { memory: number; disk: number } {
    let shared = 0;
    for (const m of this.shared.values()) for (const t of m.values()) shared += tensorBytes(t);
    return { memory: this.held + shared, disk: this.spilledBytes };
  }

  /** Releases everything and removes the spill folder. */
  dispose(): void {
    for (const m of this.perBatch) {
      for (const e of m.values()) if (!isSpilled(e)) e.dispose();
      m.clear();
    }
    for (const m of this.shared.values()) {
      for (const t of m.values()) t.dispose();
      m.clear();
    }
    this.held = 0;
    this.spilledBytes = 0;
    if (this.spill.spillDir) rmSync(this.spill.spillDir, { recursive: true, force: true });
  }
}
