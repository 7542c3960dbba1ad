// A misspelled flag, as a user types it: the command's usage and the nearest flag, exit 2, no stack.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';

const ROOT = path.join(__dirname, '..', '..', '..');

function obr(...args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), ...args], { cwd: ROOT });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status) => resolve({ status, stderr }));
  });
}

test('unknown or misspelled flags print the usage and the nearest flag, exit 2', { timeout: 120_000 }, async () => {
  const cases: Array<[string[], RegExp]> = [
    [['compress', 'model.onnx', '--sparsty', '0.5'], /obr compress: unknown option --sparsty — did you mean --sparsity\?\n\nUsage: obr compress MODEL\.onnx/],
    [['eval', 'model.onnx', '--txt', 'a.txt'], /unknown option --txt — did you mean --text\?[\s\S]*Usage: obr eval/],
    [['inspect', 'model.onnx', '--chek-weights'], /did you mean --check-weights\?[\s\S]*Usage: obr inspect/],
    [['layer', '--wieght', 'w.npy'], /did you mean --weight\?[\s\S]*Usage: obr layer/],
    [['compress', 'model.onnx', '--samples'], /--samples needs a value/],
  ];
  const results = await Promise.all(cases.map(([args]) => obr(...args)));
  cases.forEach(([args, message], i) => {
    const r = results[i]!;
    assert.equal(r.status, 2, `${args.join(' ')} → ${r.status}\n${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /TypeError|ERR_PARSE_ARGS|\n\s+at /);
  });
});
