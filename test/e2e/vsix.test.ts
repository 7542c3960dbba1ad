// The packaged extension end to end: the .vsix that `npm run package` makes is installed with
// `code-server --install-extension FILE.vsix --extensions-dir <fresh folder>`, code-server runs
// with only that folder, and the user flow runs on what was installed — right-click the tiny
// model → Compress Model… → wanda-rtn → bundled text → confirm → the worker (with the .vsix's own
// onnxruntime-node binding) compresses it → the inspector shows every layer with numbers. The job
// also runs the `obr.baselines` setting (obr-gptq on the same Hessians), and the inspector shows
// the baseline's loss series and perplexity beside the job's own. The job uses group-wise weights
// (`obr.groupSize` 32, `obr.asymmetric`), so the inspector shows the Group column and the selected
// row's groups with their scales and zero points, read from the packed model.
import assert from 'node:assert/strict';
import { lstatSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { CompressionReport } from '../../src/protocol/report';
import { inspectorFrame, layerRows, listFiles, packagedVsix, prerequisites, RESULTS, start, startCompress, until, type Session } from './harness';

const missing = prerequisites();

test('the packaged .vsix installs into code-server and compresses, inspects and compares with a baseline', { skip: missing, timeout: 20 * 60_000 }, async (t) => {
  const started = performance.now();
  const vsix = packagedVsix();
  const mb = (vsix.bytes / 1024 ** 2).toFixed(1);
  t.diagnostic(`vsix: ${vsix.file} — ${vsix.bytes} bytes (${mb} MB)${vsix.packagedNow ? `, packaged by this test in ${vsix.seconds.toFixed(0)} s` : ', packaged earlier in this run'}`);
  console.log(`vsix size: ${vsix.bytes} bytes (${mb} MB)`);

  let s: Session | undefined;
  try {
    // Bundles + the linux-x64 onnxruntime binding (≈ 18 MB); the bundled demo model would add 58 MB.
    assert.ok(vsix.bytes > 5 * 2 ** 20 && vsix.bytes < 40 * 2 ** 20, `a plausible size for bundles + the linux-x64 onnxruntime binding: ${vsix.bytes} bytes`);
    s = await start(
      {
        'obr.calibrationSamples': 8,
        'obr.evaluationWindows': 16,
        'obr.executionProviders': ['cpu'],
        'obr.baselines': ['obr-gptq'],
        'obr.groupSize': 32,
        'obr.asymmetric': true,
      },
      { vsix: vsix.file, logName: 'code-server-vsix' },
    );
    const { page, workspace, extensionDir } = s;
    // What runs is what the .vsix holds: bundles, media and a real (not linked) native binding.
    for (const f of ['package.json', 'dist/extension.js', 'dist/worker.js', 'dist/webview.js', 'media/inspector.css', 'node_modules/onnxruntime-node/bin/napi-v6/linux/x64/onnxruntime_binding.node']) {
      const st = lstatSync(join(extensionDir, f));
      assert.ok(st.isFile() && st.size > 0, `${f} installed from the .vsix`);
    }
    assert.deepEqual(listFiles(extensionDir).filter((f) => /^(src|test|webview|scripts)\//.test(f) || f.endsWith('.map')), [], 'no sources, tests or source maps installed');
    const before = listFiles(workspace);

    const estimate = await startCompress(page, 'wanda-rtn', [/Baselines for comparison \(obr\.baselines\): obr-gptq/]);
    t.diagnostic(`pre-flight: ${estimate.replace(/\s+/g, ' ').slice(0, 300)}`);
    const inspector = await inspectorFrame(page, 120_000);
    const done = await until('the job to finish', 12 * 60_000, async () => {
      const toasts = await page.locator('.notifications-toasts .notification-toast').allInnerTexts();
      const failed = toasts.find((x) => /OBR Studio \(/.test(x));
      if (failed) throw new Error(`the job failed: ${failed}`);
      return toasts.find((x) => /OBR: compressed model\.onnx/.test(x));
    }, 500);
    assert.match(done, /with wanda-rtn in \d+ s — perplexity/);

    // The outputs beside the model, nothing else (no baseline models, no working folder).
    const after = listFiles(workspace);
    const added = after.filter((f) => !before.includes(f));
    assert.deepEqual(added, ['model.wanda-rtn-w4-s50-g32a.packed.onnx', 'model.wanda-rtn-w4a4kv4-s50-g32a.onnx', 'model.wanda-rtn-w4a4kv4-s50-g32a.report.json']);
    const report = JSON.parse(readFileSync(join(workspace, 'model.wanda-rtn-w4a4kv4-s50-g32a.report.json'), 'utf8')) as CompressionReport;
    assert.equal(report.layers.length, 28);
    assert.ok(report.layers.every((l) => l.groupSize === 32 && l.asymmetric === true), 'the obr.groupSize / obr.asymmetric settings reached every layer');
    assert.equal(report.executionProvider.used, 'cpu');
    const baseline = report.baselines?.[0];
    assert.ok(baseline && report.baselines!.length === 1 && baseline.recipe === 'obr-gptq', 'the obr.baselines setting reached the pipeline');
    assert.equal(baseline.layers.length, 28);
    assert.ok(baseline.perplexity && Number.isFinite(baseline.perplexity.perplexity) && baseline.perplexity.windows === 16);
    const sum = (xs: Array<{ loss: { total: number } }>) => xs.reduce((a, l) => a + l.loss.total, 0);
    assert.ok(sum(report.layers) > sum(baseline.layers), `Σ wanda-rtn ${sum(report.layers)} > Σ obr-gptq ${sum(baseline.layers)} on the same Hessians`);

    // Every layer in the table, with numbers in its loss columns.
    const rows = await layerRows(inspector, report.layers.length);
    for (const cells of rows) {
      assert.equal(cells.length, 13, JSON.stringify(cells));
      for (const i of [5, 8, 9, 10, 11]) assert.match(cells[i]!, /\d/, `numeric cell ${i} in ${JSON.stringify(cells)}`);
      assert.equal(cells[7], 'g32+zp', `the Group column: ${JSON.stringify(cells)}`);
    }
    // The selected row's groups: one line per 32 input columns, each with a scale and a zero point.
    const groups = await until('the group table of the selected row', 60_000, async () => {
      const t = (await inspector.evaluate(`Array.from(document.querySelectorAll('#group-table tr')).map((r) => Array.from(r.cells).map((c) => c.textContent))`)) as string[][];
      return t.length > 2 ? t : undefined;
    });
    assert.deepEqual(groups[0]!.slice(0, 4), ['Group', 'Columns', 'Scale', 'Zero'], JSON.stringify(groups[0]));
    for (const g of groups.slice(1)) assert.match(`${g[2]} ${g[3]}`, /\d.* -?\d/, `a scale and a zero point per group: ${JSON.stringify(g)}`);
    await page.locator('.explorer-folders-view .label-name', { hasText: 'model.wanda-rtn-w4a4kv4-s50-g32a.report.json' }).first().waitFor({ timeout: 30_000 });
    await s.shot('11-vsix-inspector');

    // The baseline in the inspector: its loss series on the error chart, its bar on the perplexity
    // chart, its row in the perplexity table and in the recipe comparison.
    const label = (id: string) => inspector.evaluate(`document.getElementById(${JSON.stringify(id)})?.getAttribute('aria-label') ?? ''`) as Promise<string>;
    await until('the baseline series on the error chart', 30_000, async () => ((await label('error-chart')).includes('obr-gptq total') ? true : undefined));
    assert.match(await label('error-chart'), /series: pruning; quantization; total \(after compensation\); obr-gptq total — 28 categories/);
    await until('three bars on the perplexity chart', 30_000, async () => (/categories: dense, wanda-rtn, obr-gptq$/.test(await label('ppl-chart')) ? true : undefined));
    const timings = await inspector.locator('#timings').innerText();
    assert.match(timings, new RegExp(`obr-gptq perplexity \\(baseline\\)\\s+${baseline.perplexity.perplexity.toFixed(3)}`));
    const compare = (await inspector.evaluate(`Array.from(document.querySelectorAll('#recipes tr[data-recipe]')).map((r) => Array.from(r.cells).map((c) => c.textContent))`)) as string[][];
    assert.deepEqual(compare.map((r) => [r[0], r[1], r[6]]), [['wanda-rtn', 'this job', '28'], ['obr-gptq', 'baseline', '28']]);
    assert.equal(compare[0]![2], report.perplexity.compressed!.perplexity.toFixed(3));
    assert.equal(compare[1]![2], baseline.perplexity.perplexity.toFixed(3));
    await inspector.locator('#perplexity').scrollIntoViewIfNeeded();
    await s.shot('12-vsix-baselines');

    const seconds = (performance.now() - started) / 1000;
    writeFileSync(join(RESULTS, 'vsix.json'), JSON.stringify({ file: vsix.file, bytes: vsix.bytes, mb: Number(mb), packagedByTest: vsix.packagedNow, testSeconds: Math.round(seconds) }, null, 1) + '\n');
  } catch (e) {
    await s?.shot('99-vsix-failure').catch(() => undefined);
    throw e;
  } finally {
    await s?.close();
    vsix.dispose();
  }
});
