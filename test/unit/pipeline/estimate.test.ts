// The pre-flight's time formulas (src/pipeline/preflight.ts stageSeconds, src/pipeline/probe.ts):
// per-stage seconds from probe measurements. The inputs are a real probe of the bundled small
// model (media/models/small, obr-gptq W4A4KV4, 32 × 256 calibration tokens, 128 evaluation
// windows; measured on the shared 2-core machine at load average ≈ 20, rounded to the ms), and
// every expected value is worked out by hand from them below.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { otherBlockScale, stageSeconds, writtenBytes, type EstimateInputs } from '../../../src/pipeline/preflight';
import { coreProbeRows, forwardSeconds, medianParts, oneBlockCut, probeWindows, resplitOneBatch, splitForward, WRITE_PROBE_BYTES, writeSlice } from '../../../src/pipeline/probe';
import { loadModel } from '../../../src/onnx/load';
import { findLinearLayers } from '../../../src/onnx/linear';
import { COMPRESSED_ROLES } from '../../../src/pipeline/working';

const c = (fixed: number, perBatch: number) => ({ fixed, perBatch });
const MEASURED: EstimateInputs = {
  samples: 32,
  evalWindows: 128,
  batch: 8,
  modelBlocks: 4,
  plannedBlocks: [0, 1, 2, 3],
  oneshot: false,
  rotates: true,
  evaluations: 1,
  modelWeightBytes: 18_883_584,
  externalBytes: 0,
  openSeconds: 0.285,
  textSeconds: 5.022,
  hashSeconds: 0.724,
  probe: {
    cutWeightBytes: 11_013_120,
    blockWeightBytes: 2_623_488,
    readBytes: 0,
    readSeconds: 0,
    rotateSeconds: 6.095,
    calibrate: { prelude: c(0.113, 0.003), captures: [c(0.181, 0.04), c(1.868, 0.08), c(1.744, 0.076), c(1.308, 0.348)], advance: c(1.264, 0.374) },
    evalDense: { prelude: c(0.067, 0), block: c(1.002, 0.38), tail: c(2.375, 0.141) },
    evalCompressed: { prelude: c(0.034, 0.001), block: c(1.439, 0.212), tail: c(2.269, 0.178) },
    writeSeconds: 0.821,
  },
  coreSeconds: 26.669,
};
const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

test('a forward is its fixed part plus its share of batches (a partial batch costs its share)', () => {
  close(forwardSeconds(c(1.264, 0.374), 32, 8), 1.264 + 4 * 0.374, '4 batches');
  close(forwardSeconds(c(1.264, 0.374), 4, 8), 1.264 + 0.5 * 0.374, 'half a batch');
  assert.equal(forwardSeconds(c(1.264, 0.374), 0, 8), 0);
});

test('fixed and per-batch time split from the batch end times; the median gap ignores one slowed batch', () => {
  // Session opened in 1.0 s, batches of 0.2 s, the first with 0.3 s of set-up, released in 0.1 s.
  const marks = [1.5, 1.7, 1.9, 2.1];
  const s = splitForward(0, marks, 2.2);
  close(s.perBatch, 0.2, 'per batch');
  close(s.fixed, 2.2 - 4 * 0.2, 'fixed');
  // The third batch slowed by other work: the median gap is still 0.2 s.
  const slow = splitForward(0, [1.5, 1.7, 2.6, 2.8], 2.9);
  close(slow.perBatch, 0.2, 'per batch, one slow batch');
  // One batch only: no split; the forward of that many windows costs what was measured.
  assert.deepEqual(splitForward(0, [0.7], 0.8), { fixed: 0, perBatch: 0.8 });
  close(forwardSeconds(splitForward(0, [0.7], 0.8, [2], 4), 2, 4), 0.8, 'one half batch, at its own windows');
});

test('a partial last batch counts by its windows, and the split reproduces the measured time at the probed windows', () => {
  // Batches of 4, 4 and 2 windows (10 windows at batch 4): 0.1 s per window after the first batch.
  const s = splitForward(0, [2.0, 2.4, 2.6], 2.7, [4, 4, 2], 4);
  close(s.perBatch, 0.4, 'per full batch');
  close(s.fixed, 2.7 - 2.5 * 0.4, 'fixed');
  close(forwardSeconds(s, 10, 4), 2.7, 'measured time at the probed windows');
});

