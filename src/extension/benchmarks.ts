// "OBR: Run Benchmarks": pick a model and the suites, run runBenchmarks in the worker (the same
// function `obr bench` runs) under a cancellable progress notification, then offer the Markdown
// results and the inspector's Benchmarks view. VS Code glue only: the measuring happens in the
// worker; this file imports protocol types and vscode.
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import {
  BENCH_HISTORY_FILE,
  BENCH_SUITE_DESCRIPTIONS,
  BENCH_SUITES,
  DEFAULT_BENCH_SPEC,
  type BenchHistoryEntry,
  type BenchmarksViewData,
  type BenchResult,
  type BenchSpec,
  type BenchSuite,
} from '../protocol/bench';
import { RECIPES } from '../protocol/recipes';
import type { ProgressEvent } from '../protocol/worker';

/** A started worker request that can be cancelled (WorkerClient's RunningJob). */
export interface RunningBench {
  readonly done: Promise<BenchResult>;
  cancel(): void;
}

export interface BenchmarkCommandDeps {
  /** Sends a `bench` request to the worker: `(spec, events) => client.bench(spec, events)`. */
  startBench(spec: BenchSpec, events: { onProgress?(event: ProgressEvent): void }): RunningBench;
  log: { info(message: string): void; warn(message: string): void; error(message: string): void; show(): void };
  /** Opens the inspector's Benchmarks view on these results (optional). */
  showResults?(data: BenchmarksViewData): void;
  /** Resolves the command argument (explorer Uri, Models view node) or asks for a model. */
  pickModel?(arg: unknown): Promise<vscode.Uri | undefined>;
  /** Compression settings to start from (execution providers, sparsity, bits, calibration). */
  readSettings?(modelUri: vscode.Uri): Partial<BenchSpec>;
}

interface Preset {
  label: string;
  detail: string;
  spec: Partial<BenchSpec>;
}

const PRESETS: Preset[] = [
  {
    label: 'Quick',
    detail: 'obr-gptq and sparsegpt-gptq, 8 calibration and 4 evaluation windows, 3 reps — a few minutes on a laptop',
    spec: { recipes: ['obr-gptq', 'sparsegpt-gptq'], samples: 8, evalWindows: 4, reps: 3, warmup: 1, coreSizes: [256, 512] },
  },
  {
    label: 'Full',
    detail: `every recipe (${RECIPES.join(', ')}), ${DEFAULT_BENCH_SPEC.samples} calibration and ${DEFAULT_BENCH_SPEC.evalWindows} evaluation windows, ${DEFAULT_BENCH_SPEC.reps} reps`,
    spec: {},
  },
];

/** Spec fields taken from the `obr.*` settings of the model's folder. */
function settingsSpec(modelUri: vscode.Uri): Partial<BenchSpec> {
  const c = vscode.workspace.getConfiguration('obr', modelUri);
  const eps = c.get<string[]>('executionProviders', ['cpu']);
  const sparsity = c.get<string>('sparsity', DEFAULT_BENCH_SPEC.sparsity);
  return {
    executionProviders: eps.includes('cpu') ? eps : [...eps, 'cpu'],
    sparsity: sparsity.trim() || DEFAULT_BENCH_SPEC.sparsity,
    wbits: [c.get<number>('weightBits', DEFAULT_BENCH_SPEC.wbits[0] ?? 4)],
    abits: c.get<number>('activationBits', DEFAULT_BENCH_SPEC.abits),
    kvbits: c.get<number>('kvCacheBits', DEFAULT_BENCH_SPEC.kvbits),
    groupSize: c.get<number>('groupSize', 0),
    asymmetric: c.get<boolean>('asymmetric', false) === true,
  };
}

/** Reads history.jsonl of a results folder (the host reads files only, never runs onnxruntime). */
export function readBenchHistory(dir: string): BenchHistoryEntry[] {
  const p = path.join(dir, BENCH_HISTORY_FILE);
  if (!existsSync(p)) return [];
  const out: BenchHistoryEntry[] = [];
  for (const line of readFileSync(p, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as BenchHistoryEntry);
    } catch {
      // a torn line: skip
    }
  }
  return out;
}

async function defaultPickModel(arg: unknown): Promise<vscode.Uri | undefined> {
  if (arg instanceof vscode.Uri) return arg;
  if (arg && typeof arg === 'object' && 'uri' in arg && (arg as { uri: unknown }).uri instanceof vscode.Uri) return (arg as { uri: vscode.Uri }).uri;
  const files = (await vscode.workspace.findFiles('**/*.onnx', '**/{node_modules,.git}/**', 500)).filter((f) => !/\.(packed|obr-)/.test(path.basename(f.fsPath)));
  const items = files.map((f) => ({ label: path.basename(f.fsPath), description: vscode.workspace.asRelativePath(path.dirname(f.fsPath)), uri: f }));
  if (items.length === 0) {
    const chosen = await vscode.window.showOpenDialog({ title: 'Model to benchmark', canSelectMany: false, filters: { 'ONNX models': ['onnx'] } });
    return chosen?.[0];
  }
  return (await vscode.window.showQuickPick(items, { title: 'OBR: Run Benchmarks — model' }))?.uri;
}

