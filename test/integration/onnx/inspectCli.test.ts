// `obr inspect` end to end through the CLI entry (src/cli/main.ts), as a user runs it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..', '..');
const TINY = join(ROOT, 'test', 'fixtures', 'models', 'tiny', 'model.onnx');

function obr(...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), ...args], { encoding: 'utf8', cwd: ROOT });
}

test('obr inspect prints the model summary, layers and shared-input groups as JSON', { skip: !existsSync(TINY) && 'tiny fixture not built yet' }, () => {
  const p = obr('inspect', TINY);
  assert.equal(p.status, 0, p.stderr);
  const report = JSON.parse(p.stdout);
  for (const key of ['path', 'opset', 'irVersion', 'producer', 'inputs', 'outputs', 'parameters', 'bytes']) assert.ok(key in report.model, key);
  assert.equal(report.model.outputs[0].name, 'logits');
  assert.ok(report.model.parameters > 1e6);
  assert.equal(report.layers.length, 29);
  assert.deepEqual(Object.keys(report.layers[0]).slice(0, 12), ['name', 'nodeName', 'opType', 'weightName', 'orientation', 'dtype', 'inFeatures', 'outFeatures', 'inputName', 'block', 'role', 'outputName']);
  assert.deepEqual(report.groups[0].layers.length, 3);
});

test('obr inspect on a file that is not a model exits 2 with the reason and no stack trace', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'obr-cli-'));
  try {
    await writeFile(join(dir, 'notes.onnx'), 'just some text\n');
    const p = obr('inspect', join(dir, 'notes.onnx'));
    assert.equal(p.status, 2);
    assert.match(p.stderr, /is not an ONNX model/);
    assert.doesNotMatch(p.stderr, /\n\s+at /);
    assert.equal(obr('inspect').status, 2);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
