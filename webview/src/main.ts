// Inspector webview entry (bundled to dist/webview.js). Talks to the host only through the
// protocol in src/protocol/webview.ts; its first message is `ready`, answered with a snapshot.
// Every snapshot re-renders from scratch except the charts (updated in place) and the selected
// layer's detail (re-requested only when the selection, row or compressed model changes).
import type { HostToWebview, InspectorSnapshot, InspectorViewState, LayerDetail, LayerSummary, ModelInspection, ReportSummary } from '../../src/protocol/webview';
import { badge, button, progressRing, registerComponents, textField } from './components/toolkit';
import { bytes, num, pct, rel, seconds } from './format';
import { Rpc, type VsCodeApi } from './rpc';
import { onThemeChange } from './theme';
import { ChartSlot, perplexityChartConfig, scaleDistributionConfig, sensitivityChartConfig } from './views/charts';
import { ErrorChart, type ErrorChartState } from './views/errorChart';
import { drawMask, drawRowGrid, gridInCodeUnits, maskSummary, rowGroupSummaries } from './views/heatmap';
import { renderLayerTable, type LayerTable, type TableState } from './views/layerTable';
import { renderBenchmarks } from './benchmarks/view';

declare function acquireVsCodeApi(): VsCodeApi;

const api = acquireVsCodeApi();
const rpc = new Rpc(api);
registerComponents();

const saved = (api.getState() as InspectorViewState | undefined) ?? {};
const view: InspectorViewState = { ...saved };
const table: TableState = {
  sortKey: view.sortKey ?? 'index',
  descending: view.sortDescending ?? false,
  filter: view.filter ?? '',
  role: view.roleFilter ?? '',
  blocks: view.blockFilter ?? '',
  selected: view.selectedLayer,
};
const chartState: ErrorChartState = { view: view.chartView, metric: view.chartMetric ?? 'total', window: view.chartWindow };

let snapshot: InspectorSnapshot | undefined;
let detail: LayerDetail | undefined;
let detailKey = '';
let detailError = '';
let lastTableKey = '';
let layerTable: LayerTable | undefined;
let errorChart: ErrorChart | undefined;
const charts = new Map<string, ChartSlot>();

function saveState(): void {
  view.selectedLayer = table.selected;
  view.sortKey = table.sortKey;
  view.sortDescending = table.descending;
  view.filter = table.filter;
  view.roleFilter = table.role;
  view.blockFilter = table.blocks;
  view.chartView = chartState.view;
  view.chartMetric = chartState.metric;
  view.chartWindow = chartState.window;
  api.setState(view);
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: Array<Node | string>): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

function section(id: string, title: string): { root: HTMLElement; body: HTMLElement } {
  const body = el('div', { class: 'section-body' });
  const root = el('section', { id }, el('h2', {}, title), body);
  return { root, body };
}

const app = document.getElementById('app')!;
const layout = {
  header: el('header', { id: 'header' }),
  table: section('layers', 'Layers'),
  errors: section('errors', 'Error per layer'),
  layer: section('layer', 'Selected layer'),
  ppl: section('perplexity', 'Perplexity and timings'),
  sens: section('sensitivity', 'Sensitivity'),
  message: el('div', { id: 'message', class: 'muted' }),
  benchmarks: el('section', { id: 'benchmarks' }),
};
app.replaceChildren(layout.header, layout.message, layout.benchmarks, layout.table.root, layout.errors.root, layout.layer.root, layout.ppl.root, layout.sens.root);
for (const part of [layout.table.root, layout.errors.root, layout.layer.root, layout.ppl.root, layout.sens.root]) part.hidden = true;
layout.message.textContent = 'Loading…';

function slot(id: string, parent: HTMLElement, height?: number): ChartSlot {
  let s = charts.get(id);
  if (!s || !parent.contains(s.canvas)) {
    s?.destroy();
    s = new ChartSlot(parent, id, height);
    charts.set(id, s);
  }
  return s;
}

function layersOf(s: InspectorSnapshot): LayerSummary[] {
  if (s.kind !== 'report') return [];
  return s.report?.layers ?? s.job?.layers ?? [];
}

