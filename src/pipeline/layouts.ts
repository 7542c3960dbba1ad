// Drop-in output folders (docs/pipeline.md, "Output layouts"): when the source model sits in an
// onnxruntime-genai folder (genai_config.json naming it as the decoder) or an Optimum export folder
// (config.json + model.onnx / decoder_model.onnx / decoder_model_merged.onnx / …), the packed
// model goes into a NEW folder with the same layout — the source folder's config and tokenizer
// files, the compressed model under the source model's own file name (+ its external data), and
// for onnxruntime-genai a genai_config.json whose decoder filename points at it — so the folder
// loads wherever the original did. The folder is built in the job's staging folder and renamed
// into place with the other outputs (outputs.ts commitStaged), so a cancelled job leaves nothing.
//
// Where the folder goes is decided by outputs.ts (outputPaths); what goes into it, here.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadModel } from '../onnx/load';
import type { ModelProto } from '../onnx/proto';
import { writeModel } from '../onnx/write';
import { OptionError } from '../protocol/recipes';
import { throwIfAborted } from './cancel';
import type { FolderKind, OutputPaths } from './outputs';
import { staged } from './outputs';

/** `auto`: a folder when the source is in an onnxruntime-genai or Optimum folder, else loose files. */
export const OUTPUT_LAYOUTS = ['auto', 'file', 'folder'] as const;
export type OutputLayout = (typeof OUTPUT_LAYOUTS)[number];

/** File names Optimum's ONNX export gives a decoder (ORTModelForCausalLM loads these). */
export const OPTIMUM_MODEL_FILES = ['model.onnx', 'decoder_model.onnx', 'decoder_model_merged.onnx', 'decoder_with_past_model.onnx'] as const;

/** Config and tokenizer files: copied into the output folder. Models and weights never are (see companionFiles). */
const COMPANION = /\.(json|txt|model|tiktoken|jinja)$/i;

export function isOutputLayout(x: unknown): x is OutputLayout {
  return typeof x === 'string' && (OUTPUT_LAYOUTS as readonly string[]).includes(x);
}

