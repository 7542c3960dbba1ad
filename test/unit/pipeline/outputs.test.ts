// Output names, the progress ETA arithmetic and the resume checkpoint's round trip.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { Checkpoint } from '../../../src/pipeline/checkpoint';
import { outputPaths } from '../../../src/pipeline/outputs';
import { ProgressTracker } from '../../../src/pipeline/progress';
import { DEFAULT_OPTIONS } from '../../../src/protocol/recipes';
import type { ProgressEvent } from '../../../src/protocol/worker';

test('outputs are named NAME.<recipe>-w4a4kv4-s50.onnx / NAME.<recipe>-w4-s50.packed.onnx / .report.json beside the source', () => {
  const p = outputPaths('/models/llama.onnx', DEFAULT_OPTIONS);
  assert.equal(p.simulated, '/models/llama.obr-gptq-w4a4kv4-s50.onnx');
  assert.equal(p.packed, '/models/llama.obr-gptq-w4-s50.packed.onnx');
  assert.equal(p.report, '/models/llama.obr-gptq-w4a4kv4-s50.report.json');
  assert.equal(p.partialDir, '/models/.llama.obr-partial');
  const q = outputPaths('/models/llama.onnx', { ...DEFAULT_OPTIONS, recipe: 'sparsegpt-gptq', abits: 16, kvbits: 16, sparsity: { kind: 'nm', n: 2, m: 4 }, outDir: '/out' });
  assert.equal(q.simulated, '/out/llama.sparsegpt-gptq-w4a16kv16-2of4.onnx');
  // quantization-only recipes never prune: s0 whatever --sparsity says
  assert.equal(outputPaths('/m/x.onnx', { ...DEFAULT_OPTIONS, recipe: 'gptq' }).simulated, '/m/x.gptq-w4a4kv4-s0.onnx');
});

test('group-wise outputs carry the group tag (-g128, -g32a; per-row asymmetric -g0a); per-row symmetric names are unchanged', () => {
  const g128 = outputPaths('/models/llama.onnx', { ...DEFAULT_OPTIONS, groupSize: 128 });
  assert.equal(g128.simulated, '/models/llama.obr-gptq-w4a4kv4-s50-g128.onnx');
  assert.equal(g128.packed, '/models/llama.obr-gptq-w4-s50-g128.packed.onnx');
  assert.equal(g128.report, '/models/llama.obr-gptq-w4a4kv4-s50-g128.report.json');
  const g32a = outputPaths('/models/llama.onnx', { ...DEFAULT_OPTIONS, recipe: 'rtn', abits: 16, kvbits: 16, groupSize: 32, asymmetric: true });
  assert.equal(g32a.simulated, '/models/llama.rtn-w4a16kv16-s0-g32a.onnx');
  assert.equal(g32a.packed, '/models/llama.rtn-w4-s0-g32a.packed.onnx');
  assert.equal(outputPaths('/m/x.onnx', { ...DEFAULT_OPTIONS, asymmetric: true }).simulated, '/m/x.obr-gptq-w4a4kv4-s50-g0a.onnx');
  assert.equal(outputPaths('/m/x.onnx', { ...DEFAULT_OPTIONS, groupSize: 0, asymmetric: false }).simulated, '/m/x.obr-gptq-w4a4kv4-s50.onnx');
});

test('progress: stage shares add up, ETA appears once work is done', () => {
  const events: ProgressEvent[] = [];
  const p = new ProgressTracker((e) => events.push(e), { load: 1, compress: 3 });
  assert.equal(p.fraction('load', 1, 1), 0.25);
  assert.equal(p.fraction('compress', 1, 3), 0.5);
  p.report('compress', 0, 3);
  assert.equal(events[0]!.stage, 'compress');
  assert.equal(events[0]!.done, 0);
  assert.equal(events[0]!.fraction, 0.25, 'the overall fraction travels with the event');
  p.report('baseline', 3, 3, 'wanda-rtn: l0', 0.6);
  assert.equal(events[1]!.fraction, 0.6, 'an explicit overall fraction wins (interleaved stages)');
});

