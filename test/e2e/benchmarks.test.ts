// End to end in a real VS Code (code-server) and a real browser (chromium): F1 → "OBR: Run
// Benchmarks" → the tiny model → only the quality and runtime suites → the Quick preset → the run
// finishes in the worker → "Show Charts" opens the inspector's Benchmarks view with the headline
// numbers and the perplexity / latency / size charts drawn; the JSON and Markdown results are
// written to benchmarks/ beside the model.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Page } from 'playwright-core';
import type { BenchResult } from '../../src/protocol/bench';
import { inkedPixels, pickExact, prerequisites, start, until, type Session } from './harness';

const missing = prerequisites();

/**
 * Runs a command from the palette (F1). The palette lists the commands known when it opens, and
 * the workbench registers the extension's contributions a little after it shows, so a palette
 * without the command is closed and opened again (bounded).
 */
async function runCommand(page: Page, title: string): Promise<void> {
  const input = page.locator('.quick-input-widget .quick-input-box input');
  const row = page.locator('.quick-input-list .monaco-list-row', { has: page.locator('.label-name', { hasText: new RegExp(`^${title}$`) }) });
  await until(`"${title}" in the command palette`, 120_000, async () => {
    await page.keyboard.press('F1');
    await input.waitFor({ state: 'visible', timeout: 10_000 });
    await input.fill(`>${title}`);
    if (await row.first().waitFor({ state: 'visible', timeout: 5_000 }).then(() => true, () => false)) return true;
    await page.keyboard.press('Escape');
    await page.waitForTimeout(1_000);
    return undefined;
  }, 0);
  await row.first().click();
}

/** In the open multi-select QuickPick, leaves exactly `keep` checked and accepts. */
async function pickMany(page: Page, keep: string[], beforeAccept?: () => Promise<unknown>): Promise<void> {
  const rows = page.locator('.quick-input-list .monaco-list-row');
  await rows.first().waitFor({ state: 'visible', timeout: 30_000 });
  await until(`only ${keep.join(', ')} checked`, 30_000, async () => {
    const state = (await page.evaluate(`Array.from(document.querySelectorAll('.quick-input-list .monaco-list-row')).map((r) => {
      const cb = r.querySelector('.quick-input-list-checkbox');
      const checked = cb ? (cb.checked === true || cb.getAttribute('aria-checked') === 'true' || cb.classList.contains('checked')) : false;
      return [r.querySelector('.label-name')?.textContent?.trim() ?? '', checked];
    })`)) as Array<[string, boolean]>;
    const wrong = state.filter(([name, checked]) => keep.includes(name) !== checked);
    if (state.length > 0 && wrong.length === 0) return true;
    for (const [name] of wrong) {
      await rows.filter({ has: page.locator('.label-name', { hasText: new RegExp(`^${name}$`) }) }).first().locator('.quick-input-list-checkbox').click();
      await page.waitForTimeout(200);
    }
    return undefined;
  }, 300);
  await beforeAccept?.();
  await page.locator('.quick-input-widget .quick-input-box input').press('Enter');
}