/** The parts of genai_config.json this module reads or rewrites (the rest is kept as it is). */
interface GenaiConfig {
  model?: {
    decoder?: {
      filename?: string;
      num_hidden_layers?: number;
      inputs?: Record<string, unknown>;
      outputs?: Record<string, unknown>;
    };
    [part: string]: unknown;
  };
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * The kind of drop-in folder the model at `modelPath` sits in, or undefined:
 * - `genai`: genai_config.json beside it names it as `model.decoder.filename`;
 * - `optimum`: config.json beside it (not one of our bundled models, whose config.json carries
 *   `obr_studio`) and the model has one of Optimum's decoder file names.
 */
export function detectFolderKind(modelPath: string): FolderKind | undefined {
  const dir = path.dirname(path.resolve(modelPath));
  const file = path.basename(modelPath);
  const genai = readJson(path.join(dir, 'genai_config.json')) as GenaiConfig | undefined;
  if (genai?.model?.decoder?.filename === file) return 'genai';
  if (!(OPTIMUM_MODEL_FILES as readonly string[]).includes(file)) return undefined;
  const config = readJson(path.join(dir, 'config.json')) as Record<string, unknown> | undefined;
  if (!config || typeof config !== 'object' || 'obr_studio' in config) return undefined;
  return 'optimum';
}

/**
 * The output folder kind for a requested layout: `file` → none; `auto` → detectFolderKind;
 * `folder` → the detected kind, else an Optimum-style folder (the model under its own name with
 * whatever config and tokenizer files are beside it).
 */
export function resolveLayout(modelPath: string, layout: OutputLayout = 'auto'): FolderKind | undefined {
  if (!isOutputLayout(layout)) throw new OptionError(`layout must be one of ${OUTPUT_LAYOUTS.join(', ')} (got ${String(layout)})`);
  if (layout === 'file') return undefined;
  return detectFolderKind(modelPath) ?? (layout === 'folder' ? 'optimum' : undefined);
}

/**
 * Files of the source folder that go into the output folder unchanged: config and tokenizer files
 * (`*.json`, `*.txt`, `*.model`, `*.tiktoken`, `*.jinja`), never hidden files, our own outputs
 * (`*.obr-*`) or genai_config.json (written separately). Other models (`*.onnx`) are listed in
 * `otherModels`: the caller decides whether they are copied (genai: those the config names) or
 * left out with a warning (Optimum: a decoder_with_past_model.onnx would still hold dense weights).
 */
export function companionFiles(sourceDir: string, modelFile: string): { files: string[]; otherModels: string[] } {
  const files: string[] = [];
  const otherModels: string[] = [];
  for (const n of readdirSync(sourceDir).sort()) {
    if (n.startsWith('.') || n.includes('.obr-') || !statSync(path.join(sourceDir, n)).isFile()) continue;
    if (/\.onnx$/i.test(n)) {
      if (n !== modelFile) otherModels.push(n);
    } else if (COMPANION.test(n) && n !== 'genai_config.json') files.push(n);
  }
  return { files, otherModels };
}

/** Every `filename` in genai_config.json's model section (decoder, embedding, vision, …) with its part. */
function genaiModelFiles(config: GenaiConfig): Array<{ part: string; filename: string }> {
  const out: Array<{ part: string; filename: string }> = [];
  for (const [part, v] of Object.entries(config.model ?? {})) {
    const f = (v as { filename?: unknown } | null)?.filename;
    if (typeof f === 'string') out.push({ part, filename: f });
  }
  return out;
}

/** A model file and the external data files its initializers point at (relative names). */
async function modelWithData(dir: string, file: string): Promise<string[]> {
  const m = await loadModel(path.join(dir, file));
  try {
    const data = new Set<string>();
    for (const n of m.initializerNames()) {
      const ext = m.initializerInfo(n)?.external;
      if (ext) data.add(path.relative(dir, path.resolve(dir, ext.file)));
    }
    return [file, ...data];
  } finally {
    await m.close();
  }
}

/**
 * Refuses an output folder that holds the source (a rerun replaces the folder whole): OptionError
 * naming --out. The folder's own name differs from the source folder's, so this only happens when
 * the source sits deeper inside a folder of that name.
 */
export function checkFolderOutput(paths: OutputPaths, source: string): void {
  if (!paths.folder) return;
  const rel = path.relative(paths.folder.dir, path.resolve(source));
  if (!rel.startsWith('..') && !path.isAbsolute(rel)) {
    throw new OptionError(`the output folder ${paths.folder.dir} would hold the source model ${source} and be replaced; pick another --out folder or --layout file`);
  }
}

/** Creates the staged output folder, so the write stage can write the packed model into it. */
export async function prepareLayout(paths: OutputPaths): Promise<void> {
  if (paths.folder) await mkdir(staged(paths, paths.folder.dir), { recursive: true });
}

export interface LayoutInput {
  /** The packed model was written (to `paths.packed`, inside the staged folder). */
  packedWritten: boolean;
  /** The simulated model: the folder's model when no packed model could be built. */
  simulated: ModelProto;
}

/**
 * Fills the staged output folder (the packed model is already in it, written by the write stage):
 * companion files, genai_config.json pointing at the model, and — for onnxruntime-genai — the
 * other models the config names, copied unchanged. Returns warnings for the report.
 */
export async function writeLayout(paths: OutputPaths, input: LayoutInput, signal?: AbortSignal): Promise<string[]> {
  const folder = paths.folder;
  if (!folder) return [];
  const warnings: string[] = [];
  const out = staged(paths, folder.dir);
  await mkdir(out, { recursive: true });
  if (!input.packedWritten) {
    // No packed model (e.g. 3-bit weights): the folder holds the simulated model instead.
    const external = existsSync(`${staged(paths, paths.simulated)}.data`) ? true : 'auto';
    await writeModel(input.simulated, staged(paths, paths.packed), { externalData: external, ...(folder.dataFile ? { dataFileName: folder.dataFile } : {}) });
    warnings.push(`the output folder ${folder.dir} holds the simulated model (fake-quantized float weights): no packed model could be built`);
  }
  const { files, otherModels } = companionFiles(folder.sourceDir, folder.modelFile);
  for (const f of files) {
    throwIfAborted(signal);
    await copyFile(path.join(folder.sourceDir, f), path.join(out, f));
  }
  if (folder.kind === 'genai') {
    const config = JSON.parse(await readFile(path.join(folder.sourceDir, 'genai_config.json'), 'utf8')) as GenaiConfig;
    config.model!.decoder!.filename = folder.modelFile;
    // Other parts of a multi-model pipeline (embedding, vision, speech) are needed to load the
    // folder: copied unchanged, with their external data.
    const named = new Set<string>();
    for (const { part, filename } of genaiModelFiles(config)) {
      if (part === 'decoder' || named.has(filename)) continue;
      named.add(filename);
      if (!existsSync(path.join(folder.sourceDir, filename))) continue;
      for (const f of await modelWithData(folder.sourceDir, filename)) {
        throwIfAborted(signal);
        await mkdir(path.dirname(path.join(out, f)), { recursive: true });
        await copyFile(path.join(folder.sourceDir, f), path.join(out, f));
      }
      warnings.push(`${filename} (genai_config.json model.${part}) is copied into the output folder unchanged: only ${folder.modelFile} was compressed`);
    }
    await writeFile(path.join(out, 'genai_config.json'), JSON.stringify(config, null, 4) + '\n');
    throwIfAborted(signal);
    const problems = await checkGenaiFolder(out);
    for (const p of problems) warnings.push(`output folder: ${p}`);
    const left = otherModels.filter((m) => !named.has(m));
    if (left.length) warnings.push(`not copied into the output folder (genai_config.json doesn't name them): ${left.join(', ')}`);
  } else if (otherModels.length) {
    warnings.push(
      `not copied into the output folder: ${otherModels.join(', ')} — separate model(s) with their own, uncompressed weights; ` +
        `compress each of them (or use decoder_model_merged.onnx) to deploy them`,
    );
  }
  throwIfAborted(signal);
  return warnings;
}

/** genai_config.json name templates (`past_key_values.%d.key`) expanded over the decoder's layers. */
function expandNames(values: Record<string, unknown> | undefined, layers: number): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [key, v] of Object.entries(values ?? {})) {
    if (typeof v !== 'string') continue;
    out.set(key, v.includes('%d') ? Array.from({ length: layers }, (_, i) => v.replace('%d', String(i))) : [v]);
  }
  return out;
}

