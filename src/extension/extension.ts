// Extension host entry. Thin glue only: commands, menus, progress and panels. The pipeline runs
// in a worker child process (src/worker), never on this thread.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { registerBenchmarkCommand } from './benchmarks';
import { CompressCommand } from './compress';
import { InspectorManager, INSPECTOR_VIEW_TYPE, REPORT_EDITOR_VIEW_TYPE, ReportEditorProvider } from './inspector';
import { ModelsView, type ModelNode } from './modelsView';
import { WorkerClient } from './workerClient';

/** Commands get a Uri from the explorer/editor and a ModelNode from the Models view. */
function uriOf(arg: unknown): vscode.Uri | undefined {
  if (arg instanceof vscode.Uri) return arg;
  if (arg && typeof arg === 'object' && 'uri' in arg && (arg as ModelNode).uri instanceof vscode.Uri) return (arg as ModelNode).uri;
  return undefined;
}

async function pickFile(title: string, glob: string, extensions: string[]): Promise<vscode.Uri | undefined> {
  const files = await vscode.workspace.findFiles(glob, '**/{node_modules,.git}/**', 500);
  type Item = vscode.QuickPickItem & { uri?: vscode.Uri };
  const items: Item[] = files.map((f) => ({ label: path.basename(f.fsPath), description: vscode.workspace.asRelativePath(path.dirname(f.fsPath)), uri: f }));
  items.push({ label: '$(folder-opened) Browse…' });
  const pick = items.length === 1 ? items[0] : await vscode.window.showQuickPick(items, { title });
  if (!pick) return undefined;
  if (pick.uri) return pick.uri;
  const chosen = await vscode.window.showOpenDialog({ title, canSelectMany: false, filters: { [title]: extensions } });
  return chosen?.[0];
}

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('OBR Studio', { log: true });
  const client = new WorkerClient(context.asAbsolutePath('dist/worker.js'), log);
  const worker = (): WorkerClient => client;
  const inspectors = new InspectorManager({ extensionUri: context.extensionUri, worker, log });
  const compress = new CompressCommand(worker, inspectors, log);
  const models = new ModelsView();
  context.subscriptions.push(log, { dispose: () => client.dispose() }, inspectors, compress, models);

  context.subscriptions.push(
    vscode.window.registerWebviewPanelSerializer(INSPECTOR_VIEW_TYPE, inspectors),
    vscode.window.registerCustomEditorProvider(REPORT_EDITOR_VIEW_TYPE, new ReportEditorProvider(inspectors), {
      webviewOptions: { retainContextWhenHidden: false },
      supportsMultipleEditorsPerDocument: true,
    }),
    vscode.window.createTreeView('obr.models', { treeDataProvider: models, showCollapseAll: true }),
  );

  const run = (f: (...args: unknown[]) => Promise<unknown> | unknown) => async (...args: unknown[]) => {
    try {
      await f(...args);
    } catch (e) {
      const err = e as Error;
      log.error(`${err.name}: ${err.message}\n${err.stack ?? ''}`);
      const action = await vscode.window.showErrorMessage(`OBR Studio: ${err.message}`, 'Show Log');
      if (action) log.show();
    }
  };

  // Benchmarks run in the worker (the same runBenchmarks as `obr bench`); results open in the inspector.
  registerBenchmarkCommand(context, {
    startBench: (spec, events) => client.bench(spec, events),
    log,
    showResults: (data) => {
      if (data.latest) inspectors.openBenchmarks(data.latest.outputs.json);
    },
    pickModel: async (arg) => uriOf(arg) ?? (await pickFile('ONNX models', '**/*.onnx', ['onnx'])),
  });

  context.subscriptions.push(
    vscode.commands.registerCommand('obr.showLog', () => log.show()),
    vscode.commands.registerCommand('obr.showJob', () => compress.showJob()),
    vscode.commands.registerCommand('obr.refreshModels', () => models.refresh()),
    vscode.commands.registerCommand('obr.compressModel', run((arg) => compress.run(uriOf(arg)))),
    vscode.commands.registerCommand(
      'obr.openInspector',
      run(async (arg) => {
        let uri = uriOf(arg);
        const active = vscode.window.activeTextEditor?.document.uri;
        if (!uri && active?.fsPath.endsWith('.report.json')) uri = active;
        uri ??= await pickFile('OBR reports', '**/*.report.json', ['json']);
        if (!uri) return;
        if (uri.fsPath.endsWith('.onnx')) inspectors.openModel(uri.fsPath);
        else inspectors.openReport(uri.fsPath);
      }),
    ),
    vscode.commands.registerCommand(
      'obr.inspectModel',
      run(async (arg) => {
        const uri = uriOf(arg) ?? (await pickFile('ONNX models', '**/*.onnx', ['onnx']));
        if (uri) inspectors.openModel(uri.fsPath);
      }),
    ),
    vscode.commands.registerCommand(
      'obr.revealModel',
      run(async (arg) => {
        const uri = uriOf(arg);
        if (uri) await vscode.commands.executeCommand('revealInExplorer', uri);
      }),
    ),
  );
}

export function deactivate(): void {}