/** Asks for suites and a preset; undefined when the user dismisses a pick. */
async function askSpec(modelUri: vscode.Uri, deps: BenchmarkCommandDeps): Promise<BenchSpec | undefined> {
  type SuiteItem = vscode.QuickPickItem & { suite: BenchSuite };
  const suiteItems: SuiteItem[] = BENCH_SUITES.map((s) => ({ label: s, description: BENCH_SUITE_DESCRIPTIONS[s], picked: true, suite: s }));
  const suites = await vscode.window.showQuickPick(suiteItems, {
    title: `OBR: Run Benchmarks — ${path.basename(modelUri.fsPath)}: suites`,
    canPickMany: true,
    placeHolder: 'Suites to run',
  });
  if (!suites || suites.length === 0) return undefined;
  const preset = await vscode.window.showQuickPick(
    PRESETS.map((p) => ({ label: p.label, detail: p.detail, preset: p })),
    { title: 'OBR: Run Benchmarks — how thorough' },
  );
  if (!preset) return undefined;
  const fromSettings = deps.readSettings ? deps.readSettings(modelUri) : settingsSpec(modelUri);
  return {
    ...DEFAULT_BENCH_SPEC,
    ...fromSettings,
    ...preset.preset.spec,
    modelPath: modelUri.fsPath,
    suites: suites.map((s) => s.suite),
    command: `OBR: Run Benchmarks (${preset.preset.label}, ${suites.map((s) => s.suite).join(',')})`,
  };
}

function errorCode(e: unknown): string {
  return e && typeof e === 'object' && 'code' in e ? String((e as { code: unknown }).code) : e instanceof Error ? e.name : 'Error';
}

/** Runs one benchmark with a cancellable notification; resolves with the result, or undefined when cancelled. */
export async function runBenchmarkWithProgress(spec: BenchSpec, deps: BenchmarkCommandDeps): Promise<BenchResult | undefined> {
  return vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `OBR benchmarks: ${path.basename(spec.modelPath)}`, cancellable: true },
    async (progress, token) => {
      // Stages restart their counts (one compression after another), so the notification shows
      // the current step's message and fraction rather than a cumulative bar.
      const job = deps.startBench(spec, {
        onProgress: (e) => {
          const pct = e.total > 0 ? ` ${Math.round((100 * e.done) / e.total)}%` : '';
          progress.report({ message: `${e.message ?? e.stage}${pct}` });
        },
      });
      const sub = token.onCancellationRequested(() => job.cancel());
      try {
        return await job.done;
      } catch (e) {
        if (errorCode(e) === 'AbortError') {
          deps.log.info('benchmarks cancelled');
          return undefined;
        }
        throw e;
      } finally {
        sub.dispose();
      }
    },
  );
}

/** Registers "obr.runBenchmarks". The returned disposable is also pushed to context.subscriptions. */
export function registerBenchmarkCommand(context: vscode.ExtensionContext, deps: BenchmarkCommandDeps): vscode.Disposable {
  const disposable = vscode.commands.registerCommand('obr.runBenchmarks', async (arg: unknown) => {
    try {
      const uri = await (deps.pickModel ?? defaultPickModel)(arg);
      if (!uri) return;
      const spec = await askSpec(uri, deps);
      if (!spec) return;
      deps.log.info(`benchmarks: ${JSON.stringify(spec)}`);
      const result = await runBenchmarkWithProgress(spec, deps);
      if (!result) {
        void vscode.window.showInformationMessage('OBR benchmarks cancelled.');
        return;
      }
      for (const w of result.warnings) deps.log.warn(`benchmarks: ${w}`);
      const actions = ['Open Results', ...(deps.showResults ? ['Show Charts'] : [])];
      const choice = await vscode.window.showInformationMessage(`OBR benchmarks written to ${vscode.workspace.asRelativePath(result.outputs.dir)}.`, ...actions);
      if (choice === 'Open Results') {
        await vscode.commands.executeCommand('markdown.showPreview', vscode.Uri.file(result.outputs.markdown));
      } else if (choice === 'Show Charts') {
        deps.showResults?.({ latest: result, history: readBenchHistory(result.outputs.dir) });
      }
    } catch (e) {
      const err = e as Error;
      deps.log.error(`benchmarks failed: ${err.name}: ${err.message}\n${err.stack ?? ''}`);
      const action = await vscode.window.showErrorMessage(`OBR benchmarks failed: ${err.message}`, 'Show Log');
      if (action) deps.log.show();
    }
  });
  context.subscriptions.push(disposable);
  return disposable;
}
