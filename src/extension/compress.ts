// The "Compress Model…" flow: pick a recipe and calibration text, confirm a pre-flight estimate,
// then run the job in the worker with a cancellable progress notification, a status-bar item,
// live inspector updates and a result notification.
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { RECIPE_DESCRIPTIONS, RECIPES, OptionError, type CompressOptions, type RecipeName } from '../protocol/recipes';
import type { CompressionReport, LayerReport } from '../protocol/report';
import type { LiveJob } from '../protocol/webview';
import type { JobSettings, ProgressEvent } from '../protocol/worker';
import { reportRelative, type InspectorManager, type JobHandle } from './inspector';
import { confirmBeforeCompress, defaultRecipe, openInspectorOnStart, readCompressOptions, readJobSettings } from './settings';
import { WorkerCrashError, WorkerRequestError, type RunningJob, type WorkerClient } from './workerClient';

const RECIPE_TITLES: Record<RecipeName, string> = {
  'obr-gptq': 'OBR-GPTQ — best quality',
  'obr-rtn': 'OBR-RTN — OBR compensation, round-to-nearest',
  'sparsegpt-gptq': 'SparseGPT + GPTQ — main baseline',
  'wanda-rtn': 'Wanda + RTN — fastest with pruning',
  gptq: 'GPTQ — quantization only',
  rtn: 'RTN — quantization only, fastest',
};

const STAGE_NAMES: Record<ProgressEvent['stage'], string> = {
  probe: 'Checking execution providers',
  load: 'Loading model',
  rotate: 'Rotating',
  calibrate: 'Calibrating',
  compress: 'Compressing',
  baseline: 'Baselines',
  write: 'Writing outputs',
  evaluate: 'Evaluating perplexity',
};

function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function formatBytes(b: number): string {
  if (b < 1024 ** 2) return `${(b / 1024).toFixed(0)} KB`;
  if (b < 1024 ** 3) return `${(b / 1024 ** 2).toFixed(0)} MB`;
  return `${(b / 1024 ** 3).toFixed(1)} GB`;
}

/** The confirmation's line about the obr.baselines setting (empty when there are none). */
function baselineNote(o: CompressOptions, job: JobSettings): string {
  const list = (job.baselines ?? []).filter((b) => b !== o.recipe);
  return list.length ? `\nBaselines for comparison (obr.baselines): ${list.join(', ')} — same Hessians, no extra files.` : '';
}

function bitsTag(o: CompressOptions): string {
  const grid = o.groupSize > 0 ? ` g${o.groupSize}${o.asymmetric ? ' asym' : ''}` : o.asymmetric ? ' asym' : '';
  return `W${o.wbits}${o.abits < 16 ? `A${o.abits}` : ''}${o.kvbits < 16 ? `KV${o.kvbits}` : ''}${grid}`;
}

class Job implements JobHandle {
  readonly job: LiveJob;
  report: CompressionReport | undefined;
  reportPath: string | undefined;
  private readonly emitter = new vscode.EventEmitter<void>();
  readonly onDidChange = this.emitter.event;
  running: RunningJob<CompressionReport> | undefined;
  readonly started = Date.now();

  constructor(modelPath: string, recipe: RecipeName) {
    this.job = { modelPath, recipe, state: 'running', layers: [] };
  }

  progress(event: ProgressEvent): void {
    this.job.progress = event;
    if (event.stage === 'compress' && event.total > 0) this.job.totalLayers = event.total;
    this.emitter.fire();
  }

  layer(layer: LayerReport): void {
    const i = this.job.layers.findIndex((l) => l.name === layer.name);
    if (i >= 0) this.job.layers[i] = layer;
    else this.job.layers.push(layer);
    this.emitter.fire();
  }

  finish(state: LiveJob['state'], report?: CompressionReport, reportPath?: string, error?: string): void {
    this.job.state = state;
    this.job.error = error;
    this.report = report;
    this.reportPath = reportPath;
    this.emitter.fire();
  }

