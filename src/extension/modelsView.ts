// The Models view: workspace .onnx models, with their compressed outputs and reports as children.
// Outputs are recognised by name: NAME.<recipe>-….onnx and NAME.<recipe>-….report.json (see
// docs/architecture.md, "Outputs beside the source model").
import * as path from 'node:path';
import * as vscode from 'vscode';
import { groupModels } from './modelFiles';

export type ModelNode =
  | { kind: 'model'; uri: vscode.Uri; outputs: ModelNode[] }
  | { kind: 'output'; uri: vscode.Uri }
  | { kind: 'report'; uri: vscode.Uri };

export class ModelsView implements vscode.TreeDataProvider<ModelNode>, vscode.Disposable {
  private readonly emitter = new vscode.EventEmitter<ModelNode | undefined>();
  readonly onDidChangeTreeData = this.emitter.event;
  private readonly watchers: vscode.Disposable[] = [];
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;

  constructor() {
    for (const glob of ['**/*.onnx', '**/*.report.json']) {
      const w = vscode.workspace.createFileSystemWatcher(glob);
      this.watchers.push(w, w.onDidCreate(() => this.refresh()), w.onDidDelete(() => this.refresh()));
    }
    this.watchers.push(vscode.workspace.onDidChangeWorkspaceFolders(() => this.refresh()));
  }

  refresh(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.emitter.fire(undefined), 300);
  }

  getTreeItem(node: ModelNode): vscode.TreeItem {
    const name = path.basename(node.uri.fsPath);
    switch (node.kind) {
      case 'model': {
        const isReport = node.uri.fsPath.endsWith('.report.json');
        const item = new vscode.TreeItem(name, node.outputs.length ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None);
        item.resourceUri = node.uri;
        item.contextValue = isReport ? 'obr.report' : 'obr.model';
        item.iconPath = new vscode.ThemeIcon(isReport ? 'graph' : 'circuit-board');
        item.description = vscode.workspace.asRelativePath(path.dirname(node.uri.fsPath));
        item.tooltip = node.uri.fsPath;
        item.command = isReport
          ? { command: 'obr.openInspector', title: 'Open Inspector', arguments: [node.uri] }
          : { command: 'obr.inspectModel', title: 'Inspect Model', arguments: [node.uri] };
        return item;
      }
      case 'output': {
        const item = new vscode.TreeItem(name, vscode.TreeItemCollapsibleState.None);
        item.resourceUri = node.uri;
        item.contextValue = 'obr.output';
        item.iconPath = new vscode.ThemeIcon(name.includes('.packed.') ? 'package' : 'file-binary');
        item.tooltip = node.uri.fsPath;
        item.command = { command: 'obr.inspectModel', title: 'Inspect Model', arguments: [node.uri] };
        return item;
      }
      case 'report': {
        const item = new vscode.TreeItem(name, vscode.TreeItemCollapsibleState.None);
        item.resourceUri = node.uri;
        item.contextValue = 'obr.report';
        item.iconPath = new vscode.ThemeIcon('graph');
        item.tooltip = node.uri.fsPath;
        item.command = { command: 'obr.openInspector', title: 'Open Inspector', arguments: [node.uri] };
        return item;
      }
      default: {
        const never: never = node;
        return never;
      }
    }
  }

  async getChildren(node?: ModelNode): Promise<ModelNode[]> {
    if (node) return node.kind === 'model' ? node.outputs : [];
    if (!vscode.workspace.workspaceFolders?.length) return [];
    const [models, reports] = await Promise.all([
      vscode.workspace.findFiles('**/*.onnx', '**/{node_modules,.git,.cache}/**', 2000),
      vscode.workspace.findFiles('**/*.report.json', '**/{node_modules,.git,.cache}/**', 2000),
    ]);
    return groupModels([...models, ...reports].map((u) => u.fsPath)).map((g) => ({
      kind: 'model',
      uri: vscode.Uri.file(g.model),
      outputs: [
        ...g.reports.map((r): ModelNode => ({ kind: 'report', uri: vscode.Uri.file(r) })),
        ...g.outputs.map((o): ModelNode => ({ kind: 'output', uri: vscode.Uri.file(o) })),
      ],
    }));
  }

  dispose(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    for (const w of this.watchers) w.dispose();
    this.emitter.dispose();
  }
}