test('run the quick benchmarks on the tiny model and show the charts', { skip: missing, timeout: 6 * 60_000 }, async () => {
  let s: Session | undefined;
  const t0 = Date.now();
  try {
    s = await start({ 'obr.executionProviders': ['cpu'] }, { extraModelFiles: ['model_with_past.onnx'] });
    const { page, workspace } = s;
    // The extension activates on the command; the palette lists it once the manifest is read.
    await page.locator('.explorer-folders-view .monaco-list-row').first().waitFor({ timeout: 60_000 });
    await runCommand(page, 'OBR: Run Benchmarks');
    await pickExact(page, 'model.onnx', /^model\.onnx$/);
    const session = s;
    await pickMany(page, ['quality', 'runtime'], () => session.shot('10-benchmarks-suites'));
    await pickExact(page, 'Quick', /^Quick$/);

    // Running: a cancellable progress notification.
    await page.locator('.notifications-toasts .notification-toast', { hasText: 'OBR benchmarks: model.onnx' }).first().waitFor({ timeout: 60_000 });
    await s.shot('10-benchmarks-running');
    const done = page.locator('.notifications-toasts .notification-toast', { hasText: /OBR benchmarks written to/ });
    const outcome = await until('the benchmarks to finish', 180_000, async () => {
      const failed = page.locator('.notifications-toasts .notification-toast', { hasText: /OBR benchmarks failed/ });
      if ((await failed.count()) > 0) return `failed: ${await failed.first().innerText()}`;
      return (await done.count()) > 0 ? 'done' : undefined;
    }, 1000);
    assert.equal(outcome, 'done');

    // Results on disk: JSON + Markdown in benchmarks/ beside the model.
    const dir = join(workspace, 'benchmarks');
    assert.ok(existsSync(dir), 'benchmarks/ written beside the model');
    const files = readdirSync(dir);
    const json = files.find((f) => /^bench-.*\.json$/.test(f));
    const md = files.find((f) => /^bench-.*\.md$/.test(f));
    assert.ok(json && md, `JSON and Markdown results: ${files.join(', ')}`);
    assert.ok(files.includes('history.jsonl'), `history.jsonl: ${files.join(', ')}`);
    const result = JSON.parse(readFileSync(join(dir, json), 'utf8')) as BenchResult;
    assert.ok(result.quality && result.quality.runs.length === 2, 'quality: two recipes');
    assert.ok(result.runtime, 'runtime suite measured');
    const markdown = readFileSync(join(dir, md), 'utf8');
    assert.match(markdown, /perplexity/i);
    assert.match(markdown, /dense vs packed/i);

    // Show Charts → the inspector's Benchmarks view.
    await done.first().locator('.monaco-button', { hasText: 'Show Charts' }).click();
    const view = await until('the Benchmarks view', 60_000, async () => {
      for (const f of page.frames()) {
        try {
          if (await f.evaluate(`(() => { const b = document.getElementById('benchmarks'); return !!b && !b.hidden && !!b.querySelector('table.bench-headlines'); })()`)) return f;
        } catch {
          /* detached or cross-origin frame */
        }
      }
      return undefined;
    });
    const text = await view.locator('#benchmarks').innerText();
    assert.match(text, /OBR: Run Benchmarks \(Quick, quality,runtime\)/);
    const headlines = (await view.evaluate(`Array.from(document.querySelectorAll('table.bench-headlines tr')).map((r) => [r.querySelector('th').textContent, r.querySelector('td').textContent])`)) as Array<[string, string]>;
    const value = (label: RegExp): string => headlines.find(([l]) => label.test(l))?.[1] ?? '';
    assert.match(value(/^dense perplexity$/), /^\d+\.\d{3}$/, JSON.stringify(headlines));
    assert.match(value(/^best recipe$/), /W4: \d+\.\d{3}$/, JSON.stringify(headlines));
    assert.match(value(/^packed \/ dense size$/), /^\d+(\.\d)?%$/, JSON.stringify(headlines));
    assert.match(value(/^prefill speed packed vs dense$/), /^\d+\.\d\d×$/, JSON.stringify(headlines));
    assert.match(value(/^dense perplexity$/), new RegExp(`^${result.quality.dense.perplexity.toFixed(3).replace('.', '\\.')}$`));
    for (const id of ['bench-ppl-chart', 'bench-latency-chart', 'bench-size-chart']) {
      const n = await until(`canvas #${id} drawn`, 60_000, async () => {
        const px = await inkedPixels(view, id);
        return px > 200 ? px : undefined;
      });
      assert.ok(n > 200, `${id}: ${n} pixels`);
    }
    // Suites not run have no charts.
    assert.equal(await view.locator('#bench-speed').count(), 0);
    assert.equal(await view.locator('#bench-core').count(), 0);
    await s.shot('10-benchmarks-view');
    await view.locator('#bench-size').scrollIntoViewIfNeeded();
    await s.shot('10-benchmarks-view-size');
    console.log(`benchmarks e2e: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    await s?.shot('99-benchmarks-failure').catch(() => undefined);
    throw e;
  } finally {
    await s?.close();
  }
});
