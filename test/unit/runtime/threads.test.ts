// Intra-op threads of the pipeline's sessions (src/runtime/threads.ts): physical cores counted from
// a Linux CPU topology tree — hardware threads of one core counted once, offline CPUs skipped.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { physicalCores } from '../../../src/runtime/threads';

/** A sysfs-like tree: cpuN/topology/{physical_package_id,core_id} (+ cpuN/online when given). */
function topology(cpus: Array<{ pkg: number; core: number; online?: 0 | 1 }>): string {
  const root = mkdtempSync(path.join(tmpdir(), 'obr-cpus-'));
  cpus.forEach((c, i) => {
    const dir = path.join(root, `cpu${i}`, 'topology');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'physical_package_id'), `${c.pkg}\n`);
    writeFileSync(path.join(dir, 'core_id'), `${c.core}\n`);
    if (c.online !== undefined) writeFileSync(path.join(root, `cpu${i}`, 'online'), `${c.online}\n`);
  });
  mkdirSync(path.join(root, 'cpufreq')); // other entries of the real folder are ignored
  return root;
}

test('hardware threads of one core count once; offline CPUs are skipped; capped by the processors available', (t) => {
  const cap = availableParallelism();
  const smt = topology([{ pkg: 0, core: 0 }, { pkg: 0, core: 1 }, { pkg: 0, core: 0 }, { pkg: 0, core: 1 }]);
  const twoSockets = topology([{ pkg: 0, core: 0 }, { pkg: 1, core: 0 }, { pkg: 0, core: 1, online: 0 }]);
  t.after(() => [smt, twoSockets].forEach((d) => rmSync(d, { recursive: true, force: true })));
  assert.equal(physicalCores(smt), Math.min(2, cap));
  assert.equal(physicalCores(twoSockets), Math.min(2, cap));
});

test('a tree without topology, or no tree, gives undefined (onnxruntime keeps its default)', (t) => {
  const root = mkdtempSync(path.join(tmpdir(), 'obr-cpus-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(path.join(root, 'cpu0'));
  assert.equal(physicalCores(root), undefined);
  assert.equal(physicalCores(path.join(root, 'missing')), undefined);
});

test('this machine: between 1 and the processors available (Linux)', { skip: process.platform !== 'linux' && 'Linux sysfs only' }, () => {
  const n = physicalCores();
  assert.ok(n !== undefined && n >= 1 && n <= availableParallelism(), `physical cores ${n}`);
});