function render(): void {
  const s = snapshot;
  if (!s) return;
  document.title = s.title;
  for (const part of [layout.table.root, layout.errors.root, layout.layer.root, layout.ppl.root, layout.sens.root]) part.hidden = s.kind === 'empty' || s.kind === 'benchmarks';
  layout.benchmarks.hidden = s.kind !== 'benchmarks';
  layout.message.textContent = '';
  switch (s.kind) {
    case 'empty':
      layout.header.replaceChildren(el('h1', {}, s.title));
      layout.message.textContent = s.message;
      return;
    case 'model':
      view.source = { kind: 'model', path: s.model.path };
      saveState();
      renderModel(s.title, s.model);
      return;
    case 'benchmarks':
      if (s.data.latest) {
        view.source = { kind: 'benchmarks', path: s.data.latest.outputs.json };
        saveState();
      }
      layout.header.replaceChildren(el('h1', {}, s.title));
      renderBenchmarks(layout.benchmarks, s.data);
      return;
    case 'report':
      if (s.reportPath) {
        view.source = { kind: 'report', path: s.reportPath };
        saveState();
      }
      renderReport(s);
      return;
    default: {
      const never: never = s;
      return never;
    }
  }
}

function renderHeader(title: string, badges: string[], actions: HTMLElement[], extra?: Node): void {
  const row = el('div', { class: 'badges' }, ...badges.map(badge));
  layout.header.replaceChildren(el('div', { class: 'title-row' }, el('h1', {}, title), el('div', { class: 'actions' }, ...actions)), row);
  if (extra) layout.header.append(extra);
}

function renderReport(s: Extract<InspectorSnapshot, { kind: 'report' }>): void {
  const report = s.report;
  const job = s.job;
  const layers = layersOf(s);
  const badges: string[] = [];
  if (report) {
    badges.push(report.recipe, `EP ${report.executionProvider.used}`, `${report.layers.length} layers`);
    if (report.perplexity.dense && report.perplexity.compressed) {
      badges.push(`ppl ${report.perplexity.dense.perplexity.toFixed(2)} → ${report.perplexity.compressed.perplexity.toFixed(2)} on ${report.perplexity.dense.text.split(/[\\/]/).pop()}`);
    }
  } else if (job) {
    badges.push(job.recipe);
  }
  const actions: HTMLElement[] = [];
  if (report?.outputs.simulated && s.reportPath) {
    const simulated = report.outputs.simulated;
    actions.push(button('Reveal outputs', () => api.postMessage({ type: 'reveal', path: resolveNear(s.reportPath!, simulated) })));
  }
  if (report || job?.state !== 'running') actions.push(button('Compress again…', () => api.postMessage({ type: 'compressAgain' })));
  let status: HTMLElement | undefined;
  if (job && job.state !== 'done') {
    const total = job.totalLayers ? ` of ${job.totalLayers}` : '';
    const prog = job.progress ? `${job.progress.stage} ${job.progress.done}/${job.progress.total}${job.progress.message ? ` · ${job.progress.message}` : ''}` : 'starting';
    status = el('div', { id: 'job-status', class: `job ${job.state}` });
    if (job.state === 'running') status.append(progressRing());
    status.append(
      el('span', {}, job.state === 'running' ? `Running: ${prog} — ${job.layers.length}${total} layers done` : job.state === 'cancelled' ? 'Cancelled; no outputs were written.' : `Failed: ${job.error ?? ''}`),
    );
  }
  renderHeader(s.title, badges, actions, status);
  if (report?.warnings.length) layout.message.textContent = report.warnings.join(' · ');

  if (!table.selected || !layers.some((l) => l.name === table.selected)) table.selected = layers[0]?.name;

  const tableKey = JSON.stringify([layers.length, layers.map((l) => l.loss.total), !!report]);
  if (tableKey !== lastTableKey) {
    lastTableKey = tableKey;
    // A running job's next layers update the drawn table in place (filters, scroll and focus stay).
    if (!layerTable?.update({ kind: 'report', layers })) layerTable = renderLayerTable(layout.table.body, { kind: 'report', layers }, table, { onChange: onTableChange });
  }
  if (layers.length === 0) {
    layout.table.body.replaceChildren(el('p', { class: 'muted' }, 'Layers appear here as they are compressed.'));
    layerTable = undefined;
  }

  // Error chart, grouped by block with zoom and pan; clicking a bar selects the layer.
  layout.errors.root.querySelector('h2')!.textContent = 'Error per layer';
  if (!errorChart?.attached) {
    errorChart = new ErrorChart(layout.errors.body, chartState, {
      onSelect: (name) => selectLayer(name, true),
      onChange: () => saveState(),
    });
  }
  errorChart.update(slot('error-chart', errorChart.chartHost, 280), { layers, baselines: report?.baselines, recipe: report?.recipe ?? job?.recipe ?? 'this job', selected: table.selected });

  renderSelectedLayer();
  renderPerplexity(report);
  renderSensitivity(s);
  // A job that ended without a report has nothing below the header worth showing.
  const nothing = !report && layers.length === 0;
  layout.errors.root.hidden = layers.length === 0;
  for (const part of [layout.layer.root, layout.ppl.root, layout.sens.root]) part.hidden = nothing;
  layout.table.root.hidden = nothing && job?.state !== 'running';
}