  dispose(): void {
    this.emitter.dispose();
  }
}

export class CompressCommand implements vscode.Disposable {
  private current: Job | undefined;
  private readonly status: vscode.StatusBarItem;

  constructor(
    private readonly worker: () => WorkerClient,
    private readonly inspectors: InspectorManager,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.status = vscode.window.createStatusBarItem('obr.job', vscode.StatusBarAlignment.Left, 10);
    this.status.name = 'OBR Studio job';
    this.status.command = 'obr.showJob';
  }

  /** The running job's inspector (status-bar click). */
  showJob(): void {
    if (this.current) this.inspectors.openJob(this.current, false);
    else this.log.show();
  }

  async run(uri: vscode.Uri | undefined): Promise<void> {
    if (this.current) {
      const pick = await vscode.window.showWarningMessage(
        `OBR Studio is already compressing ${path.basename(this.current.job.modelPath)}.`,
        'Show Progress',
        'Cancel It',
      );
      if (pick === 'Show Progress') this.showJob();
      if (pick === 'Cancel It') this.current.running?.cancel();
      return;
    }
    const model = uri ?? (await this.pickModel());
    if (!model) return;
    const recipe = await this.pickRecipe();
    if (!recipe) return;
    let options: CompressOptions;
    try {
      options = readCompressOptions(recipe, model);
    } catch (e) {
      if (e instanceof OptionError) {
        void vscode.window.showErrorMessage(`OBR Studio: ${e.message}`, 'Open Settings').then((a) => {
          if (a) void vscode.commands.executeCommand('workbench.action.openSettings', 'obr.');
        });
        return;
      }
      throw e;
    }
    const calib = await this.pickCalibration(model, options.calibText);
    if (calib === null) return;
    options.calibText = calib;

    if (confirmBeforeCompress()) {
      const ok = await this.confirm(model, options, readJobSettings(model));
      if (!ok) return;
    }
    await this.execute(model, options);
  }

  private async pickModel(): Promise<vscode.Uri | undefined> {
    const picked = await vscode.window.showOpenDialog({
      title: 'OBR: model to compress',
      canSelectMany: false,
      filters: { 'ONNX models': ['onnx'] },
      defaultUri: vscode.workspace.workspaceFolders?.[0]?.uri,
    });
    return picked?.[0];
  }

  private async pickRecipe(): Promise<RecipeName | undefined> {
    const def = defaultRecipe();
    type Item = vscode.QuickPickItem & { recipe: RecipeName };
    const items: Item[] = RECIPES.map((r) => ({
      recipe: r,
      label: r,
      description: RECIPE_TITLES[r] + (r === def ? ' (default)' : ''),
      detail: RECIPE_DESCRIPTIONS[r],
    }));
    items.sort((a, b) => (a.recipe === def ? -1 : b.recipe === def ? 1 : 0));
    const pick = await vscode.window.showQuickPick(items, {
      title: 'OBR: compression recipe',
      placeHolder: 'Recipe (sparsity and bits come from the obr.* settings)',
      matchOnDescription: true,
      matchOnDetail: true,
    });
    return pick?.recipe;
  }