test('the probe runs the job\'s own windows, up to four batches', () => {
  assert.equal(probeWindows(32, 8), 32);
  assert.equal(probeWindows(128, 8), 32);
  assert.equal(probeWindows(4, 8), 4);
  assert.equal(probeWindows(2, 4), 2);
  assert.equal(probeWindows(20, 4), 16);
});

test('the core probe\'s row counts grow with the layer (the per-row part must stand out of the fixed part)', () => {
  assert.deepEqual(coreProbeRows(128), { r1: 32, r2: 128 });
  assert.deepEqual(coreProbeRows(256), { r1: 32, r2: 128 });
  assert.deepEqual(coreProbeRows(2048), { r1: 32, r2: 256 });
  assert.deepEqual(coreProbeRows(5632), { r1: 32, r2: 704 });
  assert.deepEqual(coreProbeRows(16), { r1: 16, r2: 16 });
});

test('per-stage seconds of the bundled model\'s job from its measured probe', () => {
  const s = stageSeconds(MEASURED);
  // load: open + texts + hash (no external data).
  close(s.load, 0.285 + 5.022 + 0.724, 'load');
  // rotate: the cut's rotation scaled by weight bytes.
  close(s.rotate, (6.095 * 18_883_584) / 11_013_120, 'rotate');
  // calibrate: prelude + 4 blocks × Σ captures (4 batches each) + advance after blocks 0–2.
  const n = (x: { fixed: number; perBatch: number }) => x.fixed + 4 * x.perBatch;
  const captures = n(c(0.181, 0.04)) + n(c(1.868, 0.08)) + n(c(1.744, 0.076)) + n(c(1.308, 0.348));
  close(s.calibrate, n(c(0.113, 0.003)) + 4 * captures + 3 * n(c(1.264, 0.374)), 'calibrate');
  close(s.compress, 26.669, 'compress');
  close(s.write, (0.821 * 18_883_584) / 11_013_120, 'write');
  // evaluate: 16 batches per forward; dense: prelude + 4 blocks + tail; then the simulated model.
  const m = (x: { fixed: number; perBatch: number }) => x.fixed + 16 * x.perBatch;
  const dense = m(c(0.067, 0)) + 4 * m(c(1.002, 0.38)) + m(c(2.375, 0.141));
  const simulated = m(c(0.034, 0.001)) + 4 * m(c(1.439, 0.212)) + m(c(2.269, 0.178));
  close(s.evaluate, dense + simulated, 'evaluate');
});

test('write: the two model writes scale with the weight bytes, the packing with the compressed blocks (recorded demo probe)', () => {
  // The write parts of a probe of the same job (`OBR_PROBE_TRACE=1 obr demo`, 29 Nov 2026 22:41 UTC,
  // load average 7.2–7.7; one warm run): simulated 0.082 s, packing block 0 0.053 s, packed 0.060 s on the cut.
  // That job's write took 0.60 s; the whole-write scaling (0.195 s × 1.71 = 0.33 s) left out that
  // every compressed block is packed.
  const parts = { writeSeconds: 0.195, writeSimulatedSeconds: 0.082, writePackSeconds: 0.053, writePackedSeconds: 0.06 };
  const x: EstimateInputs = { ...MEASURED, probe: { ...MEASURED.probe, ...parts } };
  const bytes = 18_883_584 / 11_013_120;
  // Every later block holds block 0's bytes here (W_b / W_0 = 1): 4 packings.
  close(otherBlockScale(x), 1, 'W_b / W_0');
  close(stageSeconds(x).write, (0.082 + 0.06) * bytes + 4 * 0.053, 'four blocks compressed');
  close(stageSeconds({ ...x, plannedBlocks: [2] }).write, (0.082 + 0.06) * bytes + 0.053, 'one block');
  close(stageSeconds({ ...x, plannedBlocks: [] }).write, (0.082 + 0.06) * bytes, 'none: the two writes only');
  // Later blocks twice block 0's bytes: their packing twice block 0's.
  const heavier: EstimateInputs = { ...x, modelWeightBytes: 18_883_584 + 3 * 2_623_488 };
  close(stageSeconds(heavier).write, (0.082 + 0.06) * (heavier.modelWeightBytes / 11_013_120) + 0.053 * (1 + 3 * 2), 'heavier blocks');
  // A probe recorded before the parts existed keeps the whole-write scaling.
  close(stageSeconds(MEASURED).write, (0.821 * 18_883_584) / 11_013_120, 'no parts');
});

