// Inspector panels: one webview per report, model or running job. The panel answers the webview's
// `ready` with a full snapshot and re-sends snapshots (never deltas) as a job fills in layers.
// Also the custom editor for *.report.json and the serializer that restores panels after reload.
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { BenchmarksViewData, BenchResult } from '../protocol/bench';
import type { CompressionReport } from '../protocol/report';
import { readBenchHistory } from './benchmarks';
import {
  type HostToWebview,
  type InspectorSnapshot,
  type InspectorViewState,
  type LiveJob,
  type ModelInspection,
  summarizeLayer,
  summarizeReport,
  type WebviewReplyValue,
  type WebviewRequest,
  type WebviewToHost,
} from '../protocol/webview';
import { inspectorHtml, webviewOptions } from './webviewHtml';
import type { WorkerClient } from './workerClient';

export const INSPECTOR_VIEW_TYPE = 'obr.inspector';
export const REPORT_EDITOR_VIEW_TYPE = 'obr.reportInspector';

/** A compression job the inspector can follow; owned by the job runner. */
export interface JobHandle {
  readonly job: LiveJob;
  /** Set when the job finished and its report exists. */
  readonly report: CompressionReport | undefined;
  readonly reportPath: string | undefined;
  readonly onDidChange: vscode.Event<void>;
}

export type InspectorSource =
  | { kind: 'report'; path: string }
  | { kind: 'model'; path: string }
  /** A benchmark result JSON (its folder's history.jsonl is shown beside it). */
  | { kind: 'benchmarks'; path: string }
  | { kind: 'job'; handle: JobHandle }
  | { kind: 'empty' };

export interface InspectorDeps {
  extensionUri: vscode.Uri;
  worker: () => WorkerClient;
  log: vscode.LogOutputChannel;
}

/** Reads a report and checks that it looks like one (a user may open any *.report.json). */
export async function readReport(file: string): Promise<CompressionReport> {
  const text = await readFile(file, 'utf8');
  let report: CompressionReport;
  try {
    report = JSON.parse(text) as CompressionReport;
  } catch (e) {
    throw new Error(`${path.basename(file)} is not valid JSON (${(e as Error).message})`);
  }
  if (!report || !Array.isArray(report.layers) || typeof report.recipe !== 'string') {
    throw new Error(`${path.basename(file)} is not an OBR Studio report (no "layers" or "recipe")`);
  }
  return report;
}

/** Resolves a path written in a report (absolute, or relative to the report's folder). */
export function reportRelative(reportPath: string | undefined, p: string | undefined): string | undefined {
  if (!p) return undefined;
  if (path.isAbsolute(p)) return p;
  return reportPath ? path.join(path.dirname(reportPath), p) : undefined;
}

function sparsityText(report: CompressionReport | null | undefined): string | undefined {
  const s = report?.options?.['sparsity'] as unknown;
  if (typeof s === 'string' || typeof s === 'number') return String(s);
  if (s && typeof s === 'object') {
    const o = s as { kind?: string; n?: number; m?: number; ratio?: number };
    if (o.kind === 'nm') return `${o.n}:${o.m}`;
    if (o.kind === 'unstructured') return String(o.ratio);
  }
  return undefined;
}

export class InspectorPanel implements vscode.Disposable {
  private source: InspectorSource;
  private report: CompressionReport | null = null;
  private reportPath: string | undefined;
  private model: ModelInspection | undefined;
  private bench: BenchmarksViewData | undefined;
  private error: string | undefined;
  private ready = false;
  private readonly disposables: vscode.Disposable[] = [];
  private jobListener: vscode.Disposable | undefined;
  private pendingSnapshot: ReturnType<typeof setTimeout> | undefined;
  private readonly onDisposeEmitter = new vscode.EventEmitter<void>();
  readonly onDidDispose = this.onDisposeEmitter.event;