  /** undefined = the bundled text; null = the user dismissed the pick. */
  private async pickCalibration(model: vscode.Uri, fromSettings: string | undefined): Promise<string | undefined | null> {
    type Item = vscode.QuickPickItem & { value: 'bundled' | 'settings' | 'workspace' | 'file' };
    const items: Item[] = [];
    if (fromSettings) items.push({ value: 'settings', label: path.basename(fromSettings), description: 'from the obr.calibrationText setting', detail: fromSettings });
    items.push(
      { value: 'bundled', label: 'Bundled calibration text', description: 'public-domain English text shipped with OBR Studio' },
      { value: 'workspace', label: 'A text file in the workspace…' },
      { value: 'file', label: 'Any text file…' },
    );
    const pick = await vscode.window.showQuickPick(items, { title: 'OBR: calibration text', placeHolder: 'Text the layer statistics are gathered on' });
    if (!pick) return null;
    switch (pick.value) {
      case 'settings':
        return fromSettings;
      case 'bundled':
        return undefined;
      case 'workspace': {
        const files = await vscode.workspace.findFiles('**/*.{txt,raw,md}', '**/node_modules/**', 500);
        const chosen = await vscode.window.showQuickPick(
          files.map((f) => ({ label: vscode.workspace.asRelativePath(f), uri: f })),
          { title: 'OBR: calibration text from the workspace' },
        );
        return chosen ? chosen.uri.fsPath : null;
      }
      case 'file': {
        const picked = await vscode.window.showOpenDialog({
          title: 'OBR: calibration text',
          canSelectMany: false,
          defaultUri: vscode.Uri.file(path.dirname(model.fsPath)),
        });
        return picked?.[0]?.fsPath ?? null;
      }
      default: {
        const never: never = pick.value;
        return never;
      }
    }
  }

