// Provider probing is quiet: no native onnxruntime error lines or Vulkan warnings on stderr, one
// short reason per skipped provider, onnxruntime's own text kept as `detail` for the log.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { describeProviders, shortReason, skipReason } from '../../../src/runtime/providers';

const ROOT = path.join(__dirname, '..', '..', '..');

test('obr providers prints JSON and nothing native on stderr', { timeout: 120_000 }, () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), 'providers'], { encoding: 'utf8', cwd: ROOT });
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /\[E:onnxruntime|Vulkan|Failed to load library/, r.stderr);
  const probe = JSON.parse(r.stdout);
  assert.deepEqual(probe.output, [4, 5]);
  for (const t of probe.tried) {
    if (t.name === probe.used) continue;
    assert.ok(t.error && t.error.length < 80, `${t.name}: a short reason (${t.error})`);
    assert.ok(t.detail, `${t.name}: the raw text is kept for the log`);
  }
});

test('skip reasons and the one-line summary', () => {
  assert.equal(skipReason('cpu'), undefined);
  assert.equal(skipReason('cuda', 'darwin'), undefined, 'only certain checks skip a provider');
  assert.equal(shortReason('OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library'), 'its libraries failed to load');
  assert.equal(shortReason('… Failed to get a WebGPU adapter: No supported adapters'), 'no GPU adapter');
  assert.equal(
    describeProviders({ used: 'cpu', tried: [{ name: 'cuda', error: 'its libraries failed to load', detail: 'raw' }, { name: 'cpu' }] }),
    'execution provider: cpu (skipped cuda: its libraries failed to load)',
  );
  assert.equal(describeProviders({ used: 'cuda', tried: [{ name: 'cuda' }] }), 'execution provider: cuda');
});