test('checkpoint: blocks round-trip bit-exactly; another job key starts over', async () => {
  const dir = path.join(mkdtempSync(path.join(tmpdir(), 'obr-cp-')), '.m.obr-partial');
  const cp = await Checkpoint.open(dir, 'key-a', true);
  assert.equal(cp.resumed, false);
  const weight = Float64Array.from([0.1, -0.2, 0, 1e-300, 3, Math.PI]);
  const layer = {
    report: { name: 'l0', block: 0, role: 'q' as const, rows: 2, cols: 3, sparsity: 1 / 6, wbits: 4, loss: { total: 1, pruning: 2, quantization: 3, recovered: 4, outputEnergy: 5 }, seconds: 0.1, codeHistogram: [1, 2] },
    weight,
    scales: Float64Array.from([0.5, 0.25]),
    codes: Int8Array.from([1, -2, 0, 0, 7, -8]),
  };
  await cp.saveBlock('0', [layer]);
  const again = await Checkpoint.open(dir, 'key-a', true);
  assert.equal(again.resumed, true);
  assert.deepEqual(again.finishedBlocks, ['0']);
  const [l] = await again.loadBlock('0');
  assert.deepEqual(Array.from(l!.weight), Array.from(weight));
  assert.deepEqual(Array.from(l!.codes), [1, -2, 0, 0, 7, -8]);
  assert.deepEqual(l!.report, layer.report);
  assert.equal(l!.baselines, undefined);

  // Baseline weights (float32) and losses ride along with the block.
  const withBaselines = await Checkpoint.open(path.join(path.dirname(dir), '.b.obr-partial'), 'key-c', true);
  const loss = { total: 9, pruning: 8, quantization: 7, recovered: 6, outputEnergy: 5 };
  await withBaselines.saveBlock('0', [{ ...layer, baselines: [
    { recipe: 'wanda-rtn', loss, weight: Float32Array.from([1, 0, -1, 0.5, 0, 2]) },
    { recipe: 'rtn', loss: { ...loss, pruning: 0 }, weight: Float32Array.from([0.25, -0.75, 1e-3, 4, 5, -6]) },
  ] }]);
  const [b] = await (await Checkpoint.open(withBaselines.dir, 'key-c', true)).loadBlock('0');
  assert.deepEqual(Array.from(b!.weight), Array.from(weight), 'the main weight is unchanged by the extra data');
  assert.deepEqual(Array.from(b!.scales), [0.5, 0.25]);
  assert.deepEqual(Array.from(b!.codes), [1, -2, 0, 0, 7, -8]);
  assert.deepEqual(b!.baselines!.map((x) => [x.recipe, x.loss.pruning, Array.from(x.weight)]), [
    ['wanda-rtn', 8, [1, 0, -1, 0.5, 0, 2]],
    ['rtn', 0, Array.from(Float32Array.from([0.25, -0.75, 1e-3, 4, 5, -6]))],
  ]);
  await withBaselines.remove();

  // Group-wise, asymmetric: scales and zero points rows×groups ride along bit-exactly.
  const grouped = await Checkpoint.open(path.join(path.dirname(dir), '.g.obr-partial'), 'key-g', true);
  const gScales = Float64Array.from([0.5, 0.25, 0.125, 1 / 3]); // 2 rows × 2 groups
  const gZeros = Float64Array.from([0, -3, 7, -8]);
  await grouped.saveBlock('0', [{ ...layer, scales: gScales, zeros: gZeros, baselines: [{ recipe: 'rtn', loss, weight: Float32Array.from([1, 2, 3, 4, 5, 6]) }] }]);
  await grouped.saveBlock('1', [layer]);
  const again2 = await Checkpoint.open(grouped.dir, 'key-g', true);
  const [gl] = await again2.loadBlock('0');
  assert.deepEqual(Array.from(gl!.scales), Array.from(gScales));
  assert.deepEqual(Array.from(gl!.zeros!), Array.from(gZeros));
  assert.deepEqual(Array.from(gl!.codes), [1, -2, 0, 0, 7, -8]);
  assert.deepEqual(Array.from(gl!.baselines![0]!.weight), [1, 2, 3, 4, 5, 6]);
  const [pl] = await again2.loadBlock('1');
  assert.equal(pl!.zeros, undefined, 'a symmetric per-row layer has no zero points');
  assert.deepEqual(Array.from(pl!.scales), [0.5, 0.25]);
  await grouped.remove();
  const other = await Checkpoint.open(dir, 'key-b', true);
  assert.equal(other.resumed, false);
  assert.deepEqual(other.finishedBlocks, []);
  await other.remove();
  assert.ok(!existsSync(dir));
});

test('checkpoint: layers saved one by one count only once their block is committed; then they read back bit-exactly', async () => {
  const dir = path.join(mkdtempSync(path.join(tmpdir(), 'obr-cp-')), '.m.obr-partial');
  const cp = await Checkpoint.open(dir, 'key-a', true);
  const report = (name: string) => ({ name, block: 3, role: 'q' as const, rows: 2, cols: 3, sparsity: 0, wbits: 4, loss: { total: 1, pruning: 0, quantization: 1, recovered: 0, outputEnergy: 5 }, seconds: 0.1, codeHistogram: [6] });
  const layers = [0, 1].map((i) => ({ report: report(`l${i}`), weight: Float64Array.from([0.1 + i, -0.2, 0, 1e-300, 3, Math.PI]), scales: Float64Array.from([0.5, 0.25 * (i + 1)]), codes: Int8Array.from([1, -2, 0, i, 7, -8]) }));
  const entries = [await cp.saveLayer('3', 0, layers[0]!), await cp.saveLayer('3', 1, layers[1]!)];
  // Written but not committed (a crash here): a resumed job does not see the block.
  const crashed = await Checkpoint.open(dir, 'key-a', true);
  assert.deepEqual(crashed.finishedBlocks, []);
  const cp2 = await Checkpoint.open(dir, 'key-a', true);
  const again = [await cp2.saveLayer('3', 0, layers[0]!), await cp2.saveLayer('3', 1, layers[1]!)];
  assert.deepEqual(again, entries);
  await cp2.commitBlock('3', again);
  const read = await (await Checkpoint.open(dir, 'key-a', true)).loadBlock('3');
  assert.equal(read.length, 2);
  read.forEach((l, i) => {
    assert.equal(l.report.name, `l${i}`);
    assert.deepEqual(Array.from(l.weight), Array.from(layers[i]!.weight));
    assert.deepEqual(Array.from(l.scales), Array.from(layers[i]!.scales));
    assert.deepEqual(Array.from(l.codes), Array.from(layers[i]!.codes));
  });
  // saveBlock writes the same files as saveLayer + commitBlock.
  const viaBlock = path.join(path.dirname(dir), '.n.obr-partial');
  await (await Checkpoint.open(viaBlock, 'key-a', true)).saveBlock('3', layers);
  for (const f of ['block-3-0.bin', 'block-3-1.bin', 'block-3.json']) assert.ok(readFileSync(path.join(viaBlock, f)).equals(readFileSync(path.join(dir, f))), f);
});