  constructor(
    readonly panel: vscode.WebviewPanel,
    private readonly deps: InspectorDeps,
    source: InspectorSource,
  ) {
    this.source = { kind: 'empty' };
    panel.webview.options = webviewOptions(deps.extensionUri);
    panel.webview.html = inspectorHtml(panel.webview, deps.extensionUri, panel.title);
    panel.iconPath = vscode.Uri.joinPath(deps.extensionUri, 'media', 'obr.svg');
    this.disposables.push(
      panel.webview.onDidReceiveMessage((m: WebviewToHost) => void this.onMessage(m)),
      panel.onDidDispose(() => this.dispose()),
    );
    void this.setSource(source);
  }

  /** Which report, model or job this panel shows (for reuse by the manager). */
  get key(): string | undefined {
    switch (this.source.kind) {
      case 'report':
        return `report:${this.source.path}`;
      case 'model':
        return `model:${this.source.path}`;
      case 'benchmarks':
        return `benchmarks:${this.source.path}`;
      case 'job':
        return this.source.handle.reportPath ? `report:${this.source.handle.reportPath}` : `job:${this.source.handle.job.modelPath}`;
      case 'empty':
        return undefined;
      default: {
        const never: never = this.source;
        return never;
      }
    }
  }

  async setSource(source: InspectorSource): Promise<void> {
    this.source = source;
    this.jobListener?.dispose();
    this.jobListener = undefined;
    this.error = undefined;
    this.model = undefined;
    this.bench = undefined;
    this.report = null;
    this.reportPath = undefined;
    switch (source.kind) {
      case 'report':
        this.reportPath = source.path;
        this.panel.title = `Inspector: ${path.basename(source.path).replace(/\.report\.json$/, '')}`;
        try {
          this.report = await readReport(source.path);
        } catch (e) {
          this.error = (e as Error).message;
        }
        break;
      case 'model':
        this.panel.title = `Inspect: ${path.basename(source.path)}`;
        this.postSnapshot();
        try {
          this.model = await this.deps.worker().inspectModel(source.path);
        } catch (e) {
          this.error = `Could not inspect ${path.basename(source.path)}: ${(e as Error).message}`;
          this.deps.log.error(this.error);
        }
        break;
      case 'benchmarks':
        this.panel.title = 'OBR Benchmarks';
        try {
          const latest = JSON.parse(await readFile(source.path, 'utf8')) as BenchResult;
          this.bench = { latest, history: readBenchHistory(path.dirname(source.path)) };
        } catch (e) {
          this.error = `Could not read ${source.path}: ${(e as Error).message}`;
        }
        break;
      case 'job': {
        const h = source.handle;
        this.panel.title = `Inspector: ${path.basename(h.job.modelPath)} (${h.job.recipe})`;
        this.report = h.report ?? null;
        this.reportPath = h.reportPath;
        this.jobListener = h.onDidChange(() => {
          this.report = h.report ?? null;
          this.reportPath = h.reportPath;
          this.scheduleSnapshot();
        });
        break;
      }
      case 'empty':
        break;
      default: {
        const never: never = source;
        void never;
      }
    }
    this.postSnapshot();
  }

  reveal(): void {
    this.panel.reveal(undefined, true);
  }

  /**
   * What the webview gets: summaries only. The report's per-row arrays (scales, zero points) stay
   * here and travel in the `layerDetail` reply of the selected layer.
   */
  snapshot(): InspectorSnapshot {
    const s = this.source;
    const report = this.report ? summarizeReport(this.report) : null;
    if (this.error) return { kind: 'empty', title: this.panel.title, message: this.error };
    switch (s.kind) {
      case 'empty':
        return { kind: 'empty', title: 'OBR Inspector', message: 'Open a *.report.json or compress a model to inspect it.' };
      case 'model':
        return this.model
          ? { kind: 'model', title: this.panel.title, model: this.model }
          : { kind: 'empty', title: this.panel.title, message: `Reading the linear layers of ${path.basename(s.path)}…` };
      case 'benchmarks':
        return this.bench
          ? { kind: 'benchmarks', title: this.panel.title, data: this.bench }
          : { kind: 'empty', title: this.panel.title, message: 'Reading the benchmark results…' };
      case 'report':
        return { kind: 'report', title: this.panel.title, reportPath: this.reportPath, report, canComputeSensitivity: !!this.reportPath };
      case 'job':
        return {
          kind: 'report',
          title: this.panel.title,
          reportPath: this.reportPath,
          report,
          job: { ...s.handle.job, layers: s.handle.job.layers.map(summarizeLayer) },
          canComputeSensitivity: !!this.reportPath,
        };
      default: {
        const never: never = s;
        return never;
      }
    }
  }

