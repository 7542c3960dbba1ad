// End to end in a real VS Code (code-server) and a real browser (chromium): right-click the tiny
// model → Compress Model… → recipe → calibration text → confirm the estimate → the job runs in
// the worker → the inspector shows every layer with numbers, the error chart, the mask heatmap
// and the quantization grid; then a second job is cancelled and leaves no partial files.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { CompressionReport } from '../../src/protocol/report';
import { explorerAction, inkedPixels, inspectorFrame, layerRows, listFiles, notification, pickExact, prerequisites, start, startCompress, until, type Session } from './harness';

const missing = prerequisites();

test('compress the tiny model from the explorer, inspect it, then cancel a second job', { skip: missing, timeout: 25 * 60_000 }, async () => {
  let s: Session | undefined;
  try {
    s = await start({
      'obr.calibrationSamples': 8,
      'obr.evaluationWindows': 16,
      'obr.executionProviders': ['cpu'],
    });
    const { page, workspace } = s;
    const before = listFiles(workspace);

    // ---- first job: wanda-rtn, to completion
    await startCompress(page, 'wanda-rtn');
    const inspector = await inspectorFrame(page, 120_000);
    await s.shot('01-running');
    // Live updates: while the job runs, finished layers fill the table under a "Running" banner.
    let liveRows = 0;
    const done = await until('the job to finish', 15 * 60_000, async () => {
      const live = (await inspector.evaluate(`(() => {
        const status = document.getElementById('job-status');
        return status && /Running/.test(status.textContent) ? document.querySelectorAll('vscode-data-grid-row[data-layer]').length : 0;
      })()`).catch(() => 0)) as number;
      liveRows = Math.max(liveRows, live);
      const toasts = await page.locator('.notifications-toasts .notification-toast').allInnerTexts();
      return toasts.find((t) => /OBR: compressed model\.onnx/.test(t));
    }, 500);
    assert.ok(liveRows > 0, 'layers appeared in the inspector while the job was running');
    assert.match(done, /perplexity/);
    const reportName = listFiles(workspace).find((f) => f.endsWith('.report.json'));
    assert.ok(reportName, `a report was written: ${listFiles(workspace).join(', ')}`);
    const report = JSON.parse(readFileSync(join(workspace, reportName), 'utf8')) as CompressionReport;
    assert.ok(report.layers.length > 0);

    // Every layer in the table, with numbers in its loss columns.
    const rows = await layerRows(inspector, report.layers.length);
    for (const cells of rows) {
      assert.equal(cells.length, 13, JSON.stringify(cells));
      for (const i of [5, 8, 9, 10, 11]) assert.match(cells[i]!, /\d/, `numeric cell ${i} in ${JSON.stringify(cells)}`);
      assert.equal(cells[7], 'row', `per-row scales in the Group column: ${JSON.stringify(cells)}`);
    }
    // Charts and canvases drawn (not blank): error chart, mask heatmap, quantization grid, perplexity.
    for (const id of ['error-chart', 'mask-heatmap', 'quant-grid', 'scale-chart', 'ppl-chart']) {
      const n = await until(`canvas #${id} drawn`, 60_000, async () => ((await inkedPixels(inspector, id)) > 50 ? inkedPixels(inspector, id) : undefined));
      assert.ok(n > 50, `${id}: ${n} pixels`);
    }
    const summary = await inspector.locator('#mask-summary').innerText();
    assert.match(summary, /kept 50\.0%/);
    await s.shot('02-inspector');

    // Selecting another layer re-draws the views below.
    await inspector.locator('vscode-data-grid-row[data-layer]').nth(4).click();
    await until('the selected layer to change', 30_000, async () => ((await inspector.locator('#layer h3').innerText()).includes(report.layers[4]!.name) ? true : undefined));
    await until('the new mask', 60_000, async () => ((await inkedPixels(inspector, 'mask-heatmap')) > 50 ? true : undefined));
    await s.shot('03-inspector-layer');
    await inspector.locator('#perplexity').scrollIntoViewIfNeeded();
    await s.shot('04-inspector-perplexity');

    // Sensitivity computed in the worker on demand, then charted.
    await inspector.locator('#sensitivity vscode-button', { hasText: 'Compute sensitivity' }).click();
    await until('the sensitivity chart', 6 * 60_000, async () => ((await inkedPixels(inspector, 'sens-chart')) > 50 ? true : undefined), 1000);
    await inspector.locator('#sensitivity').scrollIntoViewIfNeeded();
    await s.shot('04b-sensitivity');

    // Reload the window: the serializer restores the panel from the webview state (same report,
    // same selected layer), and the sensitivity stored in the report is drawn again.
    await page.reload({ timeout: 60_000 });
    await page.locator('.monaco-workbench').waitFor({ timeout: 120_000 });
    const restored = await inspectorFrame(page, 120_000);
    await until('the restored selection', 60_000, async () => ((await restored.locator('#layer h3').innerText()).includes(report.layers[4]!.name) ? true : undefined));
    await until('the restored sensitivity chart', 60_000, async () => ((await inkedPixels(restored, 'sens-chart')) > 50 ? true : undefined));
    await until('the restored mask', 60_000, async () => ((await inkedPixels(restored, 'mask-heatmap')) > 50 ? true : undefined));
    await s.shot('04c-restored-after-reload');

    // ---- second job: cancelled while it runs; the folder must be as it was after the first job
    const afterFirst = listFiles(workspace);
    assert.ok(afterFirst.length > before.length);
    await startCompress(page, 'obr-gptq');
    const cancel = page.locator('.notifications-toasts .notification-toast', { hasText: 'OBR: compressing model.onnx' }).locator('.monaco-button', { hasText: 'Cancel' });
    await cancel.first().waitFor({ timeout: 60_000 });
    await page.waitForTimeout(1500);
    await s.shot('05-second-job-running');
    await cancel.first().click();
    await notification(page, /compression of model\.onnx was cancelled/, 120_000);
    await s.shot('06-cancelled');
    const afterCancel = await until('the working folder to be removed', 30_000, () => {
      const files = listFiles(workspace);
      return files.some((f) => /obr-partial|\.tmp$|\.partial$/.test(f)) ? undefined : files;
    });
    assert.deepEqual(afterCancel, afterFirst, 'a cancelled job leaves no files behind');

    // ---- Inspect Model: the source model's linear layers and weight statistics
    await explorerAction(page, 'model.onnx', 'Inspect Model');
    const modelView = await until('the model inspector', 60_000, async () => {
      for (const f of page.frames()) {
        try {
          if ((await f.evaluate(`document.title`)) === 'Inspect: model.onnx' && (await f.locator('vscode-data-grid-row[data-layer]').count()) > 0) return f;
        } catch {
          /* detached frame */
        }
      }
      return undefined;
    });
    const modelRows = await modelView.locator('vscode-data-grid-row[data-layer]').count();
    assert.ok(modelRows >= report.layers.length, `${modelRows} linear layers listed`);
    await until('the crest chart', 30_000, async () => ((await inkedPixels(modelView, 'error-chart')) > 50 ? true : undefined));
    await s.shot('07-inspect-model');

    // ---- Models view: the model with its outputs and report
    await page.locator('.activitybar .action-item a[aria-label="OBR Studio"]').first().click();
    const tree = page.locator('.pane-body .monaco-list-row', { hasText: 'report.json' });
    await tree.first().waitFor({ timeout: 30_000 });
    await s.shot('08-models-view');

    // Theme: switching to a light theme re-colours the inspector (VS Code CSS variables).
    await page.keyboard.press('F1');
    await pickExact(page, '>Preferences: Color Theme', /^Preferences: Color Theme/);
    await pickExact(page, 'Light Modern', /^Light Modern/);
    await until('the light theme in the webview', 60_000, async () => ((await modelView.evaluate(`document.body.classList.contains('vscode-light')`)) ? true : undefined));
    await until('the re-drawn crest chart', 30_000, async () => ((await inkedPixels(modelView, 'error-chart')) > 50 ? true : undefined));
    await s.shot('09-light-theme');
  } catch (e) {
    await s?.shot('99-failure').catch(() => undefined);
    throw e;
  } finally {
    await s?.close();
  }
});
