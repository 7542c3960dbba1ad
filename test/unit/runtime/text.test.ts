// Token windows for calibration (§1.4) and evaluation (§1.11), and their input errors.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { seededRandom as mulberry32 } from '../../../src/core/random';
import { calibrationWindows, evaluationWindows, readText, TextInputError, window } from '../../../src/runtime/text';

const stream = Int32Array.from({ length: 1000 }, (_, i) => i);

test('mulberry32 is deterministic, seed-dependent and uniform-ish in [0, 1)', () => {
  const a = mulberry32(0);
  const b = mulberry32(0);
  const c = mulberry32(1);
  const xs = Array.from({ length: 1000 }, () => a());
  assert.deepEqual(xs.slice(0, 5), Array.from({ length: 5 }, () => b()));
  assert.notEqual(xs[0], c());
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.05, `mean ${mean}`);
});

test('calibration windows: N windows of seqlen contiguous tokens at seeded offsets', () => {
  const w = calibrationWindows(stream, 16, 50, 0);
  assert.equal(w.count, 16);
  assert.equal(w.ids.length, 16 * 50);
  for (let i = 0; i < w.count; i++) {
    const win = window(w, i);
    const start = w.offsets[i]!;
    assert.ok(start >= 0 && start + 50 <= stream.length);
    assert.deepEqual(Array.from(win), Array.from({ length: 50 }, (_, j) => start + j));
  }
  assert.deepEqual(calibrationWindows(stream, 16, 50, 0).offsets, w.offsets, 'same seed, same offsets');
  assert.notDeepEqual(calibrationWindows(stream, 16, 50, 1).offsets, w.offsets, 'another seed, other offsets');
  // a text of exactly one window has one possible offset
  assert.deepEqual(calibrationWindows(stream.subarray(0, 50), 3, 50).offsets, [0, 0, 0]);
});

test('evaluation windows: numel // seqlen non-overlapping windows, remainder dropped', () => {
  const w = evaluationWindows(stream, 300);
  assert.equal(w.count, 3);
  assert.deepEqual(w.offsets, [0, 300, 600]);
  assert.equal(w.ids[300], 300);
  assert.equal(evaluationWindows(stream, 100, { maxWindows: 4 }).count, 4);
  assert.deepEqual(evaluationWindows(stream, 100, { maxWindows: 4 }).offsets, [0, 100, 200, 300]);
  assert.deepEqual(evaluationWindows(stream, 100, { maxWindows: 4, spread: true }).offsets, [0, 200, 500, 700]);
  assert.equal(evaluationWindows(stream, 100, { maxWindows: 50 }).count, 10);
});

test('a text shorter than one window is a clear TextInputError', () => {
  assert.throws(() => evaluationWindows(stream.subarray(0, 10), 256), (e: unknown) => e instanceof TextInputError && e.code === 'too-short' && /shorter than one window of 256/.test(e.message));
  assert.throws(() => calibrationWindows(stream.subarray(0, 10), 4, 256), (e: unknown) => e instanceof TextInputError && e.code === 'too-short');
  assert.throws(() => calibrationWindows(stream, 0, 10), TextInputError);
  assert.throws(() => evaluationWindows(stream, 1), TextInputError);
});

test('readText: missing and empty files are clear errors', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-text-'));
  const empty = path.join(dir, 'empty.txt');
  writeFileSync(empty, '  \n\n');
  await assert.rejects(readText(path.join(dir, 'nope.txt')), (e: unknown) => e instanceof TextInputError && e.code === 'missing');
  await assert.rejects(readText(empty), (e: unknown) => e instanceof TextInputError && e.code === 'empty');
  const ok = path.join(dir, 'ok.txt');
  writeFileSync(ok, 'hello\n\nworld');
  const t = await readText(ok);
  assert.equal(t.text, 'hello\n\nworld');
  assert.equal(t.sha256.length, 64);
});