  private scheduleSnapshot(): void {
    if (this.pendingSnapshot) return;
    this.pendingSnapshot = setTimeout(() => {
      this.pendingSnapshot = undefined;
      this.postSnapshot();
    }, 200);
  }

  private postSnapshot(): void {
    if (!this.ready) return;
    this.post({ type: 'snapshot', snapshot: this.snapshot() });
  }

  private post(message: HostToWebview): void {
    void this.panel.webview.postMessage(message);
  }

  private async onMessage(message: WebviewToHost): Promise<void> {
    switch (message.type) {
      case 'ready':
        this.ready = true;
        // A reopened report is re-read so the panel shows what is on disk now.
        if (this.source.kind === 'report' || this.source.kind === 'benchmarks') await this.setSource(this.source);
        else this.postSnapshot();
        return;
      case 'layerDetail':
      case 'computeSensitivity':
        return this.answer(message);
      case 'reveal': {
        const uri = vscode.Uri.file(message.path);
        await vscode.commands.executeCommand('revealInExplorer', uri);
        return;
      }
      case 'compressAgain': {
        const model = this.report?.source.path ?? (this.source.kind === 'job' ? this.source.handle.job.modelPath : undefined);
        if (model) await vscode.commands.executeCommand('obr.compressModel', vscode.Uri.file(model));
        return;
      }
      default: {
        const never: never = message;
        this.deps.log.warn(`unknown inspector message ${JSON.stringify(never)}`);
      }
    }
  }

  private async answer(request: WebviewRequest): Promise<void> {
    try {
      const ok = await this.compute(request);
      this.post({ type: 'reply', id: request.id, ok });
    } catch (e) {
      const err = e as Error;
      this.post({ type: 'reply', id: request.id, err: { code: err.name, message: err.message } });
    }
  }

  private async compute(request: WebviewRequest): Promise<WebviewReplyValue> {
    switch (request.type) {
      case 'layerDetail': {
        if (this.source.kind === 'model') {
          const detail = await this.deps.worker().layerDetail({
            modelPath: this.source.path,
            layer: request.layer,
            row: request.row,
            gridRows: request.gridRows,
            gridCols: request.gridCols,
            wbits: 4,
          });
          return { kind: 'layerDetail', detail };
        }
        const report = this.report;
        const simulated = reportRelative(this.reportPath, report?.outputs.simulated);
        if (!report || !simulated) {
          throw Object.assign(new Error('The mask and grid appear when the compressed model has been written.'), { name: 'NotReady' });
        }
        const layer = report.layers.find((l) => l.name === request.layer);
        const detail = await this.deps.worker().layerDetail({
          modelPath: simulated,
          layer: request.layer,
          row: request.row,
          gridRows: request.gridRows,
          gridCols: request.gridCols,
          wbits: layer?.wbits ?? 4,
          rowScales: layer?.rowScales,
          rowZeros: layer?.rowZeros,
          groupSize: layer?.groupSize ?? 0,
          asymmetric: layer?.asymmetric ?? false,
          packedPath: reportRelative(this.reportPath, report.outputs.packed),
          sparsity: sparsityText(report),
        });
        return { kind: 'layerDetail', detail };
      }
      case 'computeSensitivity': {
        if (!this.reportPath || !this.report) throw new Error('Sensitivity needs a finished report.');
        const reportPath = this.reportPath;
        const sensitivity = await vscode.window.withProgress(
          { location: vscode.ProgressLocation.Notification, title: 'OBR: layer sensitivity', cancellable: true },
          async (progress, token) => {
            const job = this.deps.worker().sensitivity(reportPath, {
              onProgress: (e) => progress.report({ message: `${e.done}/${e.total} ${e.message ?? ''}` }),
            });
            token.onCancellationRequested(() => job.cancel());
            return job.done;
          },
        );
        if (this.report) this.report = { ...this.report, sensitivity };
        this.postSnapshot();
        return { kind: 'computeSensitivity', sensitivity };
      }
      default: {
        const never: never = request;
        return never;
      }
    }
  }

