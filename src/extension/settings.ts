// Reads the `obr.*` settings into the pipeline's CompressOptions. No other module reads them.
import * as path from 'node:path';
import * as vscode from 'vscode';
import {
  DEFAULT_OPTIONS,
  DEFAULT_EXECUTION_PROVIDERS,
  EXECUTION_PROVIDERS,
  isRecipe,
  OBR_SOLVERS,
  parseSparsity,
  type CompressOptions,
  type ExecutionProviderName,
  type RecipeName,
} from '../protocol/recipes';
import type { JobSettings } from '../protocol/worker';

export function defaultRecipe(): RecipeName {
  const r = vscode.workspace.getConfiguration('obr').get<string>('recipe', DEFAULT_OPTIONS.recipe);
  return isRecipe(r) ? r : DEFAULT_OPTIONS.recipe;
}

/** Resolves a workspace-relative path against the folder holding `near`, else the first folder. */
export function resolveWorkspacePath(p: string, near?: vscode.Uri): string {
  if (path.isAbsolute(p)) return p;
  const folder = (near && vscode.workspace.getWorkspaceFolder(near)) ?? vscode.workspace.workspaceFolders?.[0];
  return folder ? path.join(folder.uri.fsPath, p) : path.resolve(p);
}

/** Compression options from the settings, for one recipe (throws OptionError on a bad sparsity). */
export function readCompressOptions(recipe: RecipeName, modelUri: vscode.Uri): CompressOptions {
  const c = vscode.workspace.getConfiguration('obr', modelUri);
  const providers = c
    .get<string[]>('executionProviders', [...DEFAULT_EXECUTION_PROVIDERS])
    .filter((p): p is ExecutionProviderName => (EXECUTION_PROVIDERS as readonly string[]).includes(p));
  if (!providers.includes('cpu')) providers.push('cpu');
  const seqlen = c.get<number>('sequenceLength', 0);
  const calib = c.get<string>('calibrationText', '').trim();
  return {
    ...DEFAULT_OPTIONS,
    recipe,
    sparsity: parseSparsity(c.get<string>('sparsity', '0.5')),
    wbits: c.get<number>('weightBits', DEFAULT_OPTIONS.wbits),
    // A value outside GROUP_SIZES (edited settings.json) is refused by the pipeline's validation.
    groupSize: c.get<number>('groupSize', DEFAULT_OPTIONS.groupSize),
    asymmetric: c.get<boolean>('asymmetric', DEFAULT_OPTIONS.asymmetric) === true,
    abits: c.get<number>('activationBits', DEFAULT_OPTIONS.abits),
    kvbits: c.get<number>('kvCacheBits', DEFAULT_OPTIONS.kvbits),
    alpha: c.get<number>('alpha', DEFAULT_OPTIONS.alpha),
    samples: c.get<number>('calibrationSamples', DEFAULT_OPTIONS.samples),
    seqlen: seqlen > 0 ? seqlen : undefined,
    calibText: calib ? resolveWorkspacePath(calib, modelUri) : undefined,
    executionProviders: providers,
    solver: OBR_SOLVERS.find((s) => s === c.get<string>('solver', 'batched')) ?? 'batched',
  };
}

export function confirmBeforeCompress(): boolean {
  return vscode.workspace.getConfiguration('obr').get<boolean>('confirmEstimate', true);
}

export function openInspectorOnStart(): boolean {
  return vscode.workspace.getConfiguration('obr').get<boolean>('inspector.openOnStart', true);
}

/** Job settings beyond the recipe: evaluation length, baseline recipes (unknown names dropped), activation cache budget, output layout. */
export function readJobSettings(modelUri: vscode.Uri): JobSettings {
  const c = vscode.workspace.getConfiguration('obr', modelUri);
  const n = c.get<number>('evaluationWindows', 0);
  const baselines = [...new Set(c.get<unknown[]>('baselines', []).filter((b): b is RecipeName => typeof b === 'string' && isRecipe(b)))];
  const cache = c.get<number>('activationCacheMiB', 2048);
  const layout = c.get<string>('outputLayout', 'auto');
  return {
    evalWindows: n > 0 ? n : undefined,
    ...(baselines.length ? { baselines } : {}),
    ...(Number.isFinite(cache) && cache >= 0 ? { activationCacheMiB: cache } : {}),
    ...(layout === 'file' || layout === 'folder' ? { layout } : {}),
  };
}
