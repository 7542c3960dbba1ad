import assert from 'node:assert/strict';
import { test } from 'node:test';
import { historyEntry } from '../../../src/pipeline/bench/run';
import { renderMarkdown } from '../../../src/pipeline/bench/markdown';
import { sampleResult } from './fixture';

test('Markdown has every suite, the machine, the load average, the sparsity statement and the command', () => {
  const md = renderMarkdown(sampleResult());
  for (const s of ['## Quality (perplexity)', '## Compression speed', '## Runtime: dense vs packed', '## Core kernels', 'Load average', 'Test CPU', 'dense kernels', 'obr bench /m/model.onnx', 'OBR vs SparseGPT+GPTQ', '2:4 semi-structured']) {
    assert.ok(md.includes(s), `missing "${s}"`);
  }
  assert.match(md, /\| dense \| 20\.000 \| 1\.00× \|/);
  assert.match(md, /\| file size \(model\) \| 4\.77 MiB \| 2\.38 MiB \| 2\.00× \|/);
});

test('history entry carries the headline numbers keyed by recipe@wN', () => {
  const h = historyEntry(sampleResult());
  assert.equal(h.densePerplexity, 20);
  assert.deepEqual(h.perplexity, { 'obr-gptq@w4': 24, 'sparsegpt-gptq@w4': 26 });
  assert.equal(h.sizeRatio, 0.5);
  assert.equal(h.decodeTokensPerSecond?.dense, 500);
  assert.equal(h.loadAverage, 1);
  assert.deepEqual(h.coreGflops, { 'obr-gptq@64': 0.5 });
});
