import assert from 'node:assert/strict';
import { test } from 'node:test';
import { quantile, sig, summarize, timeRepeated } from '../../../src/pipeline/bench/stats';

test('summarize: median, IQR, sample stdev, min/max of known samples', () => {
  const s = summarize([5, 1, 4, 2, 3]);
  assert.equal(s.median, 3);
  assert.equal(s.min, 1);
  assert.equal(s.max, 5);
  assert.equal(s.mean, 3);
  assert.equal(s.iqr, 2); // p25 = 2, p75 = 4 (linear interpolation)
  assert.ok(Math.abs(s.stdev - Math.sqrt(2.5)) < 1e-12);
  assert.deepEqual(s.samples, [5, 1, 4, 2, 3], 'samples stay in run order');
  assert.equal(summarize([7]).stdev, 0);
  assert.equal(quantile([1, 2], 0.5), 1.5);
});

test('timeRepeated runs the warm-ups untimed, then the reps, and accepts a reported duration', async () => {
  const calls: number[] = [];
  const s = await timeRepeated((rep) => {
    calls.push(rep);
    return rep >= 0 ? 10 + rep : undefined;
  }, { warmup: 2, reps: 3 });
  assert.deepEqual(calls, [-1, -2, 0, 1, 2]);
  assert.deepEqual(s.samples, [10, 11, 12]);
  assert.equal(s.median, 11);
});

test('timeRepeated stops on an aborted signal', async () => {
  const abort = new AbortController();
  abort.abort();
  await assert.rejects(timeRepeated(() => undefined, { warmup: 0, reps: 2, signal: abort.signal }), { name: 'AbortError' });
});

test('sig rounds to significant digits', () => {
  assert.equal(sig(1.23456789, 3), 1.23);
  assert.equal(sig(123456.7, 2), 120000);
});
