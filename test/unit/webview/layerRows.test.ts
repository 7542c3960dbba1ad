// The layer table's filtering and sorting (webview/src/views/layerRows.ts), on a 32-block report's
// worth of layers: by text, role and block range, sorted by a loss column.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LayerRole } from '../../../src/protocol/report';
import type { LayerSummary } from '../../../src/protocol/webview';
import { filterRows, reportRows, sortRows } from '../../../webview/src/views/layerRows';

const ROLES: LayerRole[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

/** 32 blocks × 7 layers + lm_head; total loss of layer (b, i) is ((b · 7 + i) mod 23) / 100 of the energy. */
function layers(): LayerSummary[] {
  const out: LayerSummary[] = [];
  for (let b = 0; b < 32; b++) {
    ROLES.forEach((role, i) => {
      const total = (b * 7 + i) % 23;
      out.push({
        name: `/model/layers.${b}/${i < 4 ? 'self_attn' : 'mlp'}/${role}_proj/MatMul`,
        block: b,
        role,
        rows: 64,
        cols: 64,
        sparsity: 0.5,
        wbits: 4,
        loss: { total, pruning: 2 * total, quantization: total, recovered: 2 * total, outputEnergy: 100 },
        seconds: 1,
        codeHistogram: [],
      });
    });
  }
  out.push({ name: '/lm_head/MatMul', block: null, role: 'lm_head', rows: 64, cols: 64, sparsity: 0.5, wbits: 4, loss: { total: 1, pruning: 1, quantization: 1, recovered: 1, outputEnergy: 0 }, seconds: 1, codeHistogram: [] });
  return out;
}

const rows = reportRows(layers());
const all = { text: '', role: '', blocks: '' };

test('every layer is a row; the block column holds its block', () => {
  assert.equal(rows.length, 225);
  assert.equal(filterRows(rows, all).length, 225);
  assert.equal(rows[15]!.cells['block'], '2');
  assert.equal(rows[224]!.cells['block'], '–');
});

test('filter by text, role and block range, alone and together', () => {
  assert.equal(filterRows(rows, { ...all, text: 'MLP/' }).length, 32 * 3, 'text matches names, case-insensitively');
  assert.equal(filterRows(rows, { ...all, text: 'down' }).length, 32, 'a role typed as text');
  assert.equal(filterRows(rows, { ...all, role: 'k' }).length, 32);
  const range = filterRows(rows, { ...all, blocks: '10-12' });
  assert.equal(range.length, 21);
  assert.ok(range.every((r) => r.block! >= 10 && r.block! <= 12));
  assert.equal(filterRows(rows, { ...all, blocks: '30-' }).length, 14, 'open range; lm_head is outside blocks');
  assert.deepEqual(filterRows(rows, { ...all, role: 'up', blocks: '5' }).map((r) => r.name), ['/model/layers.5/mlp/up_proj/MatMul']);
  assert.equal(filterRows(rows, { ...all, blocks: '3-x' }).length, 225, 'an unreadable range filters nothing');
});

test('sort by total loss: largest first, the layer without energy (NaN) last, ties in report order', () => {
  const sorted = sortRows(rows, 'total', true);
  const totals = sorted.map((r) => r.sortValues['total'] as number);
  assert.equal(sorted.at(-1)!.name, '/lm_head/MatMul');
  for (let i = 1; i < totals.length - 1; i++) assert.ok(totals[i - 1]! >= totals[i]!, `row ${i}`);
  assert.equal(totals[0], 0.22);
  const top = sorted.filter((r) => r.sortValues['total'] === 0.22).map((r) => r.index);
  assert.deepEqual(top, [...top].sort((a, b) => a - b));
  // Ascending by block keeps report order inside a block; the filter result sorts the same way.
  const byBlock = sortRows(filterRows(rows, { ...all, blocks: '7-8' }), 'block', false);
  assert.deepEqual(byBlock.map((r) => r.index), Array.from({ length: 14 }, (_, i) => 49 + i));
  assert.deepEqual(sortRows(rows, 'name', false)[0]!.name, '/lm_head/MatMul');
});
