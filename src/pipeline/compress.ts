// One compression job (docs/architecture.md): load → rotate → calibrate ⇄ compress → write →
// evaluate, with progress events, cancellation between layers and batches, and resume.
//
// Calibration is layer-sequential by default (§1.5, P11): within each decoder block the layers
// are grouped by the activation they read ([q,k,v] → [o] → [gate,up] → [down] on Llama graphs),
// and each group's Hessian is captured on the model with every earlier group already
// compressed. `oneshot` captures every Hessian once on the (rotated) dense model.
//
// Files: everything is produced inside the hidden working folder `.NAME.obr-partial/` (resume
// checkpoint of finished blocks + staged outputs) and renamed into place at the very end, so a
// cancelled job leaves the output folder as it was and a crashed one can be resumed.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { copyFile, mkdir, rmdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { compressLayer } from '../core/compress';
import { loadModel, type LoadedModel } from '../onnx/load';
import { groupLayersByInput } from '../onnx/linear';
import { rotateModel } from '../onnx/rotate';
import { writeModel } from '../onnx/write';
import type { ModelProto } from '../onnx/proto';
import { replaceLayerWeights } from '../onnx/weights';
import type { LinearLayer } from '../onnx/types';
import {
  formatSparsity,
  isRecipe,
  OptionError,
  RECIPES,
  recipePrunes,
  validateGroupSize,
  type CompressOptions,
  type RecipeName,
  type Sparsity,
} from '../protocol/recipes';
import { REPORT_SCHEMA_VERSION, type CompressionReport, type LayerReport, type PerplexityResult } from '../protocol/report';
import { calibrationWindows, evaluationWindows, readText, type LoadedText, type TokenWindows } from '../runtime/text';
import { loadTokenizer } from '../runtime/tokenizer';
import type { PipelineHooks } from './api';
import { BUNDLED_CALIBRATION_TEXT, BUNDLED_EVALUATION_TEXT, bundledText } from './assets';
import { AbortError, isAbort, throwIfAborted } from './cancel';
import { captureStats, type CaptureRequest, type CapturedStats } from './capture';
import { Checkpoint, atomicWrite, type BaselineLayer, type LayerState } from './checkpoint';
import { contextLength, defaultBatch, openForPerplexity, perplexityOf } from './evaluate';
import { commitStaged, effectiveSparsity, outputPaths, removeTree, staged, type OutputPaths } from './outputs';
import { ProgressTracker } from './progress';
import { DEFAULT_SENSITIVITY_WINDOWS, layerSensitivity } from './sensitivity';
import { packedModel, withFakeQuant } from './transforms';
import { COMPRESSED_ROLES, WorkingModel } from './working';

export const TOOL_VERSION = '0.1.0';

/** Job settings that are not part of the recipe (and don't change the compressed weights). */
export interface PipelineOptions {
  /** Evaluation text; undefined = the bundled test split; null = skip perplexity. */
  evalText?: string | null;
  /** Evaluate on the first K windows only. */
  evalWindows?: number;
  /** Perplexity with only one layer compressed, per layer (on `sensitivityWindows` spread windows). */
  sensitivity?: boolean;
  sensitivityWindows?: number;
  /** Reuse a matching checkpoint (default true). */
  resume?: boolean;
  /** Keep the checkpoint when the job is cancelled, so it can be resumed (default false). */
  keepCheckpointOnCancel?: boolean;
  /** Windows per onnxruntime run (calibration and evaluation). */
  batch?: number;
  /** Threads for the per-row compensation in the core. */
  threads?: number;
  /**
   * Baseline recipes for comparison (report.baselines): every layer is also compressed with each
   * of them on the same captured Hessian as the job's recipe (same sparsity, bits, α and damping),
   * and the model with all layers replaced by a baseline's weights is evaluated on the same
   * windows. They don't change the outputs. The job's own recipe and repeats are skipped.
   */
  baselines?: readonly string[];
  /** Compress only these decoder blocks (quick looks and tests); the others stay dense. */
  onlyBlocks?: readonly number[];
  /** Called just before each decoder block is compressed (tests use it to interrupt a job). */
  onBlockStart?(block: string, index: number, total: number): void;
}

