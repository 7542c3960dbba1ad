// The Benchmarks view's chart configurations are pure functions of the data: tested in Node.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { coreChart, headlines, historyChart, latencyChart, perplexityChart, sizeChart, speedChart } from '../../../webview/src/benchmarks/charts';
import type { ChartPalette as Palette } from '../../../webview/src/benchmarks/charts';
import { historyEntry } from '../../../src/pipeline/bench/run';
import { sampleResult } from './fixture';

const palette: Palette = {
  foreground: '#fff',
  muted: '#999',
  grid: '#444',
  pruning: 'orange',
  quantization: 'purple',
  recovered: 'green',
  total: 'blue',
  accent: 'yellow',
  series: ['a', 'b', 'c'],
};

test('perplexity chart: dense first, then every recipe', () => {
  const c = perplexityChart(sampleResult(), palette)!;
  assert.deepEqual(c.data.labels, ['dense', 'obr-gptq W4', 'sparsegpt-gptq W4']);
  assert.deepEqual(c.data.datasets[0]!.data, [20, 24, 26]);
});

test('latency chart: dense and packed medians of load, prefill, decode', () => {
  const c = latencyChart(sampleResult(), palette)!;
  assert.equal(c.data.datasets.length, 2);
  assert.deepEqual(c.data.datasets[0]!.data, [100, 20, 2]);
  assert.deepEqual(c.data.datasets[1]!.data, [100, 25, 2.5]);
});

test('size chart: dense, packed and the computed sparse formats in MiB', () => {
  const c = sizeChart(sampleResult(), palette)!;
  assert.equal(c.data.labels!.length, 4);
  const mib = c.data.datasets[0]!.data as number[];
  assert.ok(Math.abs(mib[1]! - 2_500_000 / 2 ** 20) < 1e-9);
});

test('speed, core and history charts; nothing for missing suites', () => {
  const r = sampleResult();
  assert.deepEqual(speedChart(r, palette)!.data.datasets[0]!.data, [10, 10]);
  assert.deepEqual(coreChart(r, palette)!.data.labels, ['obr-gptq']);
  const h = historyChart([historyEntry(r), historyEntry(r)], palette)!;
  assert.equal(h.data.labels!.length, 2);
  assert.ok(h.data.datasets.some((d) => d.label === 'decode tok/s packed'));
  const empty = { ...r, quality: undefined, runtime: undefined, speed: undefined, core: undefined };
  assert.equal(perplexityChart(empty, palette), undefined);
  assert.equal(latencyChart(empty, palette), undefined);
  assert.equal(historyChart([], palette), undefined);
  assert.ok(headlines(r).some((x) => x.label.startsWith('OBR / SparseGPT')));
});