test('cheap probes repeated warm are summarised part by part by their median (one slowed run is not the estimate)', () => {
  // Three warm runs of the write probe, of the size the demo's pre-flight measures (made-up values;
  // the 0.684 s is what one run slowed by other work on the machine looked like in a real trace).
  const runs = [
    { simulated: 0.087, pack: 0.05, packed: 0.151 },
    { simulated: 0.684, pack: 0.026, packed: 0.021 },
    { simulated: 0.079, pack: 0.061, packed: 0.06 },
  ];
  assert.deepEqual(medianParts(runs), { simulated: 0.087, pack: 0.05, packed: 0.06 });
  assert.deepEqual(medianParts([{ a: 1 }, { a: 3 }]), { a: 2 });
  assert.deepEqual(medianParts([{ a: 5 }]), { a: 5 });
});

test('only some blocks: calibration runs up to the last planned one, evaluation still runs every block', () => {
  const all = stageSeconds(MEASURED);
  const n = (x: { fixed: number; perBatch: number }) => x.fixed + 4 * x.perBatch;
  const captures = MEASURED.probe.calibrate.captures.reduce((t, x) => t + n(x), 0);
  const advance = n(MEASURED.probe.calibrate.advance);
  const prelude = n(MEASURED.probe.calibrate.prelude);
  // Blocks 0 and 1: both captured, one advance between them; blocks 2 and 3 not run.
  close(stageSeconds({ ...MEASURED, plannedBlocks: [0, 1] }).calibrate, prelude + 2 * captures + advance, 'blocks 0–1');
  // Block 2 only: blocks 0 and 1 advance (dense), block 2 captured, block 3 not run.
  close(stageSeconds({ ...MEASURED, plannedBlocks: [2] }).calibrate, prelude + 2 * advance + captures, 'block 2');
  const some = stageSeconds({ ...MEASURED, plannedBlocks: [0, 1] });
  close(some.evaluate, all.evaluate, 'evaluate');
  close(some.rotate, all.rotate, 'rotate');
});

test('no rotation, no evaluation: those terms are 0; external weights change no formula (the probed forwards read them)', () => {
  const s = stageSeconds({ ...MEASURED, rotates: false, evaluations: 0 });
  assert.equal(s.rotate, 0);
  assert.equal(s.evaluate, 0);
  close(s.calibrate, stageSeconds(MEASURED).calibrate, 'calibrate');
  const e = stageSeconds({ ...MEASURED, externalBytes: 100e6, probe: { ...MEASURED.probe, readBytes: 10e6, readSeconds: 0.05 } });
  close(e.load, stageSeconds(MEASURED).load, 'load: the weights stay on disk');
  close(e.evaluate, stageSeconds(MEASURED).evaluate, 'evaluate');
});

// A probe recorded on the scale benchmark's 22-block TinyLlama-shape model (fixture: what it is,
// the command and the machine's load are in the file): block 0 holds the embedding table (the
// token Gather sits in its region), 220 MB against 88 MB for each later block.
const SCALE = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'fixtures', 'preflight', 'scale-22-run1.json'), 'utf8')) as { inputs: EstimateInputs; actual: Record<string, number> };