function resolveNear(reportPath: string, p: string): string {
  if (/^([a-zA-Z]:)?[\\/]/.test(p)) return p;
  const dir = reportPath.replace(/[\\/][^\\/]*$/, '');
  return `${dir}/${p}`;
}

/** The layer the views below and the chart's outline show (a sort or filter leaves it alone). */
let shownSelection: string | undefined;

function onTableChange(state: TableState): void {
  saveState();
  if (state.selected !== shownSelection) {
    renderSelectedLayer();
    redrawErrorChart();
  }
}

/** Selects a layer (from a chart): the table marks it and, with `reveal`, scrolls to it. */
function selectLayer(name: string, reveal = false): void {
  table.selected = name;
  saveState();
  layerTable?.select(name, reveal);
  renderSelectedLayer();
  redrawErrorChart();
}

/** The error chart again with the new selection outlined. */
function redrawErrorChart(): void {
  const s = snapshot;
  if (!s || s.kind !== 'report' || !errorChart?.attached) return;
  errorChart.update(slot('error-chart', errorChart.chartHost, 280), { layers: layersOf(s), baselines: s.report?.baselines, recipe: s.report?.recipe ?? s.job?.recipe ?? 'this job', selected: table.selected });
}

function selectedLayerReport(): LayerSummary | undefined {
  return snapshot ? layersOf(snapshot).find((l) => l.name === table.selected) : undefined;
}

