// `obr compress MODEL.onnx …`: pre-flight estimate, the compression pipeline with progress on
// stderr, and a final table of perplexities and output paths.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { isAbort } from '../../pipeline/cancel';
import { checkOutputFolder, JobLock } from '../../pipeline/lock';
import { isOutputLayout, OUTPUT_LAYOUTS, type OutputLayout } from '../../pipeline/layouts';
import { outputPaths } from '../../pipeline/outputs';
import { runCompression, type PipelineOptions } from '../../pipeline/compress';
import { estimateCompression, formatBytes, formatSeconds, stageEstimate, type Preflight } from '../../pipeline/preflight';
import { DEFAULT_EXECUTION_PROVIDERS, DEFAULT_OPTIONS, EXECUTION_PROVIDERS, GROUP_SIZES, RECIPES, isRecipe, parseGroupSize, parseRecipeList, parseSparsity, type CompressOptions } from '../../protocol/recipes';
import type { CompressionReport } from '../../protocol/report';
import type { ProgressEvent } from '../../protocol/worker';
import { readText } from '../../runtime/text';
import { loadTokenizer } from '../../runtime/tokenizer';
import { type CliCommand, UsageError } from '../command';

const KNOWN_EPS = new Set<string>([...EXECUTION_PROVIDERS, 'tensorrt']);

export function parseEpList(text: string | undefined): string[] {
  if (!text) return [...DEFAULT_EXECUTION_PROVIDERS];
  const list = text.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  for (const ep of list) {
    if (!KNOWN_EPS.has(ep)) throw new UsageError(`--ep: unknown execution provider "${ep}" (known: ${[...KNOWN_EPS].join(', ')})`);
  }
  if (list.length === 0) throw new UsageError('--ep: give at least one execution provider, e.g. --ep cuda,cpu');
  return list;
}

export function parsePositiveInt(flag: string, text: string, min = 1): number {
  const v = Number(text);
  if (!Number.isInteger(v) || v < min) throw new UsageError(`${flag}: expected an integer ≥ ${min}, got "${text}"`);
  return v;
}

export function parseNumberIn(flag: string, text: string, lo: number, hi: number): number {
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || v < lo || v > hi) throw new UsageError(`${flag}: expected a number in [${lo}, ${hi}], got "${text}"`);
  return v;
}

// ---------------------------------------------------------------- the command

export const compressCommand: CliCommand = {
  name: 'compress',
  summary: 'compress a model (prune + quantize + compensate) and write it beside the source',
  usage:
    'obr compress MODEL.onnx [--recipe obr-gptq] [--sparsity 0.5|2:4|4:8] [--wbits 4] [--group-size 0|32|64|128|256] [--asym]\n' +
    '       [--abits 4|16] [--kvbits 4|16]\n' +
    '       [--alpha 0.5] [--damp 0.01] [--calib FILE.txt] [--samples 128] [--seqlen N] [--seed 0] [--out DIR]\n' +
    '       [--ep cuda,cpu] [--mode sequential|oneshot] [--solver batched|exact] [--sensitivity] [--eval-text FILE] [--eval-windows K]\n' +
    '       [--baselines wanda-rtn,sparsegpt-gptq] [--no-eval] [--no-resume] [--batch B] [--threads T] [--cache-mib M] [--json] [--yes]\n' +
    '       [--heads N] [--kv-heads N] [--head-dim D] [--layout auto|file|folder]\n\n' +
    `  recipes: ${RECIPES.join(', ')} (default ${DEFAULT_OPTIONS.recipe})\n` +
    '  --baselines: also compress every layer with these recipes on the same Hessians and evaluate them on the\n' +
    '  same windows, for comparison in the report (no extra output files).\n' +
    `  --group-size: one weight scale per G input columns of a row (${GROUP_SIZES.join('|')}; 0 = one per row, the paper's\n` +
    '  setting and the default); --asym adds a zero point per group. The output names then end in -g128 / -g128a.\n' +
    '  Writes NAME.<recipe>-w4a4kv4-s50.onnx (simulated), NAME.<recipe>-w4-s50.packed.onnx (MatMulNBits) and\n' +
    '  NAME.<recipe>-w4a4kv4-s50.report.json. An interrupted job resumes from .NAME.obr-partial/ when rerun.\n' +
    '  --cache-mib: memory for cached block activations (default 2048); beyond it they spill to .NAME.obr-partial/.\n' +
    '  --solver: OBR compensation solver; batched (default: ADMM over all rows, products on onnxruntime with the\n' +
    '  --ep providers) or exact (one Cholesky per row, float64; the reference).\n' +
    '  --layout: auto (default) writes the packed model into a new drop-in folder SOURCEFOLDER.<recipe>-w4-s50/ when the\n' +
    '  model is in an onnxruntime-genai folder (genai_config.json) or an Optimum folder (config.json + model.onnx /\n' +
    '  decoder_model*.onnx): the same files with the compressed model in place of the original; file: loose files only;\n' +
    '  folder: always the folder.\n' +
    '  --yes runs even when the pre-flight estimate says memory will not suffice.\n' +
    '  --heads/--kv-heads/--head-dim: attention geometry for the rotation (A4/KV4) when neither the graph nor a\n' +
    '  config.json / genai_config.json beside the model tells it; they win over both.',
  async run(argv) {
    const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: COMPRESS_FLAGS });
    const [model, ...rest] = positionals;
    if (!model || rest.length) throw new UsageError('give exactly one MODEL.onnx');
    const { options, extra } = compressOptionsFromFlags(values);
    return runCompressCli(model, options, extra, { yes: !!values.yes, json: !!values.json });
  },
};

