// Resume checkpoint: the finished blocks of a job, kept in the hidden working folder
// `.NAME.obr-partial/` beside the outputs. A job is identified by a key (sha256 of the source
// model, tokenizer, calibration text and every option that changes the numbers); a checkpoint
// with another key is discarded. Each block is written to temp files and renamed, and the
// manifest is rewritten (temp + rename) only after the block's files are complete, so a crash at
// any moment leaves a consistent checkpoint.
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { RecipeName } from '../protocol/recipes';
import type { LayerLoss, LayerReport } from '../protocol/report';

export interface LayerState {
  report: LayerReport;
  /** Compressed fake-quant weight, [out, in] row-major. */
  weight: Float64Array;
  /** rows×groups row-major (groups = 1 per row): the core's LayerResult.scales. */
  scales: Float64Array;
  codes: Int8Array;
  /** rows×groups zero points (signed, as the codes), present iff the job is asymmetric. */
  zeros?: Float64Array;
  /** The same layer compressed with each baseline recipe of the job (same Hessian). */
  baselines?: BaselineLayer[];
}

/**
 * What a job keeps in memory of a finished layer: its report and baseline losses. The weights,
 * codes and scales stay in the checkpoint (loadBlock) until the write and evaluate stages read
 * them back one block at a time.
 */
export interface LayerRecord {
  report: LayerReport;
  baselines?: Array<{ recipe: RecipeName; loss: LayerLoss }>;
}

export function layerRecord(s: LayerState): LayerRecord {
  return { report: s.report, ...(s.baselines ? { baselines: s.baselines.map((b) => ({ recipe: b.recipe, loss: b.loss })) } : {}) };
}

/** One layer compressed with a baseline recipe: its loss and fake-quant weight, [out, in]. */
export interface BaselineLayer {
  recipe: RecipeName;
  loss: LayerLoss;
  weight: Float32Array;
}

interface Manifest {
  key: string;
  /** Finished block ids (decoder block index as a string). */
  blocks: string[];
  createdAt: string;
}

/** One saved layer of a block: groups = scales per row (absent = 1, per-row scales); zeros: the file holds zero points. */
export interface BlockEntry {
  report: LayerReport;
  rows: number;
  cols: number;
  groups?: number;
  zeros?: boolean;
  file: string;
  baselines?: Array<{ recipe: RecipeName; loss: LayerLoss }>;
}

interface BlockIndex {
  layers: BlockEntry[];
}

const safeId = (block: string): string => block.replace(/[^A-Za-z0-9_-]/g, '_');

export class Checkpoint {
  private constructor(
    readonly dir: string,
    private manifest: Manifest,
    /** The folder held a matching checkpoint when the job started. */
    readonly resumed: boolean,
    /** The folder existed before this job (with any content). */
    readonly preExisting: boolean,
  ) {}

  /**
   * Opens the working folder for `key`. With `resume`, a checkpoint with the same key is reused;
   * anything else in the folder is cleared.
   */
  static async open(dir: string, key: string, resume: boolean): Promise<Checkpoint> {
    const preExisting = existsSync(dir);
    if (preExisting && resume) {
      try {
        const m = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
        if (m.key === key && Array.isArray(m.blocks)) {
          await rm(path.join(dir, 'out'), { recursive: true, force: true });
          return new Checkpoint(dir, m, m.blocks.length > 0, true);
        }
      } catch {
        // unreadable manifest: start over
      }
    }
    if (preExisting) await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const manifest: Manifest = { key, blocks: [], createdAt: new Date().toISOString() };
    const cp = new Checkpoint(dir, manifest, false, preExisting);
    await cp.writeManifest();
    return cp;
  }

  get finishedBlocks(): readonly string[] {
    return this.manifest.blocks;
  }

  has(block: string): boolean {
    return this.manifest.blocks.includes(block);
  }

  async saveBlock(block: string, layers: readonly LayerState[]): Promise<void> {
    const entries: BlockEntry[] = [];
    for (let i = 0; i < layers.length; i++) entries.push(await this.saveLayer(block, i, layers[i]!));
    await this.commitBlock(block, entries);
  }