test('blocks after block 0 scale its fixed part by weight bytes (recorded scale-model probe)', () => {
  const x = SCALE.inputs;
  const other = (2_201_335_564 - 351_297_892) / 21;
  close(otherBlockScale(x), other / 219_693_412, 'W_b / W_0');
  assert.ok(otherBlockScale(x) > 0.39 && otherBlockScale(x) < 0.41);
  // The bundled model's block 0 is like the others: no scaling.
  close(otherBlockScale(MEASURED), 1, 'bundled model');
  const s = stageSeconds(x);
  const k = otherBlockScale(x);
  // evaluate, m = 2 windows at batch 4: each forward is fixed + perBatch·2/4.
  const f = (c: { fixed: number; perBatch: number }, scale = 1) => c.fixed * scale + c.perBatch * 0.5;
  const p = x.probe;
  const pass = (e: typeof p.evalDense) => f(e.prelude) + f(e.tail) + f(e.block) + 21 * f(e.block, k);
  close(s.evaluate, pass(p.evalDense) + pass(p.evalCompressed), 'evaluate');
  // calibrate, block 0 only (n = 8 windows, two batches): prelude + the four captures, no advance.
  const g = (c: { fixed: number; perBatch: number }) => c.fixed + c.perBatch * 2;
  close(s.calibrate, g(p.calibrate.prelude) + p.calibrate.captures.reduce((t, c) => t + g(c), 0), 'calibrate');
  // A probe of that time measured the rotation as one number: scaled by weight bytes.
  close(s.rotate, (p.rotateSeconds! * 2_201_335_564) / 351_297_892, 'rotate');
  // Blocks 0 and 1: block 1's captures and block 0's advance (block 0's own fixed part).
  const two = stageSeconds({ ...x, plannedBlocks: [0, 1] });
  const g1 = (c: { fixed: number; perBatch: number }) => c.fixed * k + c.perBatch * 2;
  close(two.calibrate - s.calibrate, g(p.calibrate.advance) + p.calibrate.captures.reduce((t, c) => t + g1(c), 0), 'the second block');
});

test('the streamed rotation: transform scaled by bytes, the check measured on the cut plus block 0\'s share per further block', () => {
  const x: EstimateInputs = { ...SCALE.inputs, probe: { ...SCALE.inputs.probe, rotateTransformSeconds: 20, rotateCheckSeconds: 30, rotateCheckBlockSeconds: 12 } };
  const k = otherBlockScale(x);
  // Block 0's three check forwards took 12 s, less than three of its probed fixed parts (3 × 7.02 s):
  // all of it counts as fixed, scaled by W_b / W_0 for each of the 21 further blocks.
  close(stageSeconds(x).rotate, (20 * 2_201_335_564) / 351_297_892 + 30 + 21 * 12 * k, 'rotate');
  // A longer block-0 check (60 s): only 3 × 7.02 s of it is fixed and scaled.
  const y: EstimateInputs = { ...x, probe: { ...x.probe, rotateCheckBlockSeconds: 60 } };
  const fixed = 3 * x.probe.calibrate.advance.fixed;
  close(stageSeconds(y).rotate, (20 * 2_201_335_564) / 351_297_892 + 30 + 21 * (60 - fixed * (1 - k)), 'rotate, long check');
  // The bundled model (blocks alike): each further block adds block 0's check forwards.
  const z: EstimateInputs = { ...MEASURED, probe: { ...MEASURED.probe, rotateTransformSeconds: 0.79, rotateCheckSeconds: 1.22, rotateCheckBlockSeconds: 0.6 } };
  close(stageSeconds(z).rotate, (0.79 * 18_883_584) / 11_013_120 + 1.22 + 3 * 0.6, 'rotate, bundled');
  assert.equal(stageSeconds({ ...x, rotates: false }).rotate, 0);
});

test('the bundled model\'s recorded probe: rotate = transform scaled by bytes + the cut\'s check + block 0\'s check forwards per further block', () => {
  const demo = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'fixtures', 'preflight', 'small-demo.json'), 'utf8')) as { inputs: EstimateInputs };
  const x = demo.inputs;
  const p = x.probe;
  close(otherBlockScale(x), 1, 'blocks alike');
  close(stageSeconds(x).rotate, (p.rotateTransformSeconds! * x.modelWeightBytes) / p.cutWeightBytes + p.rotateCheckSeconds! + 3 * p.rotateCheckBlockSeconds!, 'rotate');
  // Calibration windows = the job's 32 at batch 8 (four batches): calibrate is the measured forwards, 4 blocks.
  const f = (c: { fixed: number; perBatch: number }) => c.fixed + 4 * c.perBatch;
  close(stageSeconds(x).calibrate, f(p.calibrate.prelude) + 4 * p.calibrate.captures.reduce((t, c) => t + f(c), 0) + 3 * f(p.calibrate.advance), 'calibrate');
});