function renderSelectedLayer(): void {
  const body = layout.layer.body;
  const s = snapshot;
  shownSelection = table.selected;
  if (!s || !table.selected) {
    body.replaceChildren(el('p', { class: 'muted' }, 'Select a layer in the table.'));
    return;
  }
  const source = s.kind === 'report' ? (s.report?.outputs.simulated ?? '') : s.kind === 'model' ? s.model.path : '';
  const key = `${source}|${table.selected}|${view.chosenRow ?? 'auto'}`;
  const l = selectedLayerReport();
  const title = el(
    'h3',
    {},
    table.selected,
    l ? el('span', { class: 'muted' }, `  ${l.rows}×${l.cols} · ${pct(l.sparsity)} sparse · ${l.wbits}-bit · ${(l.groupSize ?? 0) > 0 ? `groups of ${l.groupSize}` : 'per-row scales'}${l.asymmetric ? ' with zero points' : ''}`) : '',
  );
  if (key !== detailKey) {
    detailKey = key;
    detail = undefined;
    detailError = '';
    const width = Math.max(240, Math.min(720, body.clientWidth || 600));
    rpc
      .request({ type: 'layerDetail', layer: table.selected, row: view.chosenRow, gridRows: 96, gridCols: Math.round(width / 3) })
      .then((r) => {
        if (detailKey !== key) return;
        detail = normalizeDetail(r.detail);
        renderSelectedLayer();
      })
      .catch((e: Error) => {
        if (detailKey !== key) return;
        detail = undefined;
        detailError = e.message;
        renderSelectedLayer();
      });
    body.replaceChildren(title, el('p', { class: 'muted' }, detailError || 'Reading the layer’s weights…'));
    return;
  }
  if (!detail) {
    body.replaceChildren(title, el('p', { class: detailError ? 'error' : 'muted' }, detailError || 'Reading the layer’s weights…'));
    return;
  }
  const d = detail;
  const maskCanvas = el('canvas', { id: 'mask-heatmap', 'aria-label': `sparsity mask of ${d.name}` });
  const gridCanvas = el('canvas', { id: 'quant-grid', 'aria-label': `quantization grid of row ${d.row}` });
  const scalesHost = el('div', { class: 'scales' });
  const rowField = textField('row', String(d.row), () => undefined);
  rowField.id = 'row-field';
  rowField.addEventListener('change', () => {
    const v = Number((rowField as HTMLElement & { value: string }).value);
    if (Number.isInteger(v) && v >= 0 && v < d.rows) {
      view.chosenRow = v;
      saveState();
      renderSelectedLayer();
    }
  });
  const autoRow = button('Row with the largest scale', () => {
    view.chosenRow = undefined;
    saveState();
    renderSelectedLayer();
  });
  const codesLine = el('p', { class: 'muted' });
  body.replaceChildren(
    title,
    el(
      'div',
      { class: 'two-col' },
      el('div', { class: 'panel' }, el('h4', {}, 'Sparsity mask (kept = coloured)'), maskCanvas, el('p', { class: 'muted', id: 'mask-summary' }, maskSummary(d))),
      el(
        'div',
        { class: 'panel' },
        el(
          'h4',
          {},
          gridInCodeUnits(d)
            ? `Quantization grid of row ${d.row} (${d.rowGroups.scales.length} group${d.rowGroups.scales.length === 1 ? '' : 's'}${d.groupSize > 0 ? ` of ${d.groupSize}` : ''}; in code units w / scale + zero)`
            : `Quantization grid of row ${d.row} (scale ${num(d.rowScales[d.row])})`,
        ),
        el('div', { class: 'toolbar' }, el('span', {}, 'Row'), rowField, autoRow),
        gridCanvas,
        codesLine,
        ...(gridInCodeUnits(d) ? [el('h4', {}, `Groups of row ${d.row}`), groupTable(d)] : []),
        el('h4', {}, d.groupSize > 0 ? 'Per-row scales (largest group scale of each row)' : 'Per-row scales'),
        scalesHost,
      ),
    ),
  );
  const half = Math.max(240, (body.clientWidth || 800) / 2 - 24);
  drawMask(maskCanvas, d, half);
  const { codes, offGrid } = drawRowGrid(gridCanvas, d, half);
  const codeText = [...codes.entries()].sort((a, b) => a[0] - b[0]).map(([c, n]) => `${c}:${n}`).join(' ');
  codesLine.textContent = `codes of kept weights ${codeText}${offGrid ? ` · ${offGrid} off the grid (not quantized with this scale)` : ''}${d.scaleSource === 'estimated' ? ' · scales estimated from max|w| (the report has none for this layer)' : d.scaleSource === 'packed' ? ' · scales, zero points and codes from the packed model' : ''}`;
  const sd = slot('scale-chart', scalesHost, 160);
  sd.show(scaleDistributionConfig(d.rowScales, d.row));
}

/** The chosen row's groups: columns, scale, zero point (asymmetric), kept weights, codes used. */
function groupTable(d: LayerDetail): HTMLElement {
  const head = ['Group', 'Columns', 'Scale', ...(d.asymmetric ? ['Zero'] : []), 'Kept', 'Codes (code:count)'];
  const rows = rowGroupSummaries(d).map((g) =>
    el(
      'tr',
      {},
      ...[String(g.group), `${g.from}–${g.to}`, num(g.scale), ...(d.asymmetric ? [String(g.zero)] : []), String(g.kept), [...g.codes.entries()].sort((a, b) => a[0] - b[0]).map(([c, k]) => `${c}:${k}`).join(' ')].map((t) => el('td', {}, t)),
    ),
  );
  return el('div', { class: 'group-table', id: 'group-table' }, el('table', {}, el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h)))), el('tbody', {}, ...rows)));
}

/**
 * Typed arrays arrive as typed arrays from VS Code ≥ 1.57; a host that serializes messages as
 * JSON turns them into index-keyed objects, which are converted back here.
 */
