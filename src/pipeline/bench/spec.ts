// Benchmark specs: defaults, validation, the bundled model to benchmark when none is given.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { BENCH_SUITES, DEFAULT_BENCH_SPEC, isBenchSuite, type BenchSpec } from '../../protocol/bench';
import { isRecipe, OptionError, parseSparsity, RECIPES } from '../../protocol/recipes';
import { packageRoot } from '../assets';
import { defaultPastModel } from './runtime';

/** A spec with every default filled in and paths made absolute. */
export function resolveBenchSpec(partial: Partial<BenchSpec> & { modelPath: string }): BenchSpec {
  const spec: BenchSpec = { ...DEFAULT_BENCH_SPEC, ...stripUndefined(partial) } as BenchSpec;
  spec.modelPath = path.resolve(spec.modelPath);
  if (spec.pastModelPath) spec.pastModelPath = path.resolve(spec.pastModelPath);
  else spec.pastModelPath = defaultPastModel(spec.modelPath).find((p) => existsSync(p) && path.resolve(p) !== spec.modelPath);
  if (spec.outDir) spec.outDir = path.resolve(spec.outDir);
  if (spec.evalText) spec.evalText = path.resolve(spec.evalText);
  if (spec.calibText) spec.calibText = path.resolve(spec.calibText);
  validateBenchSpec(spec);
  return spec;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export function validateBenchSpec(spec: BenchSpec): void {
  if (!existsSync(spec.modelPath)) throw new OptionError(`model not found: ${spec.modelPath}`);
  if (spec.suites.length === 0) throw new OptionError(`choose at least one suite (${BENCH_SUITES.join(', ')})`);
  for (const s of spec.suites) if (!isBenchSuite(s)) throw new OptionError(`unknown suite "${s}" (choose from ${BENCH_SUITES.join(', ')})`);
  for (const r of [...spec.recipes, spec.runtimeRecipe]) if (!isRecipe(r)) throw new OptionError(`unknown recipe "${r}" (choose from ${RECIPES.join(', ')})`);
  if (spec.recipes.length === 0 && (spec.suites.includes('quality') || spec.suites.includes('speed') || spec.suites.includes('core'))) {
    throw new OptionError('choose at least one recipe');
  }
  if (spec.wbits.length === 0) throw new OptionError('choose at least one weight bit width');
  for (const b of spec.wbits) if (!Number.isInteger(b) || b < 2 || b > 8) throw new OptionError(`weight bits must be integers in 2…8 (got ${b})`);
  parseSparsity(spec.sparsity);
  const positive: Array<[string, number]> = [
    ['samples', spec.samples],
    ['eval windows', spec.evalWindows],
    ['prompt tokens', spec.promptTokens],
    ['decode tokens', spec.decodeTokens],
    ['reps', spec.reps],
    ['compress reps', spec.compressReps],
  ];
  for (const [name, v] of positive) if (!Number.isInteger(v) || v < 1) throw new OptionError(`${name} must be a positive integer (got ${v})`);
  if (!Number.isInteger(spec.warmup) || spec.warmup < 0) throw new OptionError(`warmup must be an integer ≥ 0 (got ${spec.warmup})`);
  for (const n of spec.coreSizes) if (!Number.isInteger(n) || n < 8 || n > 8192) throw new OptionError(`core sizes must be integers in 8…8192 (got ${n})`);
  if (spec.seqlen !== undefined && (!Number.isInteger(spec.seqlen) || spec.seqlen < 2)) throw new OptionError(`seqlen must be an integer ≥ 2 (got ${spec.seqlen})`);
  if (spec.pastModelPath && !existsSync(spec.pastModelPath)) throw new OptionError(`KV-cache model not found: ${spec.pastModelPath}`);
}

/**
 * The bundled model `npm run bench` measures: media/models/small when installed, else the tiny
 * test fixture (with a note saying so).
 */
export function bundledBenchModel(root = packageRoot() ?? process.cwd()): { modelPath: string; label: 'small' | 'tiny'; note?: string } | undefined {
  const small = path.join(root, 'media', 'models', 'small', 'model.onnx');
  if (existsSync(small)) return { modelPath: small, label: 'small' };
  const tiny = path.join(root, 'test', 'fixtures', 'models', 'tiny', 'model.onnx');
  if (existsSync(tiny)) {
    return { modelPath: tiny, label: 'tiny', note: 'the bundled small model (media/models/small/model.onnx) is not installed; measured the tiny test model instead' };
  }
  return undefined;
}