  dispose(): void {
    this.jobListener?.dispose();
    if (this.pendingSnapshot) clearTimeout(this.pendingSnapshot);
    for (const d of this.disposables.splice(0)) d.dispose();
    this.onDisposeEmitter.fire();
    this.onDisposeEmitter.dispose();
  }
}

/** Creates, finds and restores inspector panels. */
export class InspectorManager implements vscode.Disposable, vscode.WebviewPanelSerializer<InspectorViewState> {
  private readonly panels = new Set<InspectorPanel>();

  constructor(private readonly deps: InspectorDeps) {}

  openReport(file: string): InspectorPanel {
    return this.open({ kind: 'report', path: file }, `report:${file}`);
  }

  openModel(file: string): InspectorPanel {
    return this.open({ kind: 'model', path: file }, `model:${file}`);
  }

  openBenchmarks(resultJson: string): InspectorPanel {
    return this.open({ kind: 'benchmarks', path: resultJson }, `benchmarks:${resultJson}`);
  }

  openJob(handle: JobHandle, preserveFocus = true): InspectorPanel {
    const key = handle.reportPath ? `report:${handle.reportPath}` : `job:${handle.job.modelPath}`;
    const existing = this.find(key);
    if (existing) {
      void existing.setSource({ kind: 'job', handle });
      existing.panel.reveal(undefined, preserveFocus);
      return existing;
    }
    return this.create({ kind: 'job', handle }, { viewColumn: vscode.ViewColumn.Beside, preserveFocus });
  }

  /** The panel following a job, if one is open (to switch it to the final report). */
  find(key: string): InspectorPanel | undefined {
    for (const p of this.panels) if (p.key === key) return p;
    return undefined;
  }

  private open(source: InspectorSource, key: string): InspectorPanel {
    const existing = this.find(key);
    if (existing) {
      existing.panel.reveal();
      return existing;
    }
    return this.create(source, { viewColumn: vscode.ViewColumn.Active, preserveFocus: false });
  }

  private create(source: InspectorSource, show: { viewColumn: vscode.ViewColumn; preserveFocus: boolean }): InspectorPanel {
    const panel = vscode.window.createWebviewPanel(INSPECTOR_VIEW_TYPE, 'OBR Inspector', show, {
      ...webviewOptions(this.deps.extensionUri),
      retainContextWhenHidden: false,
    });
    return this.attach(panel, source);
  }

  attach(panel: vscode.WebviewPanel, source: InspectorSource): InspectorPanel {
    const inspector = new InspectorPanel(panel, this.deps, source);
    this.panels.add(inspector);
    inspector.onDidDispose(() => this.panels.delete(inspector));
    return inspector;
  }

  async deserializeWebviewPanel(panel: vscode.WebviewPanel, state: InspectorViewState | undefined): Promise<void> {
    const s = state?.source;
    this.attach(panel, s ? { kind: s.kind, path: s.path } : { kind: 'empty' });
  }

  dispose(): void {
    for (const p of [...this.panels]) p.panel.dispose();
  }
}

/** `*.report.json` opens in the inspector (read-only custom editor; "Reopen With…" gives the JSON). */
export class ReportEditorProvider implements vscode.CustomReadonlyEditorProvider {
  constructor(private readonly manager: InspectorManager) {}

  openCustomDocument(uri: vscode.Uri): vscode.CustomDocument {
    return { uri, dispose: () => undefined };
  }

  resolveCustomEditor(document: vscode.CustomDocument, panel: vscode.WebviewPanel): void {
    this.manager.attach(panel, { kind: 'report', path: document.uri.fsPath });
  }
}
