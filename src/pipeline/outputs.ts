// Output names beside the source model (docs/architecture.md), the hidden working folder
// `.NAME.obr-partial/` (resume checkpoint + staged outputs) and the atomic commit of the outputs.
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
}

/** Sparsity actually applied: quantization-only recipes never prune. */
export function effectiveSparsity(options: CompressOptions): Sparsity {
  return recipePrunes(options.recipe) ? options.sparsity : { kind: 'dense' };
}

export function outputPaths(modelPath: string, options: CompressOptions): OutputPaths {
  const src = path.resolve(modelPath);
  const dir = path.resolve(options.outDir ?? path.dirname(src));
  const base = path.basename(src).replace(/\.onnx$/i, '');
  const s = sparsityTag(effectiveSparsity(options));
  // Per-row symmetric (the default) keeps the historical names: the group tag is empty.
  const g = groupTag(options.groupSize, options.asymmetric);
  const tag = `${options.recipe}-w${options.wbits}a${options.abits}kv${options.kvbits}-${s}${g}`;
  const partialDir = path.join(dir, `.${base}.obr-partial`);
  return {
    dir,
    base,
    tag,
    simulated: path.join(dir, `${base}.${tag}.onnx`),
    packed: path.join(dir, `${base}.${options.recipe}-w${options.wbits}-${s}${g}.packed.onnx`),
    report: path.join(dir, `${base}.${tag}.report.json`),
    partialDir,
    stagingDir: path.join(partialDir, 'out'),
  };
}

/** Path of `finalPath` inside the staging folder. */
export function staged(paths: OutputPaths, finalPath: string): string {
  return path.join(paths.stagingDir, path.basename(finalPath));
}

/**
 * Moves every staged file into the output folder (rename: atomic per file on one file system),
 * the report last, so a report on disk always points at complete models.
 */
export async function commitStaged(paths: OutputPaths): Promise<string[]> {
  await mkdir(paths.dir, { recursive: true });
  const names = (await readdir(paths.stagingDir)).sort((a, b) => Number(a.endsWith('.report.json')) - Number(b.endsWith('.report.json')));
  const moved: string[] = [];
  for (const n of names) {
    const to = path.join(paths.dir, n);
    await rename(path.join(paths.stagingDir, n), to);
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
