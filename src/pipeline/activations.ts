// The activation cache of block-streaming calibration (§1.5): the tensors crossing the cut in
// front of the next block (the hidden state entering it, plus the side tensors every block reads:
// attention mask, rotary tables, sequence-length scalars), per calibration batch, in the dtype
// the model computes in (an fp16 model's hidden states stay fp16).
//
// Tensors whose values depend on the token ids (src/onnx/blocks.ts `idsDependent`) are kept per
// batch; the others depend only on the batch geometry (every window has the same mask and
// positions) and are kept once per batch size.
import type * as ort from 'onnxruntime-node';

export interface CalibrationBatch {
  /** First window of the batch. */
  start: number;
  /** Windows in the batch. */
  count: number;
}

export class ActivationCache {
  private readonly perBatch: Array<Map<string, ort.Tensor>>;
  private readonly shared = new Map<number, Map<string, ort.Tensor>>();

  constructor(
    readonly batches: readonly CalibrationBatch[],
    private readonly idsDependent: ReadonlySet<string>,
  ) {
    this.perBatch = batches.map(() => new Map());
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

  get(batch: number, name: string): ort.Tensor {
    const t = this.perBatch[batch]!.get(name) ?? this.sharedFor(batch).get(name);
    if (!t) throw new Error(`internal: activation ${name} of batch ${batch} is not cached`);
    return t;
  }

  /** Stores a tensor (a geometry-only tensor already held for this batch size is kept, the copy disposed). */
  put(batch: number, name: string, t: ort.Tensor): void {
    if (this.idsDependent.has(name)) {
      this.perBatch[batch]!.get(name)?.dispose();
      this.perBatch[batch]!.set(name, t);
      return;
    }
    const shared = this.sharedFor(batch);
    if (shared.has(name)) t.dispose();
    else shared.set(name, t);
  }

  /** Drops (and disposes) every tensor not named in `live`. */
  retain(live: ReadonlySet<string>): void {
    for (const m of [...this.perBatch, ...this.shared.values()]) {
      for (const [name, t] of m) {
        if (live.has(name)) continue;
        t.dispose();
        m.delete(name);
      }
    }
  }

  /** Bytes held. */
  bytes(): number {
    let total = 0;
    for (const m of [...this.perBatch, ...this.shared.values()]) for (const t of m.values()) total += (t.data as ArrayBufferView).byteLength ?? 0;
    return total;
  }

  dispose(): void {
    this.retain(new Set());
  }
}
