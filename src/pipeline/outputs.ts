// Output names beside the source model (docs/architecture.md), the hidden working folder
// `.NAME.obr-partial/` (resume checkpoint + staged outputs) and the atomic commit of the outputs.
// A source in an onnxruntime-genai or Optimum folder gets a drop-in output folder instead of the
// loose packed file (src/pipeline/layouts.ts); its path is decided here, its contents there.
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { groupTag, recipePrunes, sparsityTag, type CompressOptions, type Sparsity } from '../protocol/recipes';

export interface OutputPaths {
  /** Folder the outputs go to. */
  dir: string;
  /** Source model's file name without `.onnx`. */
  base: string;
  /** e.g. `obr-gptq-w4a4kv4-s50`, `obr-gptq-w4a4kv4-s50-g128a` (groups of 128, asymmetric). */
  tag: string;
  simulated: string;
  packed: string;
  report: string;
  /** Hidden working folder: resume checkpoint and staged outputs. */
  partialDir: string;
  /** Staged outputs inside the working folder; renamed into `dir` at the end. */
  stagingDir: string;
  /** The drop-in output folder holding the packed model (`packed` is inside it), when the layout is a folder. */
  folder?: FolderOutput;
}

/** Kinds of drop-in output folder (src/pipeline/layouts.ts). */
export type FolderKind = 'genai' | 'optimum';

/** A drop-in output folder: the source folder's layout with the compressed model in place of the original. */
export interface FolderOutput {
  kind: FolderKind;
  /** Final path of the new folder (inside `OutputPaths.dir`; never the source folder). */
  dir: string;
  /** The source model's folder: config and tokenizer files are copied from it. */
  sourceDir: string;
  /** The model's file name inside the folder: the source model's own name. */
  modelFile: string;
  /**
   * The source's external data file name when it follows an exporter's convention
   * (`NAME.onnx_data` from Optimum, `NAME.onnx.data` from onnxruntime-genai): the packed model's
   * external data takes the same name.
   */
  dataFile?: string;
}

/** Sparsity actually applied: quantization-only recipes never prune. */
export function effectiveSparsity(options: CompressOptions): Sparsity {
  return recipePrunes(options.recipe) ? options.sparsity : { kind: 'dense' };
}

/**
 * Output paths of a job. With `folder` (a layout resolved by layouts.ts resolveLayout) the packed
 * model goes into a new folder `SOURCEFOLDER.<recipe>-w4-s50/` under the source model's own file
 * name; the simulated model and the report stay loose files in `dir`.
 */
export function outputPaths(modelPath: string, options: CompressOptions, folder?: FolderKind): OutputPaths {
  const src = path.resolve(modelPath);
  const dir = path.resolve(options.outDir ?? path.dirname(src));
  const base = path.basename(src).replace(/\.onnx$/i, '');
  const s = sparsityTag(effectiveSparsity(options));
  // Per-row symmetric (the default) keeps the historical names: the group tag is empty.
  const g = groupTag(options.groupSize, options.asymmetric);
  const tag = `${options.recipe}-w${options.wbits}a${options.abits}kv${options.kvbits}-${s}${g}`;
  const partialDir = path.join(dir, `.${base}.obr-partial`);
  const packedTag = `${options.recipe}-w${options.wbits}-${s}${g}`;
  const sourceDir = path.dirname(src);
  const modelFile = path.basename(src);
  const dataFile = [`${modelFile}_data`, `${modelFile}.data`].find((f) => existsSync(path.join(sourceDir, f)));
  const folderOut: FolderOutput | undefined = folder
    ? { kind: folder, dir: path.join(dir, `${path.basename(sourceDir)}.${packedTag}`), sourceDir, modelFile, ...(dataFile ? { dataFile } : {}) }
    : undefined;
  return {
    dir,
    base,
    tag,
    simulated: path.join(dir, `${base}.${tag}.onnx`),
    packed: folderOut ? path.join(folderOut.dir, folderOut.modelFile) : path.join(dir, `${base}.${packedTag}.packed.onnx`),
    report: path.join(dir, `${base}.${tag}.report.json`),
    partialDir,
    stagingDir: path.join(partialDir, 'out'),
    ...(folderOut ? { folder: folderOut } : {}),
  };
}

/** Path of `finalPath` (a file in `dir`, or in the output folder inside it) inside the staging folder. */
export function staged(paths: OutputPaths, finalPath: string): string {
  const rel = path.relative(paths.dir, finalPath);
  return path.join(paths.stagingDir, rel.startsWith('..') || path.isAbsolute(rel) ? path.basename(finalPath) : rel);
}

/**
 * Moves every staged file (and the staged output folder, whole) into the output folder (rename:
 * atomic per entry on one file system), the report last, so a report on disk always points at
 * complete models. An output folder from an earlier run is replaced: moved aside, the new one
 * renamed in, the old one removed.
 */
export async function commitStaged(paths: OutputPaths): Promise<string[]> {
  await mkdir(paths.dir, { recursive: true });
  const names = (await readdir(paths.stagingDir)).sort((a, b) => Number(a.endsWith('.report.json')) - Number(b.endsWith('.report.json')));
  const moved: string[] = [];
  for (const n of names) {
    const from = path.join(paths.stagingDir, n);
    const to = path.join(paths.dir, n);
    if ((await stat(from)).isDirectory() && existsSync(to)) {
      const old = path.join(paths.dir, `.${n}.obr-old-${process.pid}`);
      await rename(to, old);
      await rename(from, to);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(from, to);
    }
    moved.push(to);
  }
  await rm(paths.stagingDir, { recursive: true, force: true });
  return moved;
}

/** Removes a folder tree if present (temp folders of a cancelled or finished job). */
export async function removeTree(dir: string): Promise<void> {
  if (existsSync(dir)) await rm(dir, { recursive: true, force: true });
}

/** Total size of the files in a folder (not recursive). */
export async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  for (const n of await readdir(dir)) {
    const s = await stat(path.join(dir, n));
    if (s.isFile()) total += s.size;
  }
  return total;
}
