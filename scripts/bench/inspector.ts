// Benchmark: how the inspector webview (dist/webview.js) copes with real-size reports. A report of
// a model with N decoder blocks × 7 layers (+ baselines) is loaded into headless chromium with a
// stand-in for VS Code's webview API (it answers `ready` with the snapshot the host would send);
// the time to the first full render, to apply a table filter, to sort, and to zoom the error chart
// is measured in the page (performance.now around the DOM updates, waited on with rAF), median of
// a few repetitions. Writes bench-results/inspector.json.
//
// The report: a real one (`--report FILE`, e.g. a 22-block model compressed by `obr compress`), or
// by default a synthetic one whose layer losses are random (values don't change the DOM work).
// Its layers are repeated with renamed blocks to reach each `--blocks` depth.
//
// `--compare FILE` measures another build of the webview bundle (e.g. the one before this
// change) in the same run, alternating with dist/webview.js, so the two are compared under the
// same machine load.
//
// Usage: node --import tsx scripts/bench/inspector.ts [--blocks 22,32,64] [--baselines 2] [--report FILE] [--reps 5] [--compare OLD/webview.js]
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import type { CompressionReport, LayerReport, LayerRole } from '../../src/protocol/report';
import { summarizeReport, type InspectorSnapshot } from '../../src/protocol/webview';

