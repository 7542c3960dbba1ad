// The inspector's snapshot carries summaries only: a report of a TinyLlama-shaped model (22 blocks,
// one scale per output row in every layer) loses its per-row arrays and nothing else.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CompressionReport, LayerReport, LayerRole } from '../../../src/protocol/report';
import { summarizeLayer, summarizeReport } from '../../../src/protocol/webview';

const SHAPES: Array<[LayerRole, number, number]> = [
  ['q', 2048, 2048],
  ['k', 256, 2048],
  ['v', 256, 2048],
  ['o', 2048, 2048],
  ['gate', 5632, 2048],
  ['up', 5632, 2048],
  ['down', 2048, 5632],
];

function report(blocks: number): CompressionReport {
  const layers: LayerReport[] = [];
  for (let b = 0; b < blocks; b++) {
    for (const [role, rows, cols] of SHAPES) {
      layers.push({
        name: `/model/layers.${b}/${role}/MatMul`,
        block: b,
        role,
        rows,
        cols,
        sparsity: 0.5,
        wbits: 4,
        asymmetric: true,
        loss: { total: 1, pruning: 2, quantization: 1, recovered: 2, outputEnergy: 100 },
        seconds: 3,
        codeHistogram: Array.from({ length: 16 }, (_, i) => i * 1000),
        rowScales: Array.from({ length: rows }, (_, i) => 0.001234 + i * 1e-6),
        rowZeros: Array.from({ length: rows }, (_, i) => (i % 15) - 7),
      });
    }
  }
  return {
    schemaVersion: 1,
    tool: { name: 'obr-studio', version: '0' },
    createdAt: '2026-01-01T00:00:00.000Z',
    source: { path: '/m/model.onnx', bytes: 1, sha256: 'x' },
    outputs: { simulated: '/m/s.onnx', report: '/m/r.report.json' },
    recipe: 'obr-gptq',
    options: { sparsity: '0.5' },
    calibration: { text: 'c', sha256: 'y', samples: 8, seqlen: 64, tokens: 512, mode: 'sequential' },
    executionProvider: { used: 'cpu', tried: [{ name: 'cpu' }] },
    layers,
    perplexity: {},
    baselines: [{ recipe: 'rtn', layers: layers.map((l) => ({ name: l.name, loss: l.loss })) }],
    timings: { total: 1 },
    warnings: [],
  };
}

test('the snapshot report keeps every field but the per-row scales and zero points', () => {
  const full = report(22);
  const before = JSON.stringify(full);
  const summary = summarizeReport(full);
  assert.equal(JSON.stringify(full), before, 'the host keeps its full report (for layer details)');
  assert.equal(summary.layers.length, 154);
  for (const [i, l] of summary.layers.entries()) {
    assert.ok(!('rowScales' in l) && !('rowZeros' in l), l.name);
    const { rowScales, rowZeros, ...rest } = full.layers[i]!;
    assert.equal(rowScales!.length, l.rows);
    assert.equal(rowZeros!.length, l.rows);
    assert.deepEqual(l, rest);
  }
  const { layers: _a, ...fullRest } = full;
  const { layers: _b, ...summaryRest } = summary;
  assert.deepEqual(summaryRest, fullRest);
  // 22 blocks × 18 k rows of scales and zero points are most of the report; the summary is small.
  const fullBytes = JSON.stringify(full).length;
  const summaryBytes = JSON.stringify(summary).length;
  assert.ok(fullBytes > 5e6, `full ${fullBytes}`);
  assert.ok(summaryBytes < 250_000, `summary ${summaryBytes}`);
});

test('a layer without per-row arrays (group-wise weights) is summarized unchanged', () => {
  const l = { ...report(1).layers[0]!, groupSize: 128 };
  delete l.rowScales;
  delete l.rowZeros;
  assert.deepEqual(summarizeLayer(l), l);
});