export const COMPRESS_FLAGS = {
  recipe: { type: 'string' },
  sparsity: { type: 'string' },
  wbits: { type: 'string' },
  'group-size': { type: 'string' },
  asym: { type: 'boolean' },
  abits: { type: 'string' },
  kvbits: { type: 'string' },
  alpha: { type: 'string' },
  damp: { type: 'string' },
  calib: { type: 'string' },
  samples: { type: 'string' },
  seqlen: { type: 'string' },
  seed: { type: 'string' },
  out: { type: 'string' },
  ep: { type: 'string' },
  mode: { type: 'string' },
  solver: { type: 'string' },
  sensitivity: { type: 'boolean' },
  baselines: { type: 'string' },
  'eval-text': { type: 'string' },
  'eval-windows': { type: 'string' },
  'no-eval': { type: 'boolean' },
  'no-resume': { type: 'boolean' },
  batch: { type: 'string' },
  threads: { type: 'string' },
  'cache-mib': { type: 'string' },
  json: { type: 'boolean' },
  yes: { type: 'boolean' },
  heads: { type: 'string' },
  'kv-heads': { type: 'string' },
  'head-dim': { type: 'string' },
  layout: { type: 'string' },
} as const;

type Flags = Partial<Record<keyof typeof COMPRESS_FLAGS, string | boolean>>;

