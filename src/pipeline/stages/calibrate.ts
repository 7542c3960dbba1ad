// Stage 3, calibrate ⇄ compress: the block loop. Layer-sequential by default (§1.5, P11):
// within each decoder block the layers are grouped by the activation they read ([q,k,v] → [o] →
// [gate,up] → [down] on Llama graphs), and each group's Hessian is captured with every earlier
// group already compressed. `oneshot` captures every Hessian on the (rotated) dense model.
//
// Forwards stream through the blocks (src/pipeline/blockStream.ts): the prelude runs once, then
// per block one forward per group capture and one more that produces the next block's inputs
// (groups + 1 block forwards; one-shot: 1); the last block to compress needs no forward after its
// captures, and blocks after it are not run. Graphs that can't be cut into blocks fall back to
// whole-model forwards, which re-run blocks 0…b from the token ids for every capture of block b.
import path from 'node:path';
import { groupLayersByInput } from '../../onnx/linear';
import type { ModelProto } from '../../onnx/proto';
import type { LinearLayer } from '../../onnx/types';
import { throwIfAborted } from '../cancel';
import { countersSince, osCounters } from '../osCounters';
import { BlockStream } from '../blockStream';
import { captureStats, requestsFor, type CapturedStats } from '../capture';
import { layerRecord, type BlockEntry, type Checkpoint, type LayerRecord } from '../checkpoint';
import { defaultBatch } from '../evaluate';
import { DEFAULT_ACTIVATION_CACHE_MIB, noteExecutionProvider, type Job } from '../job';
import { compressOneLayer, LayerProgress } from './layers';
import { collectGarbage, memMark } from '../memlog';
import type { LoadedJob } from './load';
import type { RotatedJob } from './rotate';

export interface PlannedBlock {
  id: string;
  /** Layers by shared input, in graph order. */
  groups: LinearLayer[][];
}

/** Decoder blocks of the compressible layers, in graph order, each with its input sub-groups. */
export function planBlocks(layers: readonly LinearLayer[]): PlannedBlock[] {
  const byBlock = new Map<number, LinearLayer[]>();
  for (const l of layers) {
    const b = l.block ?? -1;
    if (!byBlock.has(b)) byBlock.set(b, []);
    byBlock.get(b)!.push(l);
  }
  const blocks = [...byBlock.entries()].sort((a, b) => a[0] - b[0]);
  return blocks.map(([b, ls]) => {
    const byName = new Map(ls.map((l) => [l.name, l]));
    const groups = groupLayersByInput(ls)
      .map((g) => g.layers.map((n) => byName.get(n)!))
      .sort((x, y) => Math.min(...x.map((l) => l.order ?? 0)) - Math.min(...y.map((l) => l.order ?? 0)));
    return { id: String(b), groups };
  });
}

export function groupLabel(group: readonly LinearLayer[]): string {
  return `[${group.map((l) => (l.role === 'other' ? l.name : l.role)).join(',')}]`;
}

export interface CompressedJob {
  /** The layers compressed (compressible, within onlyBlocks), in graph order. */
  layers: LinearLayer[];
  /** Report and baseline losses per layer; weights, codes and scales are read back per block from the checkpoint. */
  states: Map<string, LayerRecord>;
  /** The compressed blocks, in graph order. */
  blocks: PlannedBlock[];
  /** Where each finished block's weights, codes and scales are (Checkpoint.loadBlock). */
  checkpoint: Checkpoint;
  /** 'stream' or 'whole-model' (the fallback). */
  forwards: 'stream' | 'whole-model';
  /** Calibration forwards run (streamed: block-region forwards incl. the prelude). */
  forwardCount: number;
}