interface JobContext {
  options: CompressOptions;
  extra: PipelineOptions;
  hooks: PipelineHooks;
  progress: ProgressTracker;
  warnings: string[];
  log(level: 'info' | 'warn' | 'error', message: string): void;
}

export function validateOptions(o: CompressOptions): void {
  if (!isRecipe(o.recipe)) throw new OptionError(`unknown recipe "${o.recipe}" (choose one of ${RECIPES.join(', ')})`);
  if (!Number.isInteger(o.wbits) || o.wbits < 2 || o.wbits > 8) throw new OptionError(`wbits must be an integer in 2…8 (got ${o.wbits})`);
  for (const [k, v] of [['abits', o.abits], ['kvbits', o.kvbits]] as const) {
    if (!Number.isInteger(v) || v < 2 || (v > 8 && v !== 16)) throw new OptionError(`${k} must be 2…8, or 16 to disable (got ${v})`);
  }
  if (!(o.alpha >= 0 && o.alpha <= 1)) throw new OptionError(`alpha must be in [0, 1] (got ${o.alpha})`);
  if (!(o.damp >= 0 && Number.isFinite(o.damp))) throw new OptionError(`damp must be ≥ 0 (got ${o.damp})`);
  if (!Number.isInteger(o.samples) || o.samples < 1) throw new OptionError(`samples must be a positive integer (got ${o.samples})`);
  if (o.seqlen !== undefined && (!Number.isInteger(o.seqlen) || o.seqlen < 2)) throw new OptionError(`seqlen must be an integer ≥ 2 (got ${o.seqlen})`);
  const s = o.sparsity;
  if (s.kind === 'unstructured' && !(s.ratio > 0 && s.ratio < 1)) throw new OptionError(`sparsity must be in [0, 1) (got ${s.ratio})`);
  if (s.kind === 'nm' && !(Number.isInteger(s.n) && Number.isInteger(s.m) && s.n >= 1 && s.n < s.m)) throw new OptionError(`N:M sparsity needs 1 ≤ N < M (got ${s.n}:${s.m})`);
  if (o.calibrationMode !== 'sequential' && o.calibrationMode !== 'oneshot') throw new OptionError(`calibration mode must be sequential or oneshot (got ${String(o.calibrationMode)})`);
  validateGroupSize(o.groupSize);
  if (typeof o.asymmetric !== 'boolean') throw new OptionError(`asymmetric must be true or false (got ${String(o.asymmetric)})`);
}

/**
 * Refuses a group size larger than the input width of a layer the job compresses (OptionError,
 * CLI exit 2, naming the sizes that fit). Called after loading, before anything is written.
 */
export function checkGroupSizeFits(groupSize: number, layers: ReadonlyArray<Pick<LinearLayer, 'name' | 'inFeatures'>>): void {
  if (groupSize === 0 || layers.length === 0) return;
  const narrowest = layers.reduce((m, l) => (l.inFeatures < m.inFeatures ? l : m));
  validateGroupSize(groupSize, narrowest.inFeatures, `layer ${narrowest.name}`);
}

/**
 * The baseline recipes a job runs: in the order given, without repeats and without the job's own
 * recipe. Throws OptionError for a name that is not a recipe.
 */
export function resolveBaselines(baselines: readonly string[] | undefined, recipe: RecipeName): RecipeName[] {
  const out: RecipeName[] = [];
  for (const b of baselines ?? []) {
    if (!isRecipe(b)) throw new OptionError(`unknown baseline recipe "${b}" (choose from ${RECIPES.join(', ')})`);
    if (b !== recipe && !out.includes(b)) out.push(b);
  }
  return out;
}

