// Extension host entry. Thin glue only: commands, menus, progress and panels. The pipeline runs
// in a worker child process (src/worker), never on this thread.
import * as vscode from 'vscode';
import { WorkerClient } from './workerClient';

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('OBR Studio', { log: true });
  const worker = new WorkerClient(context.asAbsolutePath('dist/worker.js'), log);
  context.subscriptions.push(log, worker);

  context.subscriptions.push(
    vscode.commands.registerCommand('obr.showLog', () => log.show()),
    vscode.commands.registerCommand('obr.compressModel', async (uri?: vscode.Uri) => {
      const probe = await worker.probeProviders(
        vscode.workspace.getConfiguration('obr').get<string[]>('executionProviders', ['cpu']),
      );
      log.info(`execution provider: ${probe.used}; tried ${probe.tried.map((t) => t.name + (t.error ? ` (${t.error})` : '')).join(', ')}`);
      void vscode.window.showWarningMessage(`OBR Studio: compression of ${uri?.fsPath ?? 'a model'} is not available in this build yet.`);
    }),
    vscode.commands.registerCommand('obr.openInspector', () => notYet('The inspector')),
    vscode.commands.registerCommand('obr.runBenchmarks', () => notYet('Benchmarks')),
    vscode.commands.registerCommand('obr.inspectModel', () => notYet('Model inspection')),
  );
}

function notYet(what: string): void {
  void vscode.window.showInformationMessage(`OBR Studio: ${what} is not available in this build yet.`);
}

export function deactivate(): void {}