export function compressOptionsFromFlags(v: Flags, base: CompressOptions = DEFAULT_OPTIONS): { options: CompressOptions; extra: PipelineOptions } {
  const str = (k: keyof typeof COMPRESS_FLAGS) => (typeof v[k] === 'string' ? (v[k] as string) : undefined);
  const recipe = str('recipe') ?? base.recipe;
  if (!isRecipe(recipe)) throw new UsageError(`--recipe: unknown recipe "${recipe}" (choose one of ${RECIPES.join(', ')})`);
  let sparsity = base.sparsity;
  const sp = str('sparsity');
  if (sp !== undefined) {
    try {
      sparsity = parseSparsity(sp);
    } catch (e) {
      throw new UsageError(`--sparsity: ${(e as Error).message}`);
    }
  }
  const bits = (flag: 'abits' | 'kvbits', fallback: number) => {
    const t = str(flag);
    if (t === undefined) return fallback;
    const b = Number(t);
    if (!Number.isInteger(b) || b < 2 || (b > 8 && b !== 16)) throw new UsageError(`--${flag}: expected 2…8 or 16 (off), got "${t}"`);
    return b;
  };
  let groupSize = base.groupSize;
  const gs = str('group-size');
  if (gs !== undefined) {
    try {
      groupSize = parseGroupSize(gs);
    } catch (e) {
      throw new UsageError(`--group-size: ${(e as Error).message}`);
    }
  }
  const mode = str('mode') ?? base.calibrationMode;
  if (mode !== 'sequential' && mode !== 'oneshot') throw new UsageError(`--mode: expected sequential or oneshot, got "${mode}"`);
  const solver = str('solver') ?? base.solver ?? 'batched';
  if (solver !== 'batched' && solver !== 'exact') throw new UsageError(`--solver: expected batched or exact, got "${solver}"`);
  const options: CompressOptions = {
    ...base,
    solver,
    recipe,
    sparsity,
    wbits: str('wbits') !== undefined ? parseIntIn('--wbits', str('wbits')!, 2, 8) : base.wbits,
    groupSize,
    asymmetric: v.asym === true ? true : base.asymmetric,
    abits: bits('abits', base.abits),
    kvbits: bits('kvbits', base.kvbits),
    alpha: str('alpha') !== undefined ? parseNumberIn('--alpha', str('alpha')!, 0, 1) : base.alpha,
    damp: str('damp') !== undefined ? parseNumberIn('--damp', str('damp')!, 0, 10) : base.damp,
    calibText: str('calib') ?? base.calibText,
    samples: str('samples') !== undefined ? parsePositiveInt('--samples', str('samples')!) : base.samples,
    seqlen: str('seqlen') !== undefined ? parsePositiveInt('--seqlen', str('seqlen')!, 2) : base.seqlen,
    seed: str('seed') !== undefined ? parsePositiveInt('--seed', str('seed')!, 0) : base.seed,
    outDir: str('out') ?? base.outDir,
    executionProviders: str('ep') !== undefined ? (parseEpList(str('ep')) as CompressOptions['executionProviders']) : base.executionProviders,
    calibrationMode: mode,
  };
  if (options.calibText !== undefined && !existsSync(options.calibText)) throw new UsageError(`--calib: file not found: ${options.calibText}`);
  const evalText = str('eval-text');
  if (evalText !== undefined && !existsSync(evalText)) throw new UsageError(`--eval-text: file not found: ${evalText}`);
  let baselines: PipelineOptions['baselines'];
  const bl = str('baselines');
  if (bl !== undefined) {
    try {
      baselines = parseRecipeList(bl);
    } catch (e) {
      throw new UsageError(`--baselines: ${(e as Error).message}`);
    }
  }
  const extra: PipelineOptions = {
    evalText: v['no-eval'] ? null : evalText,
    baselines,
    evalWindows: str('eval-windows') !== undefined ? parsePositiveInt('--eval-windows', str('eval-windows')!) : undefined,
    sensitivity: !!v.sensitivity,
    resume: !v['no-resume'],
    batch: str('batch') !== undefined ? parsePositiveInt('--batch', str('batch')!) : undefined,
    threads: str('threads') !== undefined ? parsePositiveInt('--threads', str('threads')!) : undefined,
    activationCacheMiB: str('cache-mib') !== undefined ? parsePositiveInt('--cache-mib', str('cache-mib')!, 0) : undefined,
    geometry: geometryFromFlags(str('heads'), str('kv-heads'), str('head-dim')),
    layout: parseLayout(str('layout')),
  };
  return { options, extra };
}

function parseLayout(text: string | undefined): OutputLayout | undefined {
  if (text === undefined) return undefined;
  if (!isOutputLayout(text)) throw new UsageError(`--layout: expected ${OUTPUT_LAYOUTS.join(', ')}, got "${text}"`);
  return text;
}

/** --heads/--kv-heads/--head-dim, or undefined when none is given. */
function geometryFromFlags(heads?: string, kvHeads?: string, headDim?: string): PipelineOptions['geometry'] {
  if (heads === undefined && kvHeads === undefined && headDim === undefined) return undefined;
  return {
    heads: heads !== undefined ? parsePositiveInt('--heads', heads) : undefined,
    kvHeads: kvHeads !== undefined ? parsePositiveInt('--kv-heads', kvHeads) : undefined,
    headDim: headDim !== undefined ? parsePositiveInt('--head-dim', headDim) : undefined,
    source: '--heads/--kv-heads/--head-dim',
  };
}

function parseIntIn(flag: string, text: string, lo: number, hi: number): number {
  const v = Number(text);
  if (!Number.isInteger(v) || v < lo || v > hi) throw new UsageError(`${flag}: expected an integer in ${lo}…${hi}, got "${text}"`);
  return v;
}

