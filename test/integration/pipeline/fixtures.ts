// Shared set-up of the pipeline integration tests: the tiny bundled model, short calibration and
// evaluation texts (so tokenizing takes milliseconds), and quick job options (few short windows).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEFAULT_OPTIONS, type CompressOptions } from '../../../src/protocol/recipes';

export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const TINY = path.join(ROOT, 'test', 'fixtures', 'models', 'tiny', 'model.onnx');

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI from source (`obr ARGS…`) in the project root, as a user would; never rejects. */
export function runObr(...args: string[]): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), ...args], { cwd: ROOT });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

export function tempDir(prefix = 'obr-pipe-'): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

/** The first `bytes` of a bundled text, cut at a document boundary when possible. */
export function shortText(dir: string, name: string, bytes: number): string {
  const full = readFileSync(path.join(ROOT, 'media', 'text', name), 'utf8');
  let text = full.slice(0, bytes);
  const cut = text.lastIndexOf('\n\n');
  if (cut > bytes / 2) text = text.slice(0, cut);
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

export function quickOptions(dir: string, over: Partial<CompressOptions> = {}): CompressOptions {
  return {
    ...DEFAULT_OPTIONS,
    calibText: shortText(dir, 'sotu-calib.txt', 40_000),
    samples: 4,
    seqlen: 64,
    executionProviders: ['cpu'],
    outDir: path.join(dir, 'out'),
    ...over,
  };
}

/** Files of a folder (recursive, relative paths) with sizes and mtimes, to compare snapshots. */
export function snapshot(dir: string): string[] {
  const { readdirSync, statSync } = require('node:fs') as typeof import('node:fs');
  const out: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d).sort()) {
      const p = path.join(d, n);
      const s = statSync(p);
      if (s.isDirectory()) walk(p);
      else out.push(`${path.relative(dir, p)} ${s.size} ${s.mtimeMs}`);
    }
  };
  walk(dir);
  return out;
}