test('an evaluation forward timed on one batch is split with the calibration advance\'s per-batch part (recorded scale probe)', () => {
  // The job evaluates 2 windows at batch 4: one batch, 27.894 s for block 0 (recorded, load ≈ 20);
  // the calibration advance of the same block measured 12.226 s per batch over two batches.
  const one = splitForward(0, [27.709], 27.894, [2], 4);
  close(forwardSeconds(one, 2, 4), 27.894, 'measured');
  const r = resplitOneBatch(one, 2, 4, 12.226);
  close(r.perBatch, 12.226, 'per batch from the advance');
  close(r.fixed, 27.894 - 12.226 / 2, 'the rest fixed');
  close(forwardSeconds(r, 2, 4), 27.894, 'still the measured time at the probed windows');
  // A later block (88 MB against block 0's 220 MB) pays its share of the fixed part only.
  const k = (2_201_335_564 - 351_297_892) / 21 / 219_693_412;
  close(forwardSeconds({ fixed: r.fixed * k, perBatch: r.perBatch }, 2, 4), (27.894 - 6.113) * k + 6.113, 'a later block');
  // Already split, or nothing to split with: unchanged.
  assert.deepEqual(resplitOneBatch({ fixed: 1, perBatch: 2 }, 2, 4, 3), { fixed: 1, perBatch: 2 });
  assert.deepEqual(resplitOneBatch(one, 2, 4, 0), one);
});

const SMALL = path.join(__dirname, '..', '..', '..', 'media', 'models', 'small', 'model.onnx');

test('bytes written: every untouched weight twice (simulated + packed model), a compressed layer once as stored and once packed (bundled model)', async () => {
  const loaded = await loadModel(SMALL);
  try {
    const layers = findLinearLayers(loaded.model).filter((l) => l.block !== null && COMPRESSED_ROLES.has(l.role) && !l.weightShared);
    const stored = (name: string) => loaded.initializerInfo(name)!.byteLength;
    const of = (blocks: number[]) => layers.filter((l) => blocks.includes(l.block!)).map((l) => ({ rows: l.outFeatures, cols: l.inFeatures, storedBytes: stored(l.weightName) }));
    // The weights are stored in the .onnx file itself here: the graph is the rest of it.
    const graphBytes = loaded.fileBytes - loaded.weightBytes;
    assert.ok(graphBytes > 0 && graphBytes < 0.1 * loaded.weightBytes, `${graphBytes}`);
    const base = { graphBytes, weightBytes: loaded.weightBytes, wbits: 4, groupSize: 128 };
    // Nothing compressed: the model twice.
    assert.equal(writtenBytes({ ...base, layers: [] }), 2 * loaded.fileBytes);
    // Block 0: its 7 layers leave the packed model as stored weights (fp32 here) and come back as
    // 4-bit codes plus a scale (4 B) and a zero point's share (0.5 B) per row and group of 128.
    const block0 = of([0]);
    assert.equal(block0.length, 7);
    const saved = block0.reduce((s, l) => s + l.storedBytes - (l.rows * l.cols) / 2 - l.rows * Math.ceil(l.cols / 128) * 4.5, 0);
    assert.ok(saved > 0.8 * block0.reduce((s, l) => s + l.storedBytes, 0), 'fp32 → 4 bits saves most of a layer');
    close(writtenBytes({ ...base, layers: block0 }), 2 * loaded.fileBytes - saved, 'block 0');
    // Each further compressed block writes fewer bytes by the same amount (the blocks are alike).
    const all = writtenBytes({ ...base, layers: of([0, 1, 2, 3]) });
    close(all, 2 * loaded.fileBytes - 4 * saved, 'four blocks');
    // Weights the job's graph adds (the rotation's Hadamard matrices): in both models.
    close(writtenBytes({ ...base, addedBytes: 1000, layers: block0 }) - writtenBytes({ ...base, layers: block0 }), 2000, 'added weights');
    // Per-row scales (no groups): one scale and zero point share per row.
    const perRow = writtenBytes({ ...base, groupSize: 0, layers: block0 });
    close(perRow - writtenBytes({ ...base, layers: block0 }), block0.reduce((s, l) => s + l.rows * 4.5 - l.rows * Math.ceil(l.cols / 128) * 4.5, 0), 'per-row scales');
  } finally {
    await loaded.close();
  }
});

