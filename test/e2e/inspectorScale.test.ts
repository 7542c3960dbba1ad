// End to end at real depth: a narrow LLaMA-shaped model with 22 decoder blocks (TinyLlama's depth,
// width 32 so it compresses in seconds) is compressed by the real CLI (obr-gptq W4A16 + 50%, two
// baselines), and its report is opened in the inspector in a real VS Code (code-server) and
// chromium. The error chart groups the 154 layers into 22 blocks and zooms, pans and drills down
// to one block; the layer table draws only the rows in view, filters by text and block range and
// sorts by a loss column; selecting a layer fetches its weights from the compressed model.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Frame } from 'playwright-core';
import { encodeModel } from '../../src/onnx/proto';
import type { CompressionReport } from '../../src/protocol/report';
import { buildLlamaGraph } from '../unit/onnx/llamaGraph';
import { inkedPixels, inspectorFrame, prerequisites, ROOT, start, until, type Session } from './harness';

const missing = prerequisites();
const BLOCKS = 22;
const FOLDER = 'llama22';

/** Writes the 22-block model (+ the bundled tokenizer and a config.json) and compresses it with the CLI. */
function compressDeepModel(workspace: string): { reportFile: string; seconds: number } {
  const dir = join(workspace, FOLDER);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'model.onnx'), encodeModel(buildLlamaGraph({ layers: BLOCKS, hidden: 32, heads: 2, intermediate: 64, vocab: 2048, seed: 22 })));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(ROOT, 'test', 'fixtures', 'models', 'tiny', f), join(dir, f));
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({ model_type: 'llama', hidden_size: 32, intermediate_size: 64, num_hidden_layers: BLOCKS, num_attention_heads: 2, num_key_value_heads: 2, vocab_size: 2048, max_position_embeddings: 64 }),
  );
  const t0 = performance.now();
  const args = ['compress', join(dir, 'model.onnx'), '--recipe', 'obr-gptq', '--sparsity', '0.5', '--abits', '16', '--kvbits', '16', '--samples', '4', '--seqlen', '32', '--eval-windows', '2', '--baselines', 'wanda-rtn,rtn', '--ep', 'cpu', '--yes'];
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'cli.js'), ...args], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, `obr compress failed (exit ${r.status}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-3000)}`);
  const report = readdirSync(dir).find((f) => f.endsWith('.report.json'));
  assert.ok(report, `a report in ${readdirSync(dir).join(', ')}`);
  return { reportFile: join(dir, report), seconds: (performance.now() - t0) / 1000 };
}

/** What the error chart shows: its view, its categories (from the canvas's description) and the window text. */
async function chart(inspector: Frame): Promise<{ view: string; categories: number; labels: string; window: string }> {
  return (await inspector.evaluate(`(() => {
    const c = document.getElementById('error-chart');
    const label = c.getAttribute('aria-label') ?? '';
    const m = /— (\\d+) categories: (.*)$/.exec(label);
    return { view: c.dataset.view ?? '', categories: m ? Number(m[1]) : 0, labels: m ? m[2] : '', window: document.getElementById('chart-window')?.textContent ?? '' };
  })()`)) as { view: string; categories: number; labels: string; window: string };
}

/** The drawn rows of the layer table (cells' text), and the "N of M layers" count. */
async function table(inspector: Frame): Promise<{ rows: string[][]; count: string }> {
  return (await inspector.evaluate(`({
    rows: Array.from(document.querySelectorAll('vscode-data-grid-row[data-layer]')).map((row) => Array.from(row.querySelectorAll('vscode-data-grid-cell')).map((c) => c.textContent)),
    count: document.getElementById('layer-count')?.textContent ?? '',
  })`)) as { rows: string[][]; count: string };
}