  private async confirm(model: vscode.Uri, options: CompressOptions, job: JobSettings): Promise<boolean> {
    let detail: string;
    try {
      const e = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Window, title: 'OBR: estimating…' },
        () => this.worker().estimate(model.fsPath, options, job),
      );
      detail = [
        `${e.layers} linear layers, ${(e.params / 1e6).toFixed(2)} M parameters.`,
        `About ${formatSeconds(e.seconds)} and ${formatBytes(e.peakBytes)} of memory${e.outputBytes ? `; outputs ≈ ${formatBytes(e.outputBytes)}` : ''}.`,
        ...(e.fits === false ? [`⚠ That is more memory than is free (${formatBytes(e.availableBytes ?? 0)}); the worker may be killed.`] : []),
        ...e.notes,
      ].join('\n');
    } catch (e) {
      this.log.warn(`estimate failed: ${(e as Error).message}`);
      if (e instanceof WorkerRequestError && e.code === 'ModelFormatError') {
        this.showError(e);
        return false;
      }
      detail = `No estimate available (${(e as Error).message}).`;
    }
    const sparsity = options.sparsity.kind === 'nm' ? `${options.sparsity.n}:${options.sparsity.m}` : options.sparsity.kind === 'dense' ? 'dense' : `${Math.round(options.sparsity.ratio * 100)}%`;
    const answer = await vscode.window.showInformationMessage(
      `Compress ${path.basename(model.fsPath)} with ${options.recipe} ${bitsTag(options)} ${sparsity}?`,
      { modal: true, detail: `${detail}\nCalibration: ${options.calibText ? path.basename(options.calibText) : 'bundled text'}, ${options.samples} samples.${baselineNote(options, job)}` },
      'Compress',
    );
    return answer === 'Compress';
  }

  private async execute(model: vscode.Uri, options: CompressOptions): Promise<void> {
    const job = new Job(model.fsPath, options.recipe);
    this.current = job;
    const name = path.basename(model.fsPath);
    this.log.info(`compress ${model.fsPath} with ${JSON.stringify(options)}`);
    this.status.text = `$(sync~spin) OBR: ${options.recipe}`;
    this.status.tooltip = `Compressing ${name} — click to open the inspector`;
    this.status.show();
    void vscode.commands.executeCommand('setContext', 'obr.jobRunning', true);
    if (openInspectorOnStart()) this.inspectors.openJob(job);

    try {
      const report = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `OBR: compressing ${name}`, cancellable: true },
        async (progress, token) => {
          let lastFraction = 0;
          const running = this.worker().compress(model.fsPath, options, {
            onProgress: (e) => {
              job.progress(e);
              const stage = STAGE_NAMES[e.stage] ?? e.stage;
              const unit = e.total > 0 ? ` ${e.done}/${e.total}` : '';
              const eta = e.etaSeconds !== undefined ? ` — ETA ${formatSeconds(e.etaSeconds)}` : '';
              const message = `${stage}${unit}${e.message ? ` · ${e.message}` : ''}${eta}`;
              // Notification progress takes increments; report the overall stage fraction.
              const fraction = overallFraction(e);
              const increment = Math.max(0, (fraction - lastFraction) * 100);
              lastFraction = Math.max(lastFraction, fraction);
              progress.report({ message, increment });
              this.status.text = `$(sync~spin) OBR: ${stage}${unit}${eta}`;
            },
            onLayer: (l) => job.layer(l),
          }, readJobSettings(model));
          job.running = running;
          const sub = token.onCancellationRequested(() => {
            this.log.info('cancel requested');
            this.status.text = '$(sync~spin) OBR: cancelling…';
            running.cancel();
          });
          try {
            return await running.done;
          } finally {
            sub.dispose();
          }
        },
      );
      const reportPath = reportRelative(path.join(path.dirname(model.fsPath), 'x'), report.outputs.report) ?? report.outputs.report;
      job.finish('done', report, reportPath);
      const ppl = report.perplexity.compressed
        ? ` — perplexity ${report.perplexity.dense ? `${report.perplexity.dense.perplexity.toFixed(2)} → ` : ''}${report.perplexity.compressed.perplexity.toFixed(2)}`
        : '';
      const seconds = ((Date.now() - job.started) / 1000).toFixed(0);
      this.log.info(`compression finished in ${seconds} s: ${reportPath}`);
      void vscode.window
        .showInformationMessage(`OBR: compressed ${name} with ${options.recipe} in ${seconds} s${ppl}.`, 'Open Inspector', 'Reveal Outputs')
        .then(async (action) => {
          if (action === 'Open Inspector') this.inspectors.openJob(job, false);
          if (action === 'Reveal Outputs') {
            const target = reportRelative(reportPath, report.outputs.simulated) ?? reportPath;
            if (existsSync(target)) await vscode.commands.executeCommand('revealInExplorer', vscode.Uri.file(target));
          }
        });
    } catch (e) {
      const cancelled = e instanceof WorkerRequestError && e.code === 'AbortError';
      job.finish(cancelled ? 'cancelled' : 'failed', undefined, undefined, (e as Error).message);
      if (cancelled) {
        this.log.info(`compression of ${name} cancelled`);
        void vscode.window.showInformationMessage(`OBR: compression of ${name} was cancelled; no outputs were written.`);
      } else {
        this.showError(e as Error);
      }
    } finally {
      this.current = undefined;
      this.status.hide();
      void vscode.commands.executeCommand('setContext', 'obr.jobRunning', false);
      job.dispose();
    }
  }

  private showError(e: Error): void {
    const code = e instanceof WorkerRequestError ? e.code : e.name;
    this.log.error(`${code}: ${e.message}${e instanceof WorkerRequestError && e.workerStack ? `\n${e.workerStack}` : ''}`);
    const prefix = e instanceof WorkerCrashError ? 'the worker crashed' : code === 'Error' ? 'error' : code;
    void vscode.window.showErrorMessage(`OBR Studio (${prefix}): ${e.message}`, 'Show Log').then((a) => {
      if (a) this.log.show();
    });
  }

  dispose(): void {
    this.current?.running?.cancel();
    this.status.dispose();
  }
}

/**
 * The overall fraction for the notification's bar: the pipeline's own when the event carries it
 * (calibration, compression and baselines interleave), else stages in order, units within a stage.
 */
function overallFraction(e: ProgressEvent): number {
  if (e.fraction !== undefined && Number.isFinite(e.fraction)) return Math.min(1, Math.max(0, e.fraction));
  const order: Array<[ProgressEvent['stage'], number]> = [
    ['probe', 0.01],
    ['load', 0.04],
    ['rotate', 0.05],
    ['calibrate', 0.3],
    ['compress', 0.4],
    ['baseline', 0],
    ['write', 0.05],
    ['evaluate', 0.15],
  ];
  let before = 0;
  for (const [stage, weight] of order) {
    if (stage === e.stage) return before + weight * (e.total > 0 ? Math.min(1, e.done / e.total) : 0);
    before += weight;
  }
  return before;
}
