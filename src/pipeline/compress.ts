// One compression job (docs/architecture.md), as a short sequence of stages over one job context
// (src/pipeline/job.ts), each in its own module under src/pipeline/stages/:
//
//   load → rotate → calibrate ⇄ compress (the block loop; streaming lives there) → write →
//   evaluate → report
//
// Files: everything is produced inside the hidden working folder `.NAME.obr-partial/` (resume
// checkpoint of finished blocks + staged outputs) and renamed into place at the very end, so a
// cancelled job leaves the output folder as it was and a crashed one can be resumed. A pid lock
// file beside it (`.NAME.obr-partial.lock`) keeps a second job off the same folder.
import { existsSync } from 'node:fs';
import { mkdir, rmdir } from 'node:fs/promises';
import path from 'node:path';
import type { LoadedModel } from '../onnx/load';
import type { LinearLayer } from '../onnx/types';
import { isRecipe, OptionError, RECIPES, validateGroupSize, type CompressOptions, type RecipeName } from '../protocol/recipes';
import type { CompressionReport } from '../protocol/report';
import type { PipelineHooks } from './api';
import { AbortError, isAbort, throwIfAborted } from './cancel';
import { Checkpoint } from './checkpoint';
import { checkOutputFolder, JobLock } from './lock';
import type { Job, PipelineOptions } from './job';
import { checkFolderOutput, prepareLayout, resolveLayout, writeLayout } from './layouts';
import { outputPaths, removeTree, type OutputPaths } from './outputs';
import { ProgressTracker } from './progress';
import { calibrateStage } from './stages/calibrate';
import { evaluateStage } from './stages/evaluate';
import { loadStage } from './stages/load';
import { reportStage } from './stages/report';
import { rotateStage } from './stages/rotate';
import { writeStage } from './stages/write';
import { COMPRESSED_ROLES, WorkingModel } from './working';
import { memMark } from './memlog';

export { checkGroupSizeFits, TOOL_VERSION, type PipelineOptions } from './job';
export { groupLabel, planBlocks } from './stages/calibrate';
export { sha256File } from './stages/load';

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
  if (o.solver !== undefined && o.solver !== 'batched' && o.solver !== 'exact') throw new OptionError(`solver must be batched or exact (got ${String(o.solver)})`);
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
  const source = path.resolve(modelPath);
  if (!existsSync(source)) throw new OptionError(`model not found: ${modelPath}`);
  const paths = outputPaths(source, options, resolveLayout(source, extra.layout));
  for (const p of [paths.simulated, paths.packed, paths.report]) {
    if (path.resolve(p) === source) throw new OptionError(`the output ${p} would overwrite the source model; pick another --out folder`);
  }
  checkFolderOutput(paths, source);
  const job: Job = {
    options,
    extra,
    hooks,
    signal: hooks.signal,
    progress: new ProgressTracker(hooks.onProgress),
    warnings: [],
    timings: {},
    log: (level, message) => hooks.log?.(level, message),
    source,
    paths,
    baselines: resolveBaselines(extra.baselines, options.recipe),
    started: performance.now(),
  };

  // The output folder and the lock on its working folder come first: a second job on the same
  // model and folder is refused before it does any work.
  await checkOutputFolder(paths.dir);
  const outDirExisted = existsSync(paths.dir);
  try {
    await mkdir(paths.dir, { recursive: true });
  } catch (e) {
    throw new OptionError(`can't create the output folder ${paths.dir}: ${(e as Error).message}`);
  }
  let lock: JobLock;
  try {
    lock = await JobLock.acquire(paths.partialDir);
  } catch (e) {
    if (!outDirExisted) await rmdir(paths.dir).catch(() => undefined);
    throw e;
  }
  try {
    return await runLocked(job);
  } finally {
    await job.matrixBackend?.release().catch(() => undefined);
    await lock.release();
    // A folder this job created and left empty (cancelled, or failed before any block) goes too.
    if (!outDirExisted) await rmdir(paths.dir).catch(() => undefined);
  }
}

async function runLocked(job: Job): Promise<CompressionReport> {
  const { paths, extra } = job;
  memMark('start');
  const input = await loadStage(job);
  memMark('loaded');
  let checkpoint: Checkpoint;
  try {
    throwIfAborted(job.signal);
    checkpoint = await Checkpoint.open(paths.partialDir, input.jobKey, extra.resume ?? true);
  } catch (e) {
    await input.loaded.close();
    throw e;
  }
  const resumedBlocks = [...checkpoint.finishedBlocks];
  if (checkpoint.resumed) job.log('info', `resuming: ${checkpoint.finishedBlocks.length} finished block(s) found in ${paths.partialDir}`);
  try {
    const rotated = await rotateStage(job, input);
    memMark('rotated');
    const compressed = await calibrateStage(job, input, rotated, checkpoint);
    memMark('compressed');
    await prepareLayout(paths);
    const written = await writeStage(job, input, compressed);
    memMark('written');
    // A drop-in output folder (onnxruntime-genai / Optimum layout) around the packed model.
    job.warnings.push(...(await writeLayout(paths, written, job.signal)));
    const evaluated = await evaluateStage(job, input, rotated, compressed, written);
    memMark('evaluated');
    const report = await reportStage(job, input, rotated, compressed, written, evaluated, resumedBlocks);
    await disposeWorking(job, input.working);
    await checkpoint.remove();
    return report;
  } catch (e) {
    await disposeWorking(job, input.working);
    await removeTree(paths.stagingDir);
    await input.loaded.close();
    if (isAbort(e)) {
      if (!extra.keepCheckpointOnCancel && !checkpoint.preExisting) await checkpoint.remove();
      throw e instanceof AbortError ? e : new AbortError();
    }
    // A failure before any block finished leaves nothing worth resuming: leave the folder clean.
    if (checkpoint.finishedBlocks.length === 0 && !checkpoint.preExisting) await checkpoint.remove();
    throw e;
  }
}

/** Hands the working store's accounting to the caller and removes its working data file. */
async function disposeWorking(job: Job, working: WorkingModel): Promise<void> {
  const stats = working.storeStats();
  if (stats) job.extra.onWorkingStore?.(stats);
  await working.dispose();
}

/** Layers a job would compress, without running it (inspect / pre-flight). */
export async function compressibleLayers(loaded: LoadedModel): Promise<LinearLayer[]> {
  return WorkingModel.describe(loaded).compressible().layers;
}

export { COMPRESSED_ROLES, type OutputPaths };