function normalizeDetail(d: LayerDetail): LayerDetail {
  const f32 = (x: unknown): Float32Array => (x instanceof Float32Array ? x : Float32Array.from(Object.values((x ?? {}) as Record<string, number>)));
  return {
    ...d,
    maskDensity: f32(d.maskDensity),
    rowDensity: f32(d.rowDensity),
    colDensity: f32(d.colDensity),
    rowScales: f32(d.rowScales),
    rowValues: f32(d.rowValues),
    rowGroups: {
      ...d.rowGroups,
      scales: f32(d.rowGroups.scales),
      zeros: d.rowGroups.zeros ? f32(d.rowGroups.zeros) : undefined,
      codeCounts: d.rowGroups.codeCounts instanceof Uint32Array ? d.rowGroups.codeCounts : Uint32Array.from(Object.values(d.rowGroups.codeCounts as unknown as Record<string, number>)),
    },
    nm: d.nm ? { ...d.nm, validGrid: f32(d.nm.validGrid) } : undefined,
  };
}

function renderPerplexity(report: ReportSummary | null): void {
  const body = layout.ppl.body;
  if (!report) {
    body.replaceChildren(el('p', { class: 'muted' }, 'Perplexities appear when the job has evaluated the model.'));
    charts.get('ppl-chart')?.destroy();
    charts.delete('ppl-chart');
    return;
  }
  const config = perplexityChartConfig(report);
  const rows: Array<[string, string]> = [];
  const d = report.perplexity.dense;
  const c = report.perplexity.compressed;
  if (d) rows.push(['evaluation text', d.text.split(/[\\/]/).pop() ?? d.text]);
  if (d) rows.push(['dense perplexity', `${d.perplexity.toFixed(3)} (${d.windows} × ${d.seqlen} tokens)`]);
  if (c) rows.push([`${report.recipe} perplexity`, `${c.perplexity.toFixed(3)} (${d ? `${(((c.perplexity - d.perplexity) / d.perplexity) * 100).toFixed(1)}% vs dense` : ''})`]);
  for (const b of report.baselines ?? []) {
    const p = b.perplexity;
    if (p) rows.push([`${b.recipe} perplexity (baseline)`, `${p.perplexity.toFixed(3)} (${d ? `${(((p.perplexity - d.perplexity) / d.perplexity) * 100).toFixed(1)}% vs dense` : ''})`]);
  }
  rows.push(['execution provider', `${report.executionProvider.used}${report.executionProvider.tried.filter((t) => t.error).map((t) => ` · ${t.name} unavailable`).join('')}`]);
  rows.push(['calibration', `${report.calibration.samples} × ${report.calibration.seqlen} tokens (${report.calibration.mode})`]);
  for (const [k, v] of Object.entries(report.timings)) rows.push([`time: ${k}`, seconds(v)]);
  if (report.source?.bytes) rows.push(['source model', bytes(report.source.bytes)]);
  const tbl = el('table', { class: 'kv', id: 'timings' }, ...rows.map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, v))));
  const chartHost = el('div', { class: 'panel' });
  body.replaceChildren(el('div', { class: 'two-col' }, chartHost, el('div', { class: 'panel' }, tbl)));
  if (report.baselines?.length) body.append(recipeComparison(report));
  charts.get('ppl-chart')?.destroy();
  charts.delete('ppl-chart');
  if (config) slot('ppl-chart', chartHost, 60 + 28 * (config.data.labels?.length ?? 1)).show(config);
  else chartHost.append(el('p', { class: 'muted' }, 'This report has no perplexities.'));
}

/**
 * The job's recipe and its baselines side by side: perplexity, and the layer loss summed over the
 * layers relative to the summed dense output energy (all on the same Hessians).
 */
function recipeComparison(report: ReportSummary): HTMLElement {
  const d = report.perplexity.dense?.perplexity;
  const sumOf = (losses: Array<{ loss: { total: number; outputEnergy: number } }>) => {
    let total = 0;
    let energy = 0;
    for (const l of losses) {
      total += l.loss.total;
      energy += l.loss.outputEnergy;
    }
    return { total, relative: energy > 0 ? total / energy : undefined };
  };
  const entries = [
    { recipe: report.recipe, role: 'this job', ppl: report.perplexity.compressed?.perplexity, loss: sumOf(report.layers), layers: report.layers.length },
    ...(report.baselines ?? []).map((b) => ({ recipe: b.recipe, role: 'baseline', ppl: b.perplexity?.perplexity, loss: sumOf(b.layers), layers: b.layers.length })),
  ];
  const cell = (text: string) => el('td', {}, text);
  const head = el('tr', {}, ...['recipe', '', 'perplexity', 'vs dense', 'Σ layer loss', 'relative', 'layers'].map((h) => el('th', {}, h)));
  const rows = entries.map((e) =>
    el(
      'tr',
      { 'data-recipe': e.recipe },
      cell(e.recipe),
      cell(e.role),
      cell(num(e.ppl)),
      cell(e.ppl !== undefined && d ? `${e.ppl >= d ? '+' : ''}${(((e.ppl - d) / d) * 100).toFixed(1)}%` : '–'),
      cell(num(e.loss.total)),
      cell(rel(e.loss.relative)),
      cell(String(e.layers)),
    ),
  );
  return el(
    'div',
    { class: 'panel' },
    el('h3', {}, 'Recipes on the same calibration (Hessians and windows)'),
    el('table', { class: 'compare', id: 'recipes' }, head, ...rows),
  );
}