export async function calibrateStage(job: Job, input: LoadedJob, rot: RotatedJob, checkpoint: Checkpoint): Promise<CompressedJob> {
  const { options, extra, signal, baselines } = job;
  const { working, calib, seqlen } = input;
  const layers = working.compressible().layers.filter((l) => !extra.onlyBlocks || extra.onlyBlocks.includes(l.block ?? -1));
  const blocks = planBlocks(layers);
  const batch = extra.batch ?? defaultBatch(seqlen);
  const oneshot = options.calibrationMode === 'oneshot';
  const eps = options.executionProviders;
  /** The graph calibration forwards run on: one-shot captures everything on the dense model. */
  const forwardModel = (): ModelProto => (oneshot ? rot.baseProto : working.proto);

  let stream: BlockStream | undefined;
  if ((extra.calibrationForwards ?? 'stream') === 'stream') {
    const s = BlockStream.open(forwardModel(), working.layers, calib, {
      executionProviders: eps,
      batch,
      signal,
      onExecutionProvider: (ep) => noteExecutionProvider(job, ep),
      onForward: (region, kind) => extra.onForward?.(region.block === null ? null : String(region.block), kind),
      spill: { budgetBytes: (extra.activationCacheMiB ?? DEFAULT_ACTIVATION_CACHE_MIB) * 2 ** 20, spillDir: path.join(job.paths.partialDir, 'activations') },
      weights: working.store,
    });
    if ('err' in s) job.log('info', `calibration runs whole-model forwards: the graph can't be cut into blocks (${s.err})`);
    else stream = s.ok;
  }
  let forwardCount = 0;

  // Progress units: calibration forwards + layers × (1 + baselines). Streamed, every block region
  // runs once (restored or dense blocks), or groups + 1 times (one-shot: once) when compressed.
  const groupsTotal = blocks.reduce((s, b) => s + b.groups.length, 0);
  const toCompress = new Map(blocks.filter((b) => !checkpoint.has(b.id)).map((b) => [b.id, b]));
  // Streamed, nothing after the last planned block is run (its outputs feed no capture).
  const planned = new Set(blocks.map((b) => b.id));
  const lastRegion = stream ? Math.max(-1, ...stream.blockRegions.map((r, i) => (planned.has(String(r.block)) ? i : -1))) : -1;
  const regionsRun = stream ? stream.blockRegions.slice(0, lastRegion + 1) : [];
  const passes = stream
    ? regionsRun.reduce((s, r, i) => s + (toCompress.has(String(r.block)) ? (oneshot ? 1 : toCompress.get(String(r.block))!.groups.length) : 0) + (i < lastRegion && !(oneshot && toCompress.has(String(r.block))) ? 1 : 0), 1)
    : oneshot
      ? 1
      : groupsTotal;
  const p = new LayerProgress(passes + layers.length * (1 + baselines.length), layers.length);
  const states = new Map<string, LayerRecord>();
  if (baselines.length) job.log('info', `baselines: ${baselines.join(', ')} (each layer also compressed with them on the same Hessian)`);

  const onBatch = (label: string) => (done: number, total: number) => job.progress.report('calibrate', done, total, `${label}: ${done}/${total} windows`, p.overall(done / total));
  /** Runs one calibration forward: timed, and one progress unit when it completes. */
  const timed = async <T>(f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const os0 = osCounters();
    try {
      const r = await f();
      p.unitsDone++;
      return r;
    } finally {
      const s = (performance.now() - t0) / 1000;
      p.calibSeconds += s;
      // Per forward, beside the pre-flight's probe of it; with what the OS counted meanwhile
      // (src/pipeline/osCounters.ts: fresh memory pages, storage bytes, CPU seconds of all threads,
      // involuntary switches), which explains time the arithmetic doesn't (docs/bench-scale.md).
      job.log('debug', `calibrate forward: ${s.toFixed(2)} s, ${countersSince(os0)}`);
    }
  };
  const reportCaptured = (block: PlannedBlock, stats: Map<string, CapturedStats>) => {
    for (const [inputName, st] of stats) extra.onCapture?.(block.id, inputName, st);
  };
  /**
   * Compresses `group` on `stats`, writes each layer's compressed weights into the working model
   * and its results to the checkpoint as soon as it is done (nothing of a finished layer but its
   * report stays in memory). Each Hessian is dropped from `stats` after the last layer of the
   * group that reads it (an input is read by one group only).
   */
  const compressGroup = async (block: PlannedBlock, group: readonly LinearLayer[], stats: Map<string, CapturedStats>, saved: BlockEntry[]): Promise<void> => {
    for (let i = 0; i < group.length; i++) {
      const l = group[i]!;
      const s = await compressOneLayer(job, working, l, stats.get(l.inputName)!, p);
      if (!group.slice(i + 1).some((x) => x.inputName === l.inputName)) stats.delete(l.inputName);
      await working.setWeights(new Map([[s.report.name, s.weight]]));
      saved.push(await checkpoint.saveLayer(block.id, saved.length, s));
      states.set(s.report.name, layerRecord(s));
      collectGarbage(s.weight.byteLength);
      memMark(`compressed layer ${l.name}`);
    }
  };
  /** A block finished by an earlier run of the same job: its layers come from the checkpoint. */
  const restore = async (block: PlannedBlock): Promise<void> => {
    const saved = await checkpoint.loadBlock(block.id);
    for (const s of saved) {
      states.set(s.report.name, layerRecord(s));
      job.hooks.onLayer?.(s.report);
    }
    for (const s of saved) {
      const have = (s.baselines ?? []).map((b) => b.recipe).join(',');
      if (have !== baselines.join(',')) throw new Error(`internal: checkpoint block ${block.id} has baselines [${have}], the job wants [${baselines.join(',')}]`);
    }
    await working.setWeights(new Map(saved.map((s) => [s.report.name, s.weight])));
    p.unitsDone += (stream || oneshot ? 0 : block.groups.length) + saved.length * (1 + baselines.length);
    p.layersDone += saved.length;
    p.baselineLayersDone += saved.length * baselines.length;
    job.progress.report('compress', p.layersDone, layers.length, `block ${block.id} restored from the checkpoint`, p.overall());
  };
  const finishBlock = async (block: PlannedBlock, saved: readonly BlockEntry[]): Promise<void> => {
    throwIfAborted(signal);
    await checkpoint.commitBlock(block.id, saved);
  };

  try {
    if (stream) {
      // ---- streamed: prelude once, then each block region on the cached activations
      await timed(() => stream.begin(forwardModel(), onBatch('block inputs')));
      const byId = new Map(blocks.map((b) => [b.id, b]));
      for (let i = 0; i < regionsRun.length; i++) {
        const region = regionsRun[i]!;
        const last = i === regionsRun.length - 1;
        throwIfAborted(signal);
        const block = byId.get(String(region.block));
        if (!block || checkpoint.has(block.id)) {
          if (block) await restore(block);
          if (!last) await timed(() => stream.advance(forwardModel(), onBatch(`block ${region.block} forward`)));
          continue;
        }
        extra.onBlockStart?.(block.id, blocks.indexOf(block), blocks.length);
        throwIfAborted(signal);
        const saved: BlockEntry[] = [];
        if (oneshot) {
          const all = block.groups.flat();
          const stats = await timed(() => stream.capture(rot.baseProto, all, requestsFor(all), { advance: !last, onBatch: onBatch(`block ${block.id} all inputs`) }));
          reportCaptured(block, stats);
          for (const group of block.groups) await compressGroup(block, group, stats, saved);
        } else {
          for (const group of block.groups) {
            const label = `block ${block.id} ${groupLabel(group)}`;
            collectGarbage(Math.max(...group.map((l) => l.inFeatures * l.outFeatures * 8)));
            const stats = await timed(() => stream.capture(working.proto, group, requestsFor(group), { onBatch: onBatch(label) }));
            memMark(`captured ${label}`);
            reportCaptured(block, stats);
            await compressGroup(block, group, stats, saved);
          }
          if (!last) await timed(() => stream.advance(working.proto, onBatch(`block ${block.id} compressed forward`)));
        }
        await finishBlock(block, saved);
        memMark(`finished block ${block.id}`);
      }
      forwardCount = stream.forwards;
      if (stream.spilledBytes > 0) job.log('info', `activation cache: ${(stream.spilledBytes / 2 ** 20).toFixed(1)} MiB spilled to ${path.join(job.paths.partialDir, 'activations')} (budget ${extra.activationCacheMiB ?? DEFAULT_ACTIVATION_CACHE_MIB} MiB)`);
    } else {
      // ---- whole-model forwards (graphs that can't be cut into blocks)
      const capture = async (model: ModelProto, group: readonly LinearLayer[], label: string, block: string | null): Promise<Map<string, CapturedStats>> => {
        const { stats, executionProvider } = await timed(() =>
          captureStats((m) => working.bytes(m), model, group.map((l) => working.layer(l.name)), requestsFor(group), calib, { executionProviders: eps, batch, signal, onBatch: onBatch(label) }),
        );
        noteExecutionProvider(job, executionProvider);
        forwardCount++;
        extra.onForward?.(block, 'capture');
        return stats;
      };
      let oneshotStats: Map<string, CapturedStats> | undefined;
      for (let bi = 0; bi < blocks.length; bi++) {
        const block = blocks[bi]!;
        throwIfAborted(signal);
        if (checkpoint.has(block.id)) {
          await restore(block);
          continue;
        }
        extra.onBlockStart?.(block.id, bi, blocks.length);
        throwIfAborted(signal);
        const saved: BlockEntry[] = [];
        if (oneshot) {
          oneshotStats ??= await capture(rot.baseProto, layers, 'all layer inputs', null);
          const mine = new Map(block.groups.flat().map((l) => [l.inputName, oneshotStats!.get(l.inputName)!]));
          reportCaptured(block, mine);
          for (const group of block.groups) await compressGroup(block, group, oneshotStats, saved);
        } else {
          for (const group of block.groups) {
            const stats = await capture(working.proto, group, `block ${block.id} ${groupLabel(group)}`, block.id);
            reportCaptured(block, stats);
            await compressGroup(block, group, stats, saved);
          }
        }
        await finishBlock(block, saved);
      }
    }
  } finally {
    stream?.dispose();
  }
  job.timings.calibrate = p.calibSeconds;
  job.timings.compress = p.compressSeconds;
  if (baselines.length) job.timings.baselines = p.baselineSeconds;
  return { layers, states, blocks, checkpoint, forwards: stream ? 'stream' : 'whole-model', forwardCount };
}