test('inspect the report of a 22-block model: block chart with zoom, light filterable table', { skip: missing, timeout: 12 * 60_000 }, async () => {
  let s: Session | undefined;
  let compressed: { reportFile: string; seconds: number } | undefined;
  try {
    s = await start({ 'obr.executionProviders': ['cpu'] }, { logName: 'code-server-inspector-scale', prepare: (ws) => void (compressed = compressDeepModel(ws)) });
    const { page } = s;
    const report = JSON.parse(readFileSync(compressed!.reportFile, 'utf8')) as CompressionReport;
    assert.equal(report.layers.length, BLOCKS * 7);
    assert.equal(new Set(report.layers.map((l) => l.block)).size, BLOCKS);
    assert.ok(report.layers.every((l) => (l.rowScales?.length ?? 0) === l.rows), 'the report on disk has per-row scales');

    // Open the report from the explorer: the folder, then the file (its default editor is the inspector).
    const row = (name: string) => page.locator('.explorer-folders-view .monaco-list-row').filter({ has: page.locator('.label-name', { hasText: new RegExp(`^${name.replace(/\./g, '\\.')}$`) }) }).first();
    // The workbench knows the inspector as the report's editor once it has read the extension's
    // manifest (its activity-bar entry shows then); a report opened earlier opens as JSON, whose
    // editor title has the "Open Inspector" action.
    await page.locator('.activitybar .action-item a[aria-label="OBR Studio"]').first().waitFor({ timeout: 120_000 });
    await row(FOLDER).click({ timeout: 90_000 });
    const reportName = compressed!.reportFile.split('/').pop()!;
    await row(reportName).click({ timeout: 60_000 });
    const inspector = await until('the inspector of the report', 120_000, async () => {
      const frame = await inspectorFrame(page, 3_000).catch(() => undefined);
      if (frame) return frame;
      const action = page.locator('.editor-actions .action-label[aria-label^="Open Inspector"]');
      if (await action.first().isVisible().catch(() => false)) await action.first().click();
      return undefined;
    }, 1_000);

    // ---- the error chart: one group per block, 7 roles, a line per recipe
    const whole = await until('the block chart', 60_000, async () => {
      const c = await chart(inspector);
      return c.categories > 0 ? c : undefined;
    });
    assert.equal(whole.view, 'blocks');
    assert.equal(whole.categories, BLOCKS, JSON.stringify(whole));
    assert.equal(whole.labels, Array.from({ length: BLOCKS }, (_, i) => i).join(', '));
    assert.equal(whole.window, `blocks 0–${BLOCKS - 1} of 0–${BLOCKS - 1}`);
    const series = (await inspector.locator('#error-chart').getAttribute('aria-label')) ?? '';
    assert.match(series, /^series: q; k; v; o; gate; up; down; obr-gptq Σ block; wanda-rtn Σ block; rtn Σ block —/);
    assert.ok((await inkedPixels(inspector, 'error-chart')) > 500);
    await inspector.locator('#errors').scrollIntoViewIfNeeded();
    await s.shot('10-inspector-22-blocks');

    // Zoom in with the button (half the blocks, around the middle), then Ctrl + wheel over the chart.
    await inspector.locator('#chart-zoom-in').click();
    const zoomed = await until('the zoomed chart', 30_000, async () => {
      const c = await chart(inspector);
      return c.categories === 11 ? c : undefined;
    });
    assert.equal(zoomed.labels, '6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16');
    assert.equal(zoomed.window, `blocks 6–16 of 0–${BLOCKS - 1}`);
    const box = (await inspector.locator('#error-chart').boundingBox())!;
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.keyboard.down('Control');
    await page.mouse.wheel(0, -120);
    await page.keyboard.up('Control');
    await until('the chart zoomed by the wheel', 30_000, async () => ((await chart(inspector)).categories < 11 ? true : undefined));
    // Drag to the left: later blocks come into view.
    const before = await chart(inspector);
    await page.mouse.move(box.x + box.width * 0.7, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.2, box.y + box.height / 2, { steps: 8 });
    await page.mouse.up();
    const panned = await until('the chart panned by dragging', 30_000, async () => {
      const c = await chart(inspector);
      return c.window !== before.window ? c : undefined;
    });
    assert.ok(Number(panned.labels.split(', ')[0]) > Number(before.labels.split(', ')[0]), `${before.labels} → ${panned.labels}`);
    assert.equal(panned.categories, before.categories, 'panning keeps the zoom');
    await s.shot('11-inspector-zoomed');
    // Double-click a block (the one in the middle): its seven layers, by layer.
    await inspector.locator('#error-chart').dblclick({ position: { x: box.width / 2, y: box.height / 2 } });
    const drilled = await until('one block by layer', 30_000, async () => {
      const c = await chart(inspector);
      return c.view === 'layers' ? c : undefined;
    });
    assert.equal(drilled.categories, 7, JSON.stringify(drilled));
    const block = /^(\d+)\.q, \1\.k, \1\.v, \1\.o, \1\.gate, \1\.up, \1\.down$/.exec(drilled.labels);
    assert.ok(block && panned.labels.split(', ').includes(block[1]!), `${drilled.labels} is a block of ${panned.labels}`);
    assert.equal(drilled.window, `blocks ${block[1]} of 0–${BLOCKS - 1}`);
    await s.shot('12-inspector-one-block');
    // Back to the blocks as they were, then every block.
    await inspector.locator('#chart-back').click();
    const back = await until('the blocks again', 30_000, async () => {
      const c = await chart(inspector);
      return c.view === 'blocks' ? c : undefined;
    });
    assert.equal(back.window, panned.window);
    await inspector.locator('#chart-reset').click();
    await until('every block again', 30_000, async () => ((await chart(inspector)).categories === BLOCKS ? true : undefined));

    // ---- the layer table: all layers counted, only the rows in view drawn
    const t0 = await until('the layer table', 30_000, async () => {
      const t = await table(inspector);
      return t.rows.length > 0 ? t : undefined;
    });
    assert.equal(t0.count, `${BLOCKS * 7} layers`);
    assert.ok(t0.rows.length < 60, `${t0.rows.length} rows drawn of ${BLOCKS * 7}`);
    // Scrolled to the end, the last layers are drawn.
    await inspector.evaluate(`document.querySelector('#layers .grid-host').scrollTop = 1e6`);
    await until('the last layer drawn', 30_000, async () => ((await table(inspector)).rows.some((r) => r[2] === report.layers.at(-1)!.name) ? true : undefined));

    // Filter by text (debounced): the down projections only.
    await inspector.locator('#layer-filter input').fill('down_proj');
    const downs = await until('22 down projections', 30_000, async () => {
      const t = await table(inspector);
      return t.count === `${BLOCKS} of ${BLOCKS * 7} layers` ? t : undefined;
    });
    assert.ok(downs.rows.every((r) => r[3] === 'down'), JSON.stringify(downs.rows.map((r) => r[3])));
    // And by block range: blocks 3–5.
    await inspector.locator('#layer-filter input').fill('');
    await inspector.locator('#layer-blocks input').fill('3-5');
    const range = await until('blocks 3–5', 30_000, async () => {
      const t = await table(inspector);
      return t.count === `21 of ${BLOCKS * 7} layers` ? t : undefined;
    });
    assert.deepEqual([...new Set(range.rows.map((r) => r[1]))], ['3', '4', '5']);
    // Sort by Total/E, largest first: the drawn order is the report's order of total / energy.
    await inspector.locator('vscode-data-grid-cell[data-key="total"]').click();
    const expected = report.layers
      .filter((l) => l.block! >= 3 && l.block! <= 5)
      .map((l) => ({ name: l.name, rel: l.loss.total / l.loss.outputEnergy }))
      .sort((a, b) => b.rel - a.rel)
      .map((l) => l.name);
    const sorted = await until('the table sorted by total loss', 30_000, async () => {
      const t = await table(inspector);
      return t.rows[0]?.[2] === expected[0] ? t : undefined;
    });
    assert.deepEqual(sorted.rows.map((r) => r[2]), expected);
    await inspector.locator('#layers').scrollIntoViewIfNeeded();
    await s.shot('13-inspector-filtered-sorted');

    // Selecting a row fetches that layer's weights from the compressed model (mask heatmap).
    await inspector.locator('vscode-data-grid-row[data-layer]').nth(2).click();
    await until('the selected layer', 30_000, async () => ((await inspector.locator('#layer h3').innerText()).includes(expected[2]!) ? true : undefined));
    await until('its mask', 60_000, async () => ((await inkedPixels(inspector, 'mask-heatmap')) > 50 ? true : undefined));
    await inspector.locator('#layer').scrollIntoViewIfNeeded();
    await s.shot('14-inspector-selected-layer');
    console.log(`compressed ${BLOCKS} blocks in ${compressed!.seconds.toFixed(1)} s`);
  } catch (e) {
    await s?.shot('99-inspector-scale-failure').catch(() => undefined);
    throw e;
  } finally {
    await s?.close();
  }
});