function renderSensitivity(s: Extract<InspectorSnapshot, { kind: 'report' }>): void {
  const body = layout.sens.body;
  const sens = s.report?.sensitivity;
  if (sens && sens.length) {
    if (!body.querySelector('#sens-chart')) body.replaceChildren();
    slot('sens-chart', body, 240).show(sensitivityChartConfig(sens, s.report?.layers ?? []));
    return;
  }
  charts.get('sens-chart')?.destroy();
  charts.delete('sens-chart');
  const note = el('p', { class: 'muted' }, 'Perplexity with only one layer compressed at a time shows which layers matter most.');
  const status = el('span', { class: 'muted' });
  const parts: Node[] = [note];
  if (s.canComputeSensitivity) {
    parts.push(
      el(
        'div',
        { class: 'toolbar' },
        button(
          'Compute sensitivity',
          () => {
            status.textContent = 'computing in the worker…';
            rpc
              .request({ type: 'computeSensitivity' }, 3_600_000)
              .then(() => (status.textContent = ''))
              .catch((e: Error) => (status.textContent = e.message));
          },
          'primary',
        ),
        status,
      ),
    );
  }
  body.replaceChildren(...parts);
}

function renderModel(title: string, model: ModelInspection): void {
  renderHeader(title, [`${model.layers.length} linear layers`, `${(model.linearParams / 1e6).toFixed(2)} M params`, bytes(model.fileBytes + Math.max(0, model.weightBytes - model.fileBytes))], []);
  layout.ppl.root.hidden = true;
  layout.sens.root.hidden = true;
  if (!table.selected || !model.layers.some((l) => l.name === table.selected)) table.selected = model.layers[0]?.name;
  const key = `model|${model.path}|${model.layers.length}`;
  if (key !== lastTableKey) {
    lastTableKey = key;
    if (!layerTable?.update({ kind: 'model', layers: model.layers })) layerTable = renderLayerTable(layout.table.body, { kind: 'model', layers: model.layers }, table, { onChange: onTableChange });
  }
  layout.errors.root.querySelector('h2')!.textContent = 'Crest factor per layer (max|w| / rms)';
  if (errorChart) {
    errorChart = undefined;
    layout.errors.body.replaceChildren();
  }
  const p = slot('error-chart', layout.errors.body, 220);
  p.show({
    type: 'bar',
    data: {
      labels: model.layers.map((l) => (l.block === null ? l.role : `${l.block}.${l.role}`)),
      datasets: [{ label: 'crest factor', data: model.layers.map((l) => l.crest), backgroundColor: getComputedStyle(document.body).getPropertyValue('--vscode-charts-purple') || '#b180d7' }],
    },
    options: { responsive: true, maintainAspectRatio: false, animation: false },
  });
  renderSelectedLayer();
}

window.addEventListener('message', (event: MessageEvent<HostToWebview>) => {
  const message = event.data;
  if (rpc.handle(message)) return;
  switch (message.type) {
    case 'snapshot':
      snapshot = message.snapshot;
      render();
      return;
    default:
      return;
  }
});

onThemeChange(() => {
  for (const c of charts.values()) c.destroy();
  charts.clear();
  lastTableKey = '';
  render();
});

let resizeTimer: ReturnType<typeof setTimeout> | undefined;
window.addEventListener('resize', () => {
  if (resizeTimer) clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    if (detail) renderSelectedLayer();
  }, 200);
});

api.postMessage({ type: 'ready' });