test('the write probe\'s slice: the cut plus further weights in graph order up to the bytes asked, the whole model when smaller (bundled model)', async () => {
  const loaded = await loadModel(SMALL);
  try {
    const cut = oneBlockCut(loaded.model, findLinearLayers(loaded.model))!;
    const bytesOf = (n: string) => loaded.initializerInfo(n)?.byteLength ?? 0;
    const names = (m: typeof loaded.model) => (m.graph!.initializer ?? []).map((t) => t.name ?? '');
    const cutBytes = names(cut.model).reduce((s, n) => s + bytesOf(n), 0);
    assert.ok(cutBytes < loaded.weightBytes);
    // At least WRITE_PROBE_BYTES: more than this model holds, so the slice is all of it, each weight once.
    const whole = writeSlice(cut.model, loaded.model, bytesOf, WRITE_PROBE_BYTES);
    assert.equal(whole.bytes, loaded.weightBytes);
    assert.deepEqual([...names(whole.model)].sort(), [...loaded.initializerNames()].sort());
    assert.equal(new Set(names(whole.model)).size, names(whole.model).length);
    // Half-way: the cut's weights first, then the model's others in graph order until the bytes are reached.
    const target = (cutBytes + loaded.weightBytes) / 2;
    const half = writeSlice(cut.model, loaded.model, bytesOf, target);
    assert.ok(half.bytes >= target && half.bytes < loaded.weightBytes, `${half.bytes}`);
    const added = names(half.model).slice(names(cut.model).length);
    const inCut = new Set(names(cut.model));
    const order = loaded.initializerNames().filter((n) => !inCut.has(n));
    assert.deepEqual(added, order.slice(0, added.length));
    // The bytes stop at the first weight that reaches the target.
    assert.ok(half.bytes - bytesOf(added[added.length - 1]!) < target);
    // The cut itself is untouched (the slice is a copy).
    assert.equal(names(cut.model).length, (cut.model.graph!.initializer ?? []).length);
    assert.ok(names(cut.model).every((n) => inCut.has(n)));
  } finally {
    await loaded.close();
  }
});

test('write: seconds per byte of the probe\'s writes times the bytes the job writes, plus the packing per compressed block', () => {
  // The scale model's recorded probe with a write slice: 1.21 GB in 4.4 s (made-up rate), packing block 0 in 0.56 s.
  const p = { ...SCALE.inputs.probe, writeProbeBytes: 1.21e9, writeProbeSeconds: 4.4, writePackSeconds: 0.56, writeSimulatedSeconds: 3, writePackedSeconds: 1.4 };
  const x: EstimateInputs = { ...SCALE.inputs, probe: p, writeBytes: 4.3e9 };
  close(stageSeconds(x).write, (4.4 * 4.3e9) / 1.21e9 + 0.56, 'block 0');
  // Twice the bytes: twice the copy; the packing unchanged.
  close(stageSeconds({ ...x, writeBytes: 8.6e9 }).write, (4.4 * 8.6e9) / 1.21e9 + 0.56, 'twice the bytes');
  // Two compressed blocks: block 1 packs W_b / W_0 of block 0's bytes.
  const k = otherBlockScale(x);
  close(stageSeconds({ ...x, plannedBlocks: [0, 1] }).write, (4.4 * 4.3e9) / 1.21e9 + 0.56 * (1 + k), 'two blocks');
  // Without the job's bytes (an older record): the cut's two writes scaled by the weight bytes.
  const { writeBytes: _, ...old } = x;
  close(stageSeconds(old).write, (3 + 1.4) * (x.modelWeightBytes / p.cutWeightBytes) + 0.56, 'older record');
});