const ROOT = resolve(__dirname, '..', '..');
const { values } = parseArgs({
  options: {
    blocks: { type: 'string' },
    baselines: { type: 'string' },
    report: { type: 'string' },
    reps: { type: 'string' },
    compare: { type: 'string' },
  },
});
const depths = (values.blocks ?? '22,32').split(',').map(Number);
const baselineCount = Number(values.baselines ?? 2);
const reps = Number(values.reps ?? 5);
const ROLES: LayerRole[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

function rand(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

/** A report with `blocks` blocks: the given report's block layers cycled, or synthetic ones. */
function reportOf(blocks: number, base: CompressionReport | undefined): CompressionReport {
  const r = rand(blocks);
  const template = base?.layers.filter((l) => l.block !== null) ?? [];
  const perBlock = template.length ? Math.max(...template.map((l) => l.block!)) + 1 : 0;
  const layers: LayerReport[] = [];
  for (let b = 0; b < blocks; b++) {
    for (const [i, role] of ROLES.entries()) {
      const t = template.length ? template.find((l) => l.block === b % perBlock && l.role === role) : undefined;
      const energy = 1 + r() * 100;
      const loss = t?.loss ?? { pruning: energy * r() * 0.1, quantization: energy * r() * 0.05, total: energy * r() * 0.04, recovered: 0, outputEnergy: energy };
      const rows = role === 'gate' || role === 'up' ? 5632 : role === 'k' || role === 'v' ? 256 : 2048;
      const cols = role === 'down' ? 5632 : 2048;
      layers.push({
        name: t ? t.name.replace(/layers\.\d+/, `layers.${b}`) : `/model/layers.${b}/${i < 4 ? 'self_attn' : 'mlp'}/${role}_proj/MatMul`,
        block: b,
        role,
        // TinyLlama-1.1B's shapes (the table shows them; the per-row scales below are that long).
        rows,
        cols,
        sparsity: t?.sparsity ?? 0.5,
        wbits: 4,
        groupSize: 0,
        asymmetric: false,
        loss,
        seconds: t?.seconds ?? r() * 30,
        codeHistogram: t?.codeHistogram ?? Array.from({ length: 16 }, () => Math.floor(r() * 1e5)),
        // A real report has one scale per output row: the snapshot must not carry them.
        rowScales: Array.from({ length: rows }, () => Number(r().toPrecision(6))),
      });
    }
  }
  const dense = { perplexity: 8, nll: 2, windows: 4, tokens: 2048, seqlen: 512, text: 'wikitext-2-test.raw', seconds: 1 };
  const recipes = ['wanda-rtn', 'sparsegpt-gptq', 'rtn', 'gptq', 'obr-rtn'] as const;
  return {
    schemaVersion: 1,
    tool: { name: 'obr-studio', version: 'bench' },
    createdAt: new Date(0).toISOString(),
    source: { path: '/bench/model.onnx', bytes: 1, sha256: '' },
    outputs: { report: '/bench/model.report.json' },
    recipe: 'obr-gptq',
    options: { sparsity: '0.5' },
    calibration: { text: 'bundled', sha256: '', samples: 32, seqlen: 512, tokens: 16384, mode: 'sequential' },
    executionProvider: { used: 'cpu', tried: [{ name: 'cpu' }] },
    layers,
    perplexity: { dense, compressed: { ...dense, perplexity: 9 } },
    baselines: recipes.slice(0, baselineCount).map((recipe) => ({
      recipe,
      perplexity: { ...dense, perplexity: 10 },
      layers: layers.map((l) => ({ name: l.name, loss: { ...l.loss, total: l.loss.total * (1 + r()) } })),
    })),
    timings: { total: 1 },
    warnings: [],
  };
}

interface Measured {
  webview: string;
  blocks: number;
  layers: number;
  snapshotBytes: number;
  fullReportBytes: number;
  firstRenderMs: number;
  filterMs: number;
  sortMs: number;
  zoomMs: number | null;
  tableRowsInDom: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const base = values.report ? (JSON.parse(readFileSync(values.report, 'utf8')) as CompressionReport) : undefined;
  const browser = await chromium.launch({ executablePath: process.env['OBR_E2E_CHROMIUM'] ?? '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  const results: Measured[] = [];
  try {
    for (const blocks of depths) {
      const report = reportOf(blocks, base);
      const snapshot: InspectorSnapshot = { kind: 'report', title: `bench ${blocks} blocks`, report: summarizeReport(report), canComputeSensitivity: false };
      const bundles = [join(ROOT, 'dist', 'webview.js'), ...(values.compare ? [resolve(values.compare)] : [])];
      const runsOf = new Map<string, Array<Omit<Measured, 'webview' | 'blocks' | 'layers' | 'snapshotBytes' | 'fullReportBytes'>>>(bundles.map((b) => [b, []]));
      for (let rep = 0; rep < reps; rep++) for (const bundle of bundles) {
        const runs = runsOf.get(bundle)!;
        const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
        await page.setContent(`<!DOCTYPE html><html><head><style>${readFileSync(join(ROOT, 'media', 'inspector.css'), 'utf8')}</style></head><body><div id="app"></div></body></html>`);
        await page.evaluate(`window.__snapshot = ${JSON.stringify(snapshot)};
          window.acquireVsCodeApi = () => ({
            getState: () => undefined,
            setState: () => undefined,
            postMessage: (m) => {
              if (m.type === 'ready') { window.__t0 = performance.now(); setTimeout(() => window.postMessage({ type: 'snapshot', snapshot: window.__snapshot }, '*'), 0); }
              if (m.type === 'layerDetail') setTimeout(() => window.postMessage({ type: 'reply', id: m.id, err: { code: 'Bench', message: 'no detail in the benchmark' } }, '*'), 0);
            },
          });
          window.__frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));`);
        await page.addScriptTag({ content: readFileSync(bundle, 'utf8') });
        const layerCount = report.layers.length;
        const firstRenderMs = (await page.evaluate(`(async () => {
          while (document.querySelectorAll('vscode-data-grid-row[data-layer]').length === 0 || !document.getElementById('error-chart')) await new Promise((r) => setTimeout(r, 5));
          await window.__frame();
          return performance.now() - window.__t0;
        })()`)) as number;
        const tableRowsInDom = (await page.evaluate(`document.querySelectorAll('vscode-data-grid-row[data-layer]').length`)) as number;
        // Filter: type a role into the filter field; wait until the table shows only that role.
        const filterMs = (await page.evaluate(`(async () => {
          const field = document.getElementById('layer-filter');
          const t0 = performance.now();
          field.value = 'down';
          field.dispatchEvent(new Event('input', { bubbles: true }));
          const count = document.getElementById('layer-count');
          const ok = () => { const rows = [...document.querySelectorAll('vscode-data-grid-row[data-layer]')]; return rows.length > 0 && rows.every((r) => r.dataset.layer.includes('down')) && (count ? count.textContent.startsWith(${blocks} + ' of ') : rows.length === ${blocks}); };
          while (!ok()) await new Promise((r) => setTimeout(r, 2));
          await window.__frame();
          const ms = performance.now() - t0;
          field.value = '';
          field.dispatchEvent(new Event('input', { bubbles: true }));
          const all = () => (count ? count.textContent === '${layerCount} layers' : document.querySelectorAll('vscode-data-grid-row[data-layer]').length === ${layerCount});
          while (!all()) await new Promise((r) => setTimeout(r, 2));
          return ms;
        })()`)) as number;
        // Sort: click the Total/E header; wait for the first row to change.
        const sortMs = (await page.evaluate(`(async () => {
          const first = () => document.querySelector('vscode-data-grid-row[data-layer]')?.dataset.layer;
          const before = first();
          const header = document.querySelector('vscode-data-grid-cell[data-key="total"]');
          const t0 = performance.now();
          header.click();
          while (first() === before) await new Promise((r) => setTimeout(r, 2));
          await window.__frame();
          return performance.now() - t0;
        })()`)) as number;
        // Zoom: the error chart's zoom-in button (absent before the block view existed).
        const zoomMs = (await page.evaluate(`(async () => {
          const b = document.getElementById('chart-zoom-in');
          if (!b) return null;
          const label = () => document.getElementById('error-chart').getAttribute('aria-label');
          const before = label();
          const t0 = performance.now();
          b.click();
          while (label() === before) await new Promise((r) => setTimeout(r, 2));
          await window.__frame();
          return performance.now() - t0;
        })()`)) as number | null;
        runs.push({ firstRenderMs, filterMs, sortMs, zoomMs, tableRowsInDom });
        await page.close();
      }
      for (const [bundle, runs] of runsOf) {
      const m: Measured = {
        webview: bundle === bundles[0] ? 'dist/webview.js' : values.compare!,
        blocks,
        layers: report.layers.length,
        snapshotBytes: JSON.stringify(snapshot).length,
        fullReportBytes: JSON.stringify(report).length,
        firstRenderMs: Math.round(median(runs.map((r) => r.firstRenderMs))),
        filterMs: Math.round(median(runs.map((r) => r.filterMs))),
        sortMs: Math.round(median(runs.map((r) => r.sortMs))),
        zoomMs: runs[0]!.zoomMs === null ? null : Math.round(median(runs.map((r) => r.zoomMs!))),
        tableRowsInDom: runs[0]!.tableRowsInDom,
      };
      console.error(JSON.stringify(m));
      results.push(m);
      }
    }
  } finally {
    await browser.close();
  }
  const out = join(ROOT, 'bench-results', 'inspector.json');
  mkdirSync(join(ROOT, 'bench-results'), { recursive: true });
  writeFileSync(
    out,
    `${JSON.stringify(
      {
        suite: 'inspector',
        createdAt: new Date().toISOString(),
        machine: { cpus: cpus().length, loadavg: loadavg().map((x) => Number(x.toFixed(2))) },
        report: values.report ? 'real report, layers cycled to each depth' : 'synthetic losses',
        baselines: baselineCount,
        repetitions: reps,
        note: 'medians in ms, headless chromium; filterMs includes the 150 ms debounce of the filter field when there is one',
        results,
      },
      null,
      1,
    )}\n`,
  );
  console.error(`wrote ${out}`);
}

void main().catch((e) => {
  console.error(e);
  process.exit(1);
});