/**
 * Structural check of an onnxruntime-genai folder (onnxruntime-genai itself is not a dependency):
 * genai_config.json parses and names a decoder; every file the config names exists, with the
 * external data its initializers point at; every input the decoder model declares is one the
 * config names (so the runtime can feed it), and every KV-cache name the config expands
 * (`past_key_values.%d.key` over num_hidden_layers) and `logits` exist in the model.
 * Returns the problems found (empty = looks loadable).
 */
export async function checkGenaiFolder(dir: string): Promise<string[]> {
  const problems: string[] = [];
  const config = readJson(path.join(dir, 'genai_config.json')) as GenaiConfig | undefined;
  const decoder = config?.model?.decoder;
  if (!decoder?.filename) return ['genai_config.json is missing, unreadable or names no model.decoder.filename'];
  for (const { part, filename } of genaiModelFiles(config!)) {
    if (!existsSync(path.join(dir, filename))) problems.push(`genai_config.json model.${part}.filename ${filename} does not exist`);
  }
  if (problems.length) return problems;
  let model;
  try {
    model = await loadModel(path.join(dir, decoder.filename));
  } catch (e) {
    return [`${decoder.filename} can't be read: ${(e as Error).message}`];
  }
  try {
    const g = model.model.graph!;
    const inits = new Set((g.initializer ?? []).map((t) => t.name));
    const inputs = (g.input ?? []).map((v) => v.name ?? '').filter((n) => !inits.has(n));
    const outputs = new Set((g.output ?? []).map((v) => v.name ?? ''));
    const layers = decoder.num_hidden_layers ?? 0;
    // onnxruntime-genai's defaults when the config leaves a name out.
    const named = expandNames({ input_ids: 'input_ids', attention_mask: 'attention_mask', position_ids: 'position_ids', ...decoder.inputs }, layers);
    const namedOut = expandNames({ logits: 'logits', ...decoder.outputs }, layers);
    const known = new Set([...named.values()].flat());
    for (const i of inputs) if (!known.has(i)) problems.push(`${decoder.filename} has an input ${i} that genai_config.json doesn't name`);
    for (const [key, names] of named) {
      if (!/past/.test(key)) continue;
      for (const n of names) if (!inputs.includes(n)) problems.push(`genai_config.json decoder.inputs.${key} names ${n}, which ${decoder.filename} doesn't have`);
    }
    for (const [key, names] of namedOut) {
      if (key !== 'logits' && !/present/.test(key)) continue;
      for (const n of names) if (!outputs.has(n)) problems.push(`genai_config.json decoder.outputs.${key} names ${n}, which ${decoder.filename} doesn't output`);
    }
  } finally {
    await model.close();
  }
  return problems;
}
