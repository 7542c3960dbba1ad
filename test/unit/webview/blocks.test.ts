// The inspector's block grouping, zoom/pan window and block ranges (webview/src/views/blocks.ts):
// pure functions, tested in Node on layers whose losses are chosen so the expected block sums can
// be written down by hand.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LayerLoss, LayerRole } from '../../../src/protocol/report';
import type { LayerSummary } from '../../../src/protocol/webview';
import {
  blockBounds,
  blockChartData,
  clampWindow,
  layersInWindow,
  panWindow,
  parseBlockRange,
  zoomWindow,
} from '../../../webview/src/views/blocks';

const ROLES: LayerRole[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

function loss(total: number, outputEnergy: number, pruning = 0, quantization = 0): LayerLoss {
  return { total, pruning, quantization, recovered: pruning + quantization - total, outputEnergy };
}

function layer(block: number | null, role: LayerRole, l: LayerLoss, name?: string): LayerSummary {
  return {
    name: name ?? (block === null ? `/${role}/MatMul` : `/model/layers.${block}/${role}/MatMul`),
    block,
    role,
    rows: 8,
    cols: 8,
    sparsity: 0.5,
    wbits: 4,
    loss: l,
    seconds: 0.1,
    codeHistogram: [],
  };
}

/** `blocks` LLaMA blocks of 7 layers; layer i of block b has total loss (b + 1)·(i + 1) on energy 100. */
function model(blocks: number, withHead = true): LayerSummary[] {
  const out: LayerSummary[] = [];
  for (let b = 0; b < blocks; b++) ROLES.forEach((r, i) => out.push(layer(b, r, loss((b + 1) * (i + 1), 100, 2 * (b + 1) * (i + 1), (b + 1) * (i + 1)))));
  if (withHead) out.push(layer(null, 'lm_head', loss(5, 50)));
  return out;
}

test('block bounds skip layers outside blocks', () => {
  assert.deepEqual(blockBounds(model(22)), { first: 0, last: 21 });
  assert.equal(blockBounds([layer(null, 'lm_head', loss(1, 1))]), undefined);
});

test('zoom keeps the pointed block in place and never shows fewer than one block', () => {
  const b = { first: 0, last: 21 };
  const all = { from: 0, to: 21 };
  assert.deepEqual(zoomWindow(all, b, 0.5), { from: 6, to: 16 }, 'around the middle (block 10.5)');
  assert.deepEqual(zoomWindow(all, b, 0.5, 0), { from: 0, to: 10 }, 'around block 0');
  assert.deepEqual(zoomWindow(all, b, 0.5, 21), { from: 11, to: 21 }, 'around the last block');
  assert.deepEqual(zoomWindow({ from: 6, to: 16 }, b, 2), all, 'zooming out again shows everything');
  let w = all;
  for (let i = 0; i < 10; i++) w = zoomWindow(w, b, 0.5, 13);
  assert.deepEqual(w, { from: 13, to: 13 });
  // A factor that would round to the same width still changes it by one block.
  assert.deepEqual(zoomWindow({ from: 3, to: 4 }, b, 0.9), { from: 4, to: 4 });
  assert.deepEqual(zoomWindow({ from: 4, to: 4 }, b, 1.1), { from: 4, to: 5 });
});

test('pan moves by whole blocks and stops at the ends with the same width', () => {
  const b = { first: 0, last: 31 };
  assert.deepEqual(panWindow({ from: 4, to: 9 }, b, 3), { from: 7, to: 12 });
  assert.deepEqual(panWindow({ from: 4, to: 9 }, b, 100), { from: 26, to: 31 });
  assert.deepEqual(panWindow({ from: 4, to: 9 }, b, -100), { from: 0, to: 5 });
  assert.deepEqual(clampWindow({ from: 9, to: 4 }, b), { from: 4, to: 9 }, 'reversed ends');
  assert.deepEqual(clampWindow({ from: -5, to: 50 }, b), { from: 0, to: 31 }, 'wider than the model');
});

test('block ranges as typed', () => {
  assert.deepEqual(parseBlockRange(''), {});
  assert.deepEqual(parseBlockRange(' 7 '), { from: 7, to: 7 });
  assert.deepEqual(parseBlockRange('3-9'), { from: 3, to: 9 });
  assert.deepEqual(parseBlockRange('3 – 9'), { from: 3, to: 9 });
  assert.deepEqual(parseBlockRange('3..9'), { from: 3, to: 9 });
  assert.deepEqual(parseBlockRange('3 to 9'), { from: 3, to: 9 });
  assert.deepEqual(parseBlockRange('9-3'), { from: 3, to: 9 });
  assert.deepEqual(parseBlockRange('12-'), { from: 12, to: undefined });
  assert.deepEqual(parseBlockRange('-5'), { from: undefined, to: 5 });
  for (const bad of ['-', 'a', '3-x', '1,2', '1.5']) assert.equal(parseBlockRange(bad), undefined, bad);
});

test('the layer view of a window: its blocks in report order, lm_head only when the window reaches the end', () => {
  const layers = model(22);
  const b = blockBounds(layers);
  const mid = layersInWindow(layers, { from: 3, to: 4 }, b);
  assert.equal(mid.length, 14);
  assert.deepEqual([...new Set(mid.map((l) => l.block))], [3, 4]);
  const end = layersInWindow(layers, { from: 21, to: 21 }, b);
  assert.deepEqual(end.map((l) => l.role), [...ROLES, 'lm_head']);
});

test('block view: one category per block, a series per role, recipes summed per block', () => {
  const layers = model(22);
  // The baseline's total is twice ours on every layer, except that it has no loss for block 1's q.
  const baseline = {
    recipe: 'wanda-rtn' as const,
    layers: layers.filter((l) => !(l.block === 1 && l.role === 'q')).map((l) => ({ name: l.name, loss: { ...l.loss, total: 2 * l.loss.total } })),
  };
  const d = blockChartData(layers, [baseline], 'obr-gptq', { from: 0, to: 21 }, 'total');
  assert.equal(d.labels.length, 23);
  assert.deepEqual(d.labels.slice(0, 3), ['0', '1', '2']);
  assert.equal(d.labels[22], 'other');
  assert.deepEqual(d.blocks[22], null);
  assert.deepEqual(d.roles.map((r) => r.role), [...ROLES, 'lm_head']);
  // Role i of block b: (b + 1)(i + 1) / 100.
  const down = d.roles[6]!;
  assert.equal(down.data[0], 0.07);
  assert.equal(down.data[21], (22 * 7) / 100);
  assert.equal(down.data[22], null, 'no down layer outside blocks');
  assert.equal(down.layers[5], '/model/layers.5/down/MatMul');
  assert.equal(d.roles[7]!.data[22], 0.1, 'lm_head: 5 / 50');
  // Block b sums (b + 1)(1 + … + 7) = 28(b + 1) over 700 of energy.
  assert.deepEqual(d.recipes.map((r) => r.recipe), ['obr-gptq', 'wanda-rtn']);
  assert.ok(Math.abs(d.recipes[0]!.data[3]! - (28 * 4) / 700) < 1e-15);
  assert.ok(Math.abs(d.recipes[1]!.data[3]! - (2 * 28 * 4) / 700) < 1e-15);
  // Block 1 without its q layer: 2 · 2 · (28 − 1) over 600.
  assert.ok(Math.abs(d.recipes[1]!.data[1]! - (2 * 2 * 27) / 600) < 1e-15);

  // Other metrics: pruning alone (2·), and the baseline's own totals as the bars.
  const pruning = blockChartData(layers, [baseline], 'obr-gptq', { from: 0, to: 21 }, 'pruning');
  assert.equal(pruning.roles[0]!.data[2], 0.06);
  const base = blockChartData(layers, [baseline], 'obr-gptq', { from: 0, to: 21 }, 'baseline:wanda-rtn');
  assert.equal(base.roles[1]!.data[2], 0.12);
  assert.equal(base.roles[0]!.data[1], null, 'no baseline loss for that layer');
});

test('block view of a zoomed window has only its blocks; a role twice in a block gets a second series', () => {
  const layers = model(32);
  const d = blockChartData(layers, undefined, 'rtn', { from: 10, to: 14 }, 'total');
  assert.deepEqual(d.labels, ['10', '11', '12', '13', '14']);
  assert.equal(d.recipes.length, 1);
  const twice = [layer(0, 'other', loss(1, 10), 'a'), layer(0, 'other', loss(2, 10), 'b'), layer(1, 'other', loss(3, 10), 'c')];
  const t = blockChartData(twice, undefined, 'rtn', { from: 0, to: 1 }, 'total');
  assert.deepEqual(t.roles.map((r) => [r.role, r.data, r.layers]), [
    ['other', [0.1, 0.3], ['a', 'c']],
    ['other #2', [0.2, null], ['b', null]],
  ]);
});

test('zero or negative losses are left out of the log-scale bars instead of drawn at the axis', () => {
  const layers = [layer(0, 'q', loss(0, 10)), layer(0, 'k', loss(1, 0))];
  const d = blockChartData(layers, undefined, 'rtn', { from: 0, to: 0 }, 'total');
  assert.deepEqual(d.roles.map((r) => r.data[0]), [null, null]);
  assert.deepEqual(d.recipes[0]!.data, [0.1]);
});