/** Sparsity a recipe applies under the job's options (quantization-only recipes never prune). */
function sparsityFor(recipe: RecipeName, o: CompressOptions): Sparsity {
  return recipePrunes(recipe) ? o.sparsity : { kind: 'dense' };
}

/** sha256 of a file, streamed. */
export function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (d) => h.update(d))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

/** Options that change the compressed weights, in a stable order: part of the job key. */
function numericOptions(o: CompressOptions, seqlen: number): Record<string, unknown> {
  return {
    recipe: o.recipe,
    sparsity: formatSparsity(effectiveSparsity(o)),
    wbits: o.wbits,
    groupSize: o.groupSize,
    asymmetric: o.asymmetric,
    abits: o.abits,
    kvbits: o.kvbits,
    alpha: o.alpha,
    damp: o.damp,
    samples: o.samples,
    seqlen,
    seed: o.seed,
    calibrationMode: o.calibrationMode,
  };
}

function round6(x: number): number {
  return Number(x.toPrecision(6));
}

/** Decoder blocks of the compressible layers, in graph order, each with its input sub-groups. */
export function planBlocks(layers: readonly LinearLayer[]): Array<{ id: string; groups: LinearLayer[][] }> {
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

/**
 * Compresses `modelPath` with `options` and writes the simulated model, the packed model and the
 * report beside it (or in options.outDir). Resolves with the report; rejects with AbortError when
 * hooks.signal fires (the output folder is then as it was) or with a typed error.
 */
export async function runCompression(
  modelPath: string,
  options: CompressOptions,
  hooks: PipelineHooks = {},
  extra: PipelineOptions = {},
): Promise<CompressionReport> {
  validateOptions(options);
  const baselines = resolveBaselines(extra.baselines, options.recipe);
  const started = performance.now();
  const timings: Record<string, number> = {};
  const warnings: string[] = [];
  const log = (level: 'info' | 'warn' | 'error', message: string) => hooks.log?.(level, message);
  const ctx: JobContext = { options, extra, hooks, progress: new ProgressTracker(hooks.onProgress), warnings, log };
  const signal = hooks.signal;
  const source = path.resolve(modelPath);
  if (!existsSync(source)) throw new OptionError(`model not found: ${modelPath}`);
  const paths = outputPaths(source, options);
  for (const p of [paths.simulated, paths.packed, paths.report]) {
    if (path.resolve(p) === source) throw new OptionError(`the output ${p} would overwrite the source model; pick another --out folder`);
  }

  // ---- load
  let t = performance.now();
  ctx.progress.report('load', 0, 3, 'reading the model');
  const loaded = await loadModel(source);
  const tokenizer = await loadTokenizer(source);
  const calibFile = options.calibText ?? bundledText(BUNDLED_CALIBRATION_TEXT);
  const calibText = await readText(calibFile);
  const seqlen = options.seqlen ?? contextLength(source);
  const calib = calibrationWindows(tokenizer.encode(calibText.text), options.samples, seqlen, options.seed, calibFile);
  ctx.progress.report('load', 1, 3, 'tokenized the calibration text');
  let evalText: LoadedText | undefined;
  let evalWin: TokenWindows | undefined;
  if (extra.evalText !== null) {
    const evalFile = extra.evalText ?? bundledText(BUNDLED_EVALUATION_TEXT);
    evalText = await readText(evalFile);
    evalWin = evaluationWindows(tokenizer.encode(evalText.text), seqlen, { maxWindows: extra.evalWindows, source: evalFile });
  }
  const sourceSha = await sha256File(source);
  const sourceBytes = (await stat(source)).size;
  const working = await WorkingModel.fromLoaded(loaded);
  const { layers: compressible, skipped } = working.compressible();
  for (const s of skipped) warnings.push(`${s.layer.name} is left dense: ${s.why}`);
  if (compressible.length === 0) {
    throw new OptionError('found no decoder-block projections (q/k/v/o/gate/up/down) to compress in this model; run `obr inspect` to see what was found');
  }
  try {
    checkGroupSizeFits(options.groupSize, compressible.filter((l) => !extra.onlyBlocks || extra.onlyBlocks.includes(l.block ?? -1)));
  } catch (e) {
    await loaded.close();
    throw e;
  }
  const externalSizes = loaded.initializerNames().flatMap((n) => {
    const e = loaded.initializerInfo(n)?.external;
    return e ? [`${e.location}:${e.offset}:${e.length}`] : [];
  });
  const jobKey = createHash('sha256')
    .update(JSON.stringify({ schema: REPORT_SCHEMA_VERSION, tool: TOOL_VERSION, sourceSha, externalSizes, tokenizer: tokenizer.sha256, calib: calibText.sha256, options: numericOptions(options, seqlen), onlyBlocks: extra.onlyBlocks ?? null, ...(baselines.length ? { baselines } : {}) }))
    .digest('hex');
  timings.load = (performance.now() - t) / 1000;
  ctx.progress.report('load', 3, 3, `${compressible.length} layers to compress`);
  throwIfAborted(signal);

  // The working folder; remember what existed so a cancel can restore the folder exactly.
  const outDirExisted = existsSync(paths.dir);
  await mkdir(paths.dir, { recursive: true });
  const checkpoint = await Checkpoint.open(paths.partialDir, jobKey, extra.resume ?? true);
  const resumedBlocks = [...checkpoint.finishedBlocks];
  if (checkpoint.resumed) log('info', `resuming: ${checkpoint.finishedBlocks.length} finished block(s) found in ${paths.partialDir}`);
  try {
    const report = await compressInWorkingFolder();
    await checkpoint.remove();
    return report;
  } catch (e) {
    await removeTree(paths.stagingDir);
    if (isAbort(e)) {
      if (!extra.keepCheckpointOnCancel && !checkpoint.preExisting) await checkpoint.remove();
      if (!outDirExisted) await rmdir(paths.dir).catch(() => undefined);
      await loaded.close();
      throw e instanceof AbortError ? e : new AbortError();
    }
    // A failure before any block finished leaves nothing worth resuming: leave the folder clean.
    if (checkpoint.finishedBlocks.length === 0 && !checkpoint.preExisting) {
      await checkpoint.remove();
      if (!outDirExisted) await rmdir(paths.dir).catch(() => undefined);
    }
    await loaded.close();
    throw e;
  }

  async function compressInWorkingFolder(): Promise<CompressionReport> {
    // ---- rotate (QuaRot, §1.3) for activation / KV quantization
    const sourceProto = working.proto; // inline, unrotated: the dense reference
    const rotate = options.abits < 16 || options.kvbits < 16;
    if (rotate) {
      t = performance.now();
      ctx.progress.report('rotate', 0, 1, 'rotating the residual stream (QuaRot)');
      const r = rotateModel(working.proto, { seed: options.seed });
      working.replaceProto(r.model);
      warnings.push(...r.warnings);
      timings.rotate = (performance.now() - t) / 1000;
      ctx.progress.report('rotate', 1, 1);
    }
    const layers = working.compressible().layers.filter((l) => !extra.onlyBlocks || extra.onlyBlocks.includes(l.block ?? -1));
    const baseProto = working.proto; // rotated, dense: reference for sensitivity
    const blocks = planBlocks(layers);
    const batch = extra.batch ?? defaultBatch(seqlen);
    const eps = options.executionProviders;
    let executionProvider: CompressionReport['executionProvider'] | undefined;
    const noteEp = (ep: CompressionReport['executionProvider']) => {
      if (executionProvider) return;
      executionProvider = ep;
      const failed = ep.tried.filter((x) => x.error);
      log('info', `execution provider: ${ep.used}${failed.length ? ` (fell back from ${failed.map((x) => `${x.name}: ${x.error}`).join('; ')})` : ''}`);
    };

    // ---- calibrate ⇄ compress
    const states = new Map<string, LayerState>();
    const passes = options.calibrationMode === 'oneshot' ? 1 : blocks.reduce((s, b) => s + b.groups.length, 0);
    const units = passes + layers.length * (1 + baselines.length);
    let unitsDone = 0;
    const overall = () => 0.05 + 0.7 * (unitsDone / units);
    let layersDone = 0;
    let baselineLayersDone = 0;
    let calibSeconds = 0;
    let compressSeconds = 0;
    let baselineSeconds = 0;
    if (baselines.length) log('info', `baselines: ${baselines.join(', ')} (each layer also compressed with them on the same Hessian)`);

    const capture = async (group: readonly LinearLayer[], label: string): Promise<Map<string, CapturedStats>> => {
      const t0 = performance.now();
      const { stats, executionProvider: ep } = await captureStats((m) => working.bytes(m), working.proto, group.map((l) => working.layer(l.name)), requestsFor(group), calib, {
        executionProviders: eps,
        batch,
        signal,
        onBatch: (done, total) => ctx.progress.report('calibrate', done, total, `${label}: ${done}/${total} windows`, 0.05 + 0.7 * ((unitsDone + done / total) / units)),
      });
      noteEp(ep);
      unitsDone++;
      calibSeconds += (performance.now() - t0) / 1000;
      return stats;
    };
    const requestsFor = (group: readonly LinearLayer[]): CaptureRequest[] => {
      const seen = new Map<string, CaptureRequest>();
      for (const l of group) if (!seen.has(l.inputName)) seen.set(l.inputName, { input: l.inputName, features: l.inFeatures });
      return [...seen.values()];
    };
    const compressOne = async (layer: LinearLayer, st: CapturedStats): Promise<LayerState> => {
      throwIfAborted(signal);
      const t0 = performance.now();
      const weight = await working.readWeight(layer);
      const r = await compressLayer(
        { weight, rows: layer.outFeatures, cols: layer.inFeatures, hessian: st.hessian, channelEnergy: st.channelEnergy },
        { method: options.recipe, sparsity: effectiveSparsity(options), wbits: options.wbits, groupSize: options.groupSize, asymmetric: options.asymmetric, alpha: options.alpha, damp: options.damp },
        { signal, threads: extra.threads },
      );
      compressSeconds += (performance.now() - t0) / 1000;
      unitsDone++;
      const report: LayerReport = {
        name: layer.name,
        block: layer.block,
        role: layer.role,
        rows: layer.outFeatures,
        cols: layer.inFeatures,
        sparsity: r.stats.sparsity,
        wbits: options.wbits,
        groupSize: options.groupSize,
        asymmetric: options.asymmetric,
        loss: r.stats.loss,
        seconds: r.stats.seconds,
        codeHistogram: r.stats.codeHistogram,
        // Per row only: group scales (rows × groups) live in the packed model's MatMulNBits
        // initializers, where the inspector reads them; the report stays small.
        ...(options.groupSize === 0 ? { rowScales: Array.from(r.scales, round6) } : {}),
        ...(options.groupSize === 0 && r.zeros ? { rowZeros: Array.from(r.zeros) } : {}),
      };
      layersDone++;
      hooks.onLayer?.(report);
      ctx.progress.report('compress', layersDone, layers.length, `${layer.name} (${layer.role}, ${layer.outFeatures}×${layer.inFeatures})`, overall());
      // The same layer with each baseline recipe: same dense weight, same captured Hessian.
      const baselineLayers: BaselineLayer[] = [];
      for (const recipe of baselines) {
        throwIfAborted(signal);
        const t1 = performance.now();
        const b = await compressLayer(
          { weight, rows: layer.outFeatures, cols: layer.inFeatures, hessian: st.hessian, channelEnergy: st.channelEnergy },
          { method: recipe, sparsity: sparsityFor(recipe, options), wbits: options.wbits, groupSize: options.groupSize, asymmetric: options.asymmetric, alpha: options.alpha, damp: options.damp },
          { signal, threads: extra.threads },
        );
        baselineLayers.push({ recipe, loss: b.stats.loss, weight: Float32Array.from(b.weight) });
        baselineSeconds += (performance.now() - t1) / 1000;
        unitsDone++;
        baselineLayersDone++;
        ctx.progress.report('baseline', baselineLayersDone, layers.length * baselines.length, `${recipe}: ${layer.name}`, overall());
      }
      return { report, weight: r.weight, scales: r.scales, codes: r.codes, ...(r.zeros ? { zeros: r.zeros } : {}), ...(baselines.length ? { baselines: baselineLayers } : {}) };
    };

    let oneshotStats: Map<string, CapturedStats> | undefined;
    for (let bi = 0; bi < blocks.length; bi++) {
      const block = blocks[bi]!;
      throwIfAborted(signal);
      if (checkpoint.has(block.id)) {
        const saved = await checkpoint.loadBlock(block.id);
        for (const s of saved) {
          states.set(s.report.name, s);
          hooks.onLayer?.(s.report);
        }
        for (const s of saved) {
          const have = (s.baselines ?? []).map((b) => b.recipe).join(',');
          if (have !== baselines.join(',')) throw new Error(`internal: checkpoint block ${block.id} has baselines [${have}], the job wants [${baselines.join(',')}]`);
        }
        working.setWeights(new Map(saved.map((s) => [s.report.name, s.weight])));
        unitsDone += (options.calibrationMode === 'oneshot' ? 0 : block.groups.length) + saved.length * (1 + baselines.length);
        layersDone += saved.length;
        baselineLayersDone += saved.length * baselines.length;
        ctx.progress.report('compress', layersDone, layers.length, `block ${block.id} restored from the checkpoint`, overall());
        continue;
      }
      extra.onBlockStart?.(block.id, bi, blocks.length);
      throwIfAborted(signal);
      const blockStates: LayerState[] = [];
      if (options.calibrationMode === 'oneshot') {
        // Every Hessian from the dense (rotated) model, captured once.
        oneshotStats ??= await (async () => {
          const saved = working.proto;
          working.replaceProto(baseProto);
          try {
            return await capture(layers, 'all layer inputs');
          } finally {
            working.replaceProto(saved);
          }
        })();
        for (const group of block.groups) for (const l of group) blockStates.push(await compressOne(l, oneshotStats.get(l.inputName)!));
        working.setWeights(new Map(blockStates.map((s) => [s.report.name, s.weight])));
      } else {
        for (const group of block.groups) {
          const stats = await capture(group, `block ${block.id} ${groupLabel(group)}`);
          const done: LayerState[] = [];
          for (const l of group) done.push(await compressOne(l, stats.get(l.inputName)!));
          working.setWeights(new Map(done.map((s) => [s.report.name, s.weight])));
          blockStates.push(...done);
        }
      }
      for (const s of blockStates) states.set(s.report.name, s);
      throwIfAborted(signal);
      await checkpoint.saveBlock(block.id, blockStates);
    }
    timings.calibrate = calibSeconds;
    timings.compress = compressSeconds;
    if (baselines.length) timings.baselines = baselineSeconds;

    // ---- write (staged in the working folder)
    t = performance.now();
    await mkdir(paths.stagingDir, { recursive: true });
    ctx.progress.report('write', 0, 3, 'simulated model');
    const external = loaded.initializerNames().some((n) => loaded.initializerInfo(n)?.external) ? true : 'auto';
    const fq = options.abits < 16 || options.kvbits < 16 ? withFakeQuant(working.proto, { abits: options.abits, kvbits: options.kvbits }) : { model: working.proto, warnings: [] };
    warnings.push(...fq.warnings);
    const simPath = staged(paths, paths.simulated);
    await writeModel(fq.model, simPath, { externalData: external });
    throwIfAborted(signal);
    ctx.progress.report('write', 1, 3, 'packed model');
    const packed = packedModel(
      working.proto,
      working.layers,
      layers.map((l) => {
        const st = states.get(l.name)!;
        return { layer: working.layer(l.name), codes: st.codes, scales: st.scales, ...(st.zeros ? { zeros: st.zeros } : {}), groupSize: options.groupSize };
      }),
      options.wbits,
    );
    let packedWritten = false;
    let packedSize: CompressionReport['packedSize'];
    if (packed.model) {
      const packedPath = staged(paths, paths.packed);
      await writeModel(packed.model, packedPath, { externalData: external });
      packedWritten = true;
      packedSize = { ...packed.size!, fileBytes: await filesBytes(packedPath) };
    } else if (packed.warning) warnings.push(packed.warning);
    // Outputs written elsewhere keep their tokenizer and config beside them (obr eval needs them).
    if (paths.dir !== path.dirname(source)) {
      for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json']) {
        const from = path.join(path.dirname(source), f);
        if (existsSync(from) && !existsSync(path.join(paths.dir, f))) await copyFile(from, path.join(paths.stagingDir, f));
      }
    }
    timings.write = (performance.now() - t) / 1000;
    ctx.progress.report('write', 3, 3, undefined, 0.78);
    throwIfAborted(signal);

    // ---- evaluate
    const perplexity: CompressionReport['perplexity'] = {};
    const baselinePerplexity = new Map<RecipeName, PerplexityResult>();
    let sensitivity: CompressionReport['sensitivity'];
    if (evalWin && evalText) {
      t = performance.now();
      const total = evalWin.count * (2 + baselines.length);
      const evaluate = async (model: ModelProto, offset: number, label: string, stage: 'evaluate' | 'baseline' = 'evaluate'): Promise<PerplexityResult> => {
        const t0 = performance.now();
        ctx.progress.report(stage, offset, total, `perplexity ${label} 0/${evalWin!.count}`, 0.78 + 0.2 * (offset / total), true);
        const lm = await openForPerplexity(model, eps);
        noteEp(lm.executionProvider);
        try {
          const r = await perplexityOf(lm, evalWin!, {
            batch,
            signal,
            onWindow: (done) => ctx.progress.report(stage, offset + done, total, `perplexity ${label} ${done}/${evalWin!.count}`, 0.78 + 0.2 * ((offset + done) / total)),
          });
          return { ...r, windows: evalWin!.count, seqlen, text: evalText!.path, seconds: (performance.now() - t0) / 1000 };
        } finally {
          await lm.release();
        }
      };
      perplexity.dense = await evaluate(sourceProto, 0, 'dense');
      perplexity.compressed = await evaluate(fq.model, evalWin.count, 'compressed');
      log('info', `perplexity dense ${perplexity.dense.perplexity.toFixed(3)} → compressed ${perplexity.compressed.perplexity.toFixed(3)}`);
      if (!(Number.isFinite(perplexity.compressed.perplexity))) warnings.push('the compressed model\'s perplexity is not finite');
      timings.evaluate = (performance.now() - t) / 1000;

      // Each baseline: the rotated dense model with every compressed layer replaced by the
      // baseline's weights, the same activation/KV quantization, the same windows. Built in
      // memory like the simulated model above (nothing is written) and dropped after use.
      const tb = performance.now();
      for (let k = 0; k < baselines.length; k++) {
        throwIfAborted(signal);
        const recipe = baselines[k]!;
        const weights = new Map(layers.map((l) => [l.name, states.get(l.name)!.baselines![k]!.weight]));
        const model = replaceLayerWeights(baseProto, working.layers, weights);
        const sim = options.abits < 16 || options.kvbits < 16 ? withFakeQuant(model, { abits: options.abits, kvbits: options.kvbits }).model : model;
        const r = await evaluate(sim, evalWin.count * (2 + k), recipe, 'baseline');
        baselinePerplexity.set(recipe, r);
        log('info', `baseline ${recipe}: perplexity ${r.perplexity.toFixed(3)}`);
      }
      if (baselines.length) timings.baselines = (timings.baselines ?? 0) + (performance.now() - tb) / 1000;

      if (extra.sensitivity) {
        t = performance.now();
        const sw = evaluationWindows(tokenizer.encode(evalText.text), seqlen, { maxWindows: extra.sensitivityWindows ?? DEFAULT_SENSITIVITY_WINDOWS, spread: true });
        sensitivity = await layerSensitivity(
          baseProto,
          working.layers,
          layers.map((l) => ({ name: l.name, weight: states.get(l.name)!.weight })),
          sw,
          { executionProviders: eps, batch, signal, onLayer: (done, n, name) => ctx.progress.report('evaluate', done, n, `sensitivity ${name}`, 0.98) },
        );
        timings.sensitivity = (performance.now() - t) / 1000;
      }
    }
    throwIfAborted(signal);

    // ---- report, then commit every staged file into place
    timings.total = (performance.now() - started) / 1000;
    const reportLayers = layers.map((l) => states.get(l.name)!.report);
    const report: CompressionReport = {
      schemaVersion: REPORT_SCHEMA_VERSION,
      tool: { name: 'obr-studio', version: TOOL_VERSION },
      createdAt: new Date().toISOString(),
      source: { path: source, bytes: sourceBytes, sha256: sourceSha },
      outputs: { simulated: paths.simulated, packed: packedWritten ? paths.packed : undefined, report: paths.report },
      recipe: options.recipe,
      options: {
        ...numericOptions(options, seqlen),
        onlyBlocks: extra.onlyBlocks ?? null,
        executionProviders: options.executionProviders,
        calibText: calibText.path,
        evalText: evalText?.path ?? null,
        evalWindows: extra.evalWindows ?? null,
        baselines,
        rotated: rotate,
        resumedBlocks,
        jobKey,
      },
      calibration: { text: calibText.path, sha256: calibText.sha256, samples: calib.count, seqlen, tokens: calib.count * seqlen, mode: options.calibrationMode },
      executionProvider: executionProvider ?? { used: 'none', tried: [] },
      ...(packedSize ? { packedSize } : {}),
      layers: reportLayers,
      perplexity,
      ...(baselines.length
        ? {
            baselines: baselines.map((recipe, k) => ({
              recipe,
              ...(baselinePerplexity.has(recipe) ? { perplexity: baselinePerplexity.get(recipe)! } : {}),
              layers: layers.map((l) => ({ name: l.name, loss: states.get(l.name)!.baselines![k]!.loss })),
            })),
          }
        : {}),
      sensitivity,
      timings,
      warnings,
    };
    await atomicWrite(staged(paths, paths.report), JSON.stringify(report, null, 1) + '\n');
    throwIfAborted(signal);
    await loaded.close();
    await commitStaged(paths);
    ctx.progress.report('evaluate', 1, 1, 'done', 1);
    return report;
  }
}

/** Bytes on disk of a written model: the .onnx file plus its external data file, if any. */
async function filesBytes(modelPath: string): Promise<number> {
  let bytes = (await stat(modelPath)).size;
  const data = `${modelPath}.data`;
  if (existsSync(data)) bytes += (await stat(data)).size;
  return bytes;
}

/** Layers a job would compress, without running it (inspect / pre-flight). */
export async function compressibleLayers(loaded: LoadedModel): Promise<LinearLayer[]> {
  const w = await WorkingModel.fromLoaded(loaded);
  return w.compressible().layers;
}

export { COMPRESSED_ROLES, type OutputPaths };