  /**
   * Writes the `i`-th finished layer of `block` to its own file, so the job need not keep its
   * weights in memory; the block counts as finished only once commitBlock lists it.
   */
  async saveLayer(block: string, i: number, l: LayerState): Promise<BlockEntry> {
    const file = `block-${safeId(block)}-${i}.bin`;
    const { rows, cols } = l.report;
    const groups = l.scales.length / rows;
    if (!Number.isInteger(groups) || groups < 1 || (l.zeros && l.zeros.length !== l.scales.length)) {
      throw new Error(`internal: layer ${l.report.name} has ${l.scales.length} scales and ${l.zeros?.length ?? 0} zero points for ${rows} rows`);
    }
    // Layout: weight f64[rows·cols] | scales f64[rows·groups] | codes i8[rows·cols]
    //         | zeros f64[rows·groups] (asymmetric only) | per baseline f32[rows·cols]
    // Written part by part from the arrays themselves (no second copy of the weight).
    const baselines = l.baselines ?? [];
    const bytes = (a: Float64Array | Float32Array | Int8Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const parts = [bytes(l.weight), bytes(l.scales), bytes(l.codes), ...(l.zeros ? [bytes(l.zeros)] : []), ...baselines.map((b) => bytes(b.weight))];
    await atomicWriteParts(path.join(this.dir, file), parts);
    return { report: l.report, rows, cols, ...(groups > 1 ? { groups } : {}), ...(l.zeros ? { zeros: true } : {}), file, ...(baselines.length ? { baselines: baselines.map((b) => ({ recipe: b.recipe, loss: b.loss })) } : {}) };
  }

  /** Lists `block` as finished, with the layers saveLayer wrote for it (in order). */
  async commitBlock(block: string, entries: readonly BlockEntry[]): Promise<void> {
    const index: BlockIndex = { layers: [...entries] };
    await atomicWrite(path.join(this.dir, `block-${safeId(block)}.json`), JSON.stringify(index));
    this.manifest = { ...this.manifest, blocks: [...this.manifest.blocks, block] };
    await this.writeManifest();
  }

  /**
   * A finished block's layers. `weights: false` reads only the codes, scales and zero points (what
   * the packed model needs): `weight` is then empty and the baselines' weights are not read.
   */
  async loadBlock(block: string, opts: { weights?: boolean } = {}): Promise<LayerState[]> {
    const index = JSON.parse(await readFile(path.join(this.dir, `block-${safeId(block)}.json`), 'utf8')) as BlockIndex;
    const out: LayerState[] = [];
    const withWeights = opts.weights ?? true;
    for (const e of index.layers) {
      const n = e.rows * e.cols;
      const ng = e.rows * (e.groups ?? 1);
      const scalesAt = n * 8;
      const codesAt = scalesAt + ng * 8;
      const zerosAt = codesAt + n;
      if (!withWeights) {
        // Positioned read of scales | codes | zeros only.
        const end = zerosAt + (e.zeros ? ng * 8 : 0);
        const part = new Uint8Array(end - scalesAt);
        const fh = await open(path.join(this.dir, e.file), 'r');
        try {
          for (let got = 0; got < part.length; ) {
            const { bytesRead } = await fh.read(part, got, part.length - got, scalesAt + got);
            if (bytesRead === 0) throw new Error(`internal: checkpoint file ${e.file} is short`);
            got += bytesRead;
          }
        } finally {
          await fh.close();
        }
        const scales = new Float64Array(ng);
        new Uint8Array(scales.buffer).set(part.subarray(0, ng * 8));
        const codes = new Int8Array(n);
        new Uint8Array(codes.buffer).set(part.subarray(codesAt - scalesAt, zerosAt - scalesAt));
        let zeros: Float64Array | undefined;
        if (e.zeros) {
          zeros = new Float64Array(ng);
          new Uint8Array(zeros.buffer).set(part.subarray(zerosAt - scalesAt, zerosAt - scalesAt + ng * 8));
        }
        out.push({ report: e.report, weight: new Float64Array(0), scales, codes, ...(zeros ? { zeros } : {}) });
        continue;
      }
      const buf = await readFile(path.join(this.dir, e.file));
      // Copy into fresh, aligned buffers.
      const weight = new Float64Array(n);
      new Uint8Array(weight.buffer).set(buf.subarray(0, n * 8));
      const scales = new Float64Array(ng);
      new Uint8Array(scales.buffer).set(buf.subarray(scalesAt, codesAt));
      const codes = new Int8Array(n);
      new Uint8Array(codes.buffer).set(buf.subarray(codesAt, zerosAt));
      let zeros: Float64Array | undefined;
      if (e.zeros) {
        zeros = new Float64Array(ng);
        new Uint8Array(zeros.buffer).set(buf.subarray(zerosAt, zerosAt + ng * 8));
      }
      const base = zerosAt + (zeros ? ng * 8 : 0);
      const baselines = (e.baselines ?? []).map((b, k): BaselineLayer => {
        const w = new Float32Array(n);
        new Uint8Array(w.buffer).set(buf.subarray(base + k * n * 4, base + (k + 1) * n * 4));
        return { recipe: b.recipe, loss: b.loss, weight: w };
      });
      out.push({ report: e.report, weight, scales, codes, ...(zeros ? { zeros } : {}), ...(baselines.length ? { baselines } : {}) });
    }
    return out;
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  private async writeManifest(): Promise<void> {
    await atomicWrite(path.join(this.dir, 'manifest.json'), JSON.stringify(this.manifest, null, 1));
  }
}

/** Writes the concatenation of `parts` to `file` through a temp file and a rename. */
async function atomicWriteParts(file: string, parts: readonly Uint8Array[]): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    const fh = await open(tmp, 'w');
    try {
      for (const p of parts) for (let done = 0; done < p.length; ) done += (await fh.write(p, done, p.length - done)).bytesWritten;
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** Writes `data` to `file` through a temp file and a rename. */
export async function atomicWrite(file: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