/** Pre-flight, the job with progress on stderr, the result table on stdout. Returns the exit code. */
export async function runCompressCli(
  model: string,
  options: CompressOptions,
  extra: PipelineOptions,
  cli: { yes: boolean; json: boolean; note?: string },
): Promise<number> {
  if (!existsSync(model)) throw new UsageError(`model not found: ${model}`);
  // An unusable --out, or another job on the same folder, is refused before the pre-flight probe.
  const paths = outputPaths(model, options);
  await checkOutputFolder(paths.dir);
  await JobLock.check(paths.partialDir);
  // Bad tokenizer / text inputs fail fast, before the probe.
  await loadTokenizer(model);
  if (options.calibText) await readText(options.calibText);
  if (extra.evalText) await readText(extra.evalText);
  const pre = await estimateCompression(model, options, { evalWindows: extra.evalWindows, baselines: extra.baselines, batch: extra.batch, evaluate: extra.evalText !== null, evalText: extra.evalText ?? undefined, threads: extra.threads, geometry: extra.geometry, onlyBlocks: extra.onlyBlocks });
  extra = { ...extra, estimate: stageEstimate(pre) };
  printPreflight(pre);
  if (!pre.fits && !cli.yes) {
    console.error(
      `obr compress: the job needs about ${formatBytes(pre.peakBytes)} of memory but only ${formatBytes(pre.availableBytes)} is available; ` +
        'close other programs, use --mode sequential, fewer --samples or a shorter --seqlen — or pass --yes to try anyway',
    );
    return 2;
  }
  const abort = new AbortController();
  const onSigint = () => {
    console.error('\ncancelling… (the output folder is left as it was)');
    abort.abort();
  };
  process.once('SIGINT', onSigint);
  const progress = new StderrProgress();
  let report: CompressionReport;
  try {
    report = await runCompression(
      model,
      options,
      {
        signal: abort.signal,
        onProgress: (e) => progress.update(e),
        log: (level, message) => progress.log(level, message),
      },
      extra,
    );
  } catch (e) {
    progress.end();
    if (isAbort(e)) {
      console.error('obr compress: cancelled');
      return 130;
    }
    throw e;
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
  progress.end();
  if (cli.json) console.log(JSON.stringify(report, null, 1));
  else console.log(formatResult(report, cli.note));
  return 0;
}

export function printPreflight(pre: Preflight): void {
  console.error(
    `pre-flight: ${pre.layers} layers, ${(pre.params / 1e6).toFixed(2)} M parameters; ` +
      `peak memory ≈ ${formatBytes(pre.peakBytes)} (available ${formatBytes(pre.availableBytes)}), ` +
      `disk ≈ ${formatBytes(pre.outputBytes ?? 0)}, time ≈ ${formatSeconds(pre.seconds)} ` +
      `(load ${formatSeconds(pre.breakdown.loadSeconds)}, ${pre.breakdown.rotateSeconds > 0 ? `rotate ${formatSeconds(pre.breakdown.rotateSeconds)}, ` : ''}calibrate ${formatSeconds(pre.breakdown.calibrateSeconds)}, compress ${formatSeconds(pre.breakdown.compressSeconds)}, write ${formatSeconds(pre.breakdown.writeSeconds)}, evaluate ${formatSeconds(pre.breakdown.evaluateSeconds)})`,
  );
  for (const n of pre.notes) console.error(`  ${n}`);
}

export function formatResult(r: CompressionReport, note?: string): string {
  const lines: string[] = [];
  if (note) lines.push(note, '');
  const d = r.perplexity.dense;
  const c = r.perplexity.compressed;
  const tag = path.basename(r.outputs.report).replace(/\.report\.json$/, '').split('.').pop() ?? r.recipe;
  if (d && c) {
    lines.push(`perplexity on ${path.basename(d.text)} (${d.windows} windows × ${d.seqlen} tokens)`);
    lines.push(`  ${'dense'.padEnd(28)} ${d.perplexity.toFixed(3).padStart(10)}`);
    const row = (label: string, p: number) => `  ${label.padEnd(28)} ${p.toFixed(3).padStart(10)}   (${p >= d.perplexity ? '+' : ''}${((p / d.perplexity - 1) * 100).toFixed(1)}%)`;
    lines.push(row(tag, c.perplexity));
    for (const b of r.baselines ?? []) if (b.perplexity) lines.push(row(`${b.recipe} (baseline)`, b.perplexity.perplexity));
  } else {
    lines.push('perplexity: not evaluated');
  }
  const zeros = r.layers.reduce((s, l) => s + l.sparsity * l.rows * l.cols, 0) / Math.max(1, r.layers.reduce((s, l) => s + l.rows * l.cols, 0));
  const g = r.layers[0]?.groupSize ?? 0;
  const grid = `${g > 0 ? `groups of ${g}` : 'one scale per row'}, ${r.layers[0]?.asymmetric ? 'asymmetric' : 'symmetric'}`;
  lines.push(`layers: ${r.layers.length} compressed, ${(zeros * 100).toFixed(1)}% zeros, ${r.layers[0]?.wbits ?? '?'}-bit weights (${grid})`);
  if (r.baselines?.length) {
    // Σ tr(ΔW H ΔWᵀ) over the layers, each recipe on the same Hessians.
    const total = (losses: Array<{ loss: { total: number } }>) => losses.reduce((s, l) => s + l.loss.total, 0);
    lines.push(`layer loss Σ (same Hessians): ${[[r.recipe, total(r.layers)] as const, ...r.baselines.map((b) => [b.recipe, total(b.layers)] as const)].map(([n, v]) => `${n} ${v.toPrecision(4)}`).join(', ')}`);
  }
  lines.push('outputs:');
  if (r.outputs.simulated) lines.push(`  simulated  ${r.outputs.simulated}`);
  if (r.outputs.folder) lines.push(`  folder     ${r.outputs.folder.path} (${r.outputs.folder.kind === 'genai' ? 'onnxruntime-genai' : 'Optimum'} layout)`);
  if (r.outputs.packed) {
    const ps = r.packedSize;
    lines.push(`  packed     ${r.outputs.packed}${ps ? ` (${formatBytes(ps.fileBytes)}; layers ${ps.bitsPerWeight.toFixed(2)} bits/weight with scales and zero points)` : ''}`);
  }
  lines.push(`  report     ${r.outputs.report}`);
  const t = r.timings;
  const parts = ['load', 'rotate', 'calibrate', 'compress', 'baselines', 'write', 'evaluate', 'sensitivity'].filter((k) => t[k] !== undefined).map((k) => `${k} ${t[k]!.toFixed(1)}`);
  lines.push(`time: ${t.total?.toFixed(1)} s (${parts.join(', ')}); execution provider: ${r.executionProvider.used}`);
  if (r.estimate) {
    const e = r.estimate;
    const est = ['calibrate', 'compress', 'evaluate'].filter((k) => e[k] !== undefined && t[k] !== undefined).map((k) => `${k} ${e[k]!.toFixed(1)}/${t[k]!.toFixed(1)}`);
    lines.push(`pre-flight estimate/actual s: total ${e.total?.toFixed(1)}/${t.total?.toFixed(1)}${est.length ? `, ${est.join(', ')}` : ''}`);
  }
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

/** Progress on stderr: one rewritten line on a terminal, a line per stage (and every ~5 s) otherwise. */
class StderrProgress {
  private readonly tty = !!process.stderr.isTTY;
  private lastStage = '';
  private lastLine = 0;
  private dirty = false;

  update(e: ProgressEvent): void {
    const eta = e.etaSeconds !== undefined ? `, ETA ${formatSeconds(e.etaSeconds)}` : '';
    const text = `${e.stage} ${e.done}/${e.total}${e.message ? ` ${e.message}` : ''}${eta}`;
    if (this.tty) {
      process.stderr.write(`\r\x1b[K${text.slice(0, (process.stderr.columns ?? 120) - 1)}`);
      this.dirty = true;
      return;
    }
    const now = Date.now();
    if (e.stage !== this.lastStage || now - this.lastLine > 5000) {
      process.stderr.write(`${text}\n`);
      this.lastStage = e.stage;
      this.lastLine = now;
    }
  }

  log(level: string, message: string): void {
    if (level === 'debug' && !process.env.OBR_DEBUG) return;
    this.end();
    process.stderr.write(`${level === 'info' ? '' : `${level}: `}${message}\n`);
  }

  end(): void {
    if (this.tty && this.dirty) process.stderr.write('\r\x1b[K');
    this.dirty = false;
  }
}
