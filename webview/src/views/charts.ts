// chart.js charts, coloured from the theme. Each chart lives in a slot that updates its data in
// place (live updates while a job runs) and is rebuilt when the theme changes.
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  LogarithmicScale,
  PointElement,
  Tooltip,
  type ChartConfiguration,
  type ChartDataset,
} from 'chart.js';
import type { LayerSummary, ReportSummary } from '../../../src/protocol/webview';
import { num } from '../format';
import { palette, type Palette } from '../theme';
import { relativeLoss, type BlockChartData } from './blocks';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, LogarithmicScale, LineController, LineElement, PointElement, Legend, Tooltip);

export class ChartSlot {
  private chart: Chart | undefined;
  readonly canvas: HTMLCanvasElement;
  private readonly wrap: HTMLElement;

  constructor(
    readonly container: HTMLElement,
    id: string,
    height = 220,
  ) {
    const wrap = document.createElement('div');
    this.wrap = wrap;
    wrap.className = 'chart-wrap';
    wrap.style.height = `${height}px`;
    this.canvas = document.createElement('canvas');
    this.canvas.id = id;
    wrap.appendChild(this.canvas);
    container.appendChild(wrap);
  }

  show(config: ChartConfiguration): void {
    // What the canvas shows, in words (screen readers; tests read it too): series and categories.
    const series = (config.data.datasets ?? []).map((d) => d.label ?? '').filter(Boolean);
    const labels = (config.data.labels ?? []).map(String);
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', `${series.length ? `series: ${series.join('; ')}` : 'chart'}${labels.length ? ` — ${labels.length} categories: ${labels.slice(0, 40).join(', ')}${labels.length > 40 ? ', …' : ''}` : ''}`);
    if (this.chart && (this.chart.config as { type?: string }).type === (config as { type?: string }).type) {
      this.chart.data = config.data;
      this.chart.options = config.options ?? {};
      this.chart.update('none');
      return;
    }
    this.chart?.destroy();
    this.chart = new Chart(this.canvas, config);
  }

  onClick(handler: (index: number) => void): void {
    this.canvas.addEventListener('click', (e) => {
      const hit = this.chart?.getElementsAtEventForMode(e, 'index', { intersect: false }, false)[0];
      if (hit) handler(hit.index);
    });
  }

  /** The bar (dataset and category) under the pointer, if the pointer is on one. */
  barAt(e: MouseEvent): { datasetIndex: number; index: number } | undefined {
    const hit = this.chart?.getElementsAtEventForMode(e, 'nearest', { intersect: true }, false)[0];
    return hit ? { datasetIndex: hit.datasetIndex, index: hit.index } : undefined;
  }

  /** The x-axis category under the pointer (nearest one; undefined without a chart). */
  categoryAt(e: MouseEvent): number | undefined {
    const x = this.chart?.scales['x'];
    if (!x) return undefined;
    const v = x.getValueForPixel(e.offsetX);
    return v === undefined ? undefined : Math.round(v);
  }

  /** Width in CSS pixels of the plotting area (between the axes). */
  plotWidth(): number {
    const a = this.chart?.chartArea;
    return a ? a.right - a.left : this.canvas.clientWidth;
  }

  /** Destroys the chart and removes its canvas (a new slot takes its place). */
  destroy(): void {
    this.chart?.destroy();
    this.chart = undefined;
    this.wrap.remove();
  }
}

function baseOptions(p: Palette, yTitle: string, log: boolean): ChartConfiguration['options'] {
  return {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    interaction: { mode: 'index', intersect: false },
    plugins: {
      legend: { labels: { color: p.foreground, boxWidth: 12 } },
      tooltip: { callbacks: {} },
    },
    scales: {
      x: { ticks: { color: p.muted, maxRotation: 60, autoSkip: true }, grid: { color: p.grid } },
      y: {
        type: log ? 'logarithmic' : 'linear',
        title: { display: true, text: yTitle, color: p.muted },
        ticks: { color: p.muted },
        grid: { color: p.grid },
      },
    },
  };
}

function shortName(l: { name: string; block: number | null; role: string }): string {
  return l.block === null ? l.role : `${l.block}.${l.role}`;
}

/** Relative losses per layer across the model (log scale), with baselines' totals as lines. */
export function errorChartConfig(layers: readonly LayerSummary[], baselines: ReportSummary['baselines'], selected: string | undefined): ChartConfiguration {
  const p = palette();
  const positive = (x: number) => (Number.isFinite(x) && x > 0 ? x : null);
  const rels = layers.map(relativeLoss);
  const highlight = (base: string) => layers.map((l) => (l.name === selected ? p.accent : base));
  const datasets: ChartDataset<'bar' | 'line', (number | null)[]>[] = [
    { type: 'bar', label: 'pruning', data: rels.map((r) => positive(r.pruning)), backgroundColor: p.pruning, borderColor: highlight(p.pruning), borderWidth: 1 },
    { type: 'bar', label: 'quantization', data: rels.map((r) => positive(r.quantization)), backgroundColor: p.quantization, borderColor: highlight(p.quantization), borderWidth: 1 },
    { type: 'bar', label: 'total (after compensation)', data: rels.map((r) => positive(r.total)), backgroundColor: p.total, borderColor: highlight(p.total), borderWidth: 1 },
  ];
  (baselines ?? []).forEach((b, i) => {
    const byName = new Map(b.layers.map((l) => [l.name, l.loss]));
    datasets.push({
      type: 'line',
      label: `${b.recipe} total`,
      data: layers.map((l) => {
        const loss = byName.get(l.name);
        return loss && loss.outputEnergy > 0 ? positive(loss.total / loss.outputEnergy) : null;
      }),
      borderColor: p.series[(i + 3) % p.series.length],
      backgroundColor: p.series[(i + 3) % p.series.length],
      pointRadius: 2,
      borderWidth: 1.5,
      spanGaps: true,
    });
  });
  const options = baseOptions(p, 'loss / output energy (log)', true)!;
  options.plugins!.tooltip!.callbacks = { label: (ctx) => `${ctx.dataset.label}: ${num(ctx.parsed.y ?? undefined)}` };
  return { type: 'bar', data: { labels: layers.map(shortName), datasets: datasets as ChartDataset<'bar'>[] }, options };
}

/** Perplexity of the dense model, the compressed one and each baseline recipe. */
export function perplexityChartConfig(report: ReportSummary): ChartConfiguration | undefined {
  const p = palette();
  const labels: string[] = [];
  const values: number[] = [];
  const colors: string[] = [];
  if (report.perplexity.dense) {
    labels.push('dense');
    values.push(report.perplexity.dense.perplexity);
    colors.push(p.muted);
  }
  if (report.perplexity.compressed) {
    labels.push(report.recipe);
    values.push(report.perplexity.compressed.perplexity);
    colors.push(p.total);
  }
  (report.baselines ?? []).forEach((b, i) => {
    if (!b.perplexity) return;
    labels.push(b.recipe);
    values.push(b.perplexity.perplexity);
    colors.push(p.series[(i + 1) % p.series.length]!);
  });
  if (values.length === 0) return undefined;
  const options = baseOptions(p, 'perplexity (lower is better)', false)!;
  options.plugins!.legend = { display: false };
  options.indexAxis = 'y';
  options.scales = {
    x: { ticks: { color: p.muted }, grid: { color: p.grid }, beginAtZero: true, title: { display: true, text: 'perplexity (lower is better)', color: p.muted } },
    y: { ticks: { color: p.foreground }, grid: { color: p.grid } },
  };
  return { type: 'bar', data: { labels, datasets: [{ label: 'perplexity', data: values, backgroundColor: colors }] }, options };
}

/**
 * Perplexity with only one layer compressed, per layer. The pipeline measures it on a few spread
 * windows, so it is compared across layers (not with the dense perplexity on the full text); the
 * y axis starts near the smallest value so the differences show.
 */
export function sensitivityChartConfig(sensitivity: NonNullable<ReportSummary['sensitivity']>, layers: readonly LayerSummary[]): ChartConfiguration {
  const p = palette();
  const byName = new Map(layers.map((l) => [l.name, l]));
  const options = baseOptions(p, 'perplexity, one layer compressed', false)!;
  options.plugins!.legend = { display: false };
  options.plugins!.tooltip!.callbacks = { title: (items) => sensitivity[items[0]?.dataIndex ?? 0]?.name ?? '' };
  const values = sensitivity.map((s) => s.perplexity);
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  (options.scales!['y'] as { min?: number }).min = Math.max(0, lo - (hi - lo) * 0.5 - 1e-6);
  return {
    type: 'bar',
    data: {
      labels: sensitivity.map((s) => {
        const l = byName.get(s.name);
        return l ? shortName(l) : s.name;
      }),
      datasets: [{ label: 'perplexity with only this layer compressed', data: values, backgroundColor: p.pruning }],
    },
    options,
  };
}

/** Histogram (bar chart) of per-row quantization scales. */
export function scaleDistributionConfig(scales: Float32Array, chosenRow: number): ChartConfiguration {
  const p = palette();
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of scales) {
    if (!(s > 0)) continue;
    lo = Math.min(lo, s);
    hi = Math.max(hi, s);
  }
  if (!Number.isFinite(lo)) {
    lo = 0;
    hi = 1;
  }
  const bins = 30;
  const width = (hi - lo) / bins || 1;
  const counts = new Array<number>(bins).fill(0);
  for (const s of scales) if (s > 0) counts[Math.min(bins - 1, Math.floor((s - lo) / width))]!++;
  const chosenBin = Math.min(bins - 1, Math.floor(((scales[chosenRow] ?? lo) - lo) / width));
  const options = baseOptions(p, 'rows', false)!;
  options.plugins!.legend = { display: false };
  options.scales!['x'] = { ticks: { color: p.muted, maxTicksLimit: 6 }, grid: { display: false }, title: { display: true, text: 'per-row scale', color: p.muted } };
  return {
    type: 'bar',
    data: {
      labels: counts.map((_, i) => num(lo + (i + 0.5) * width, 4)),
      datasets: [{ label: 'rows', data: counts, backgroundColor: counts.map((_, i) => (i === chosenBin ? p.accent : p.quantization)), barPercentage: 1, categoryPercentage: 1 }],
    },
    options,
  };
}

/** Colour of a layer role's bars in the block view (attention roles cool, MLP roles warm). */
function roleColor(role: string, p: Palette): string {
  const base = role.replace(/ #\d+$/, '');
  const map: Record<string, string> = {
    q: p.total,
    k: p.quantization,
    v: p.recovered,
    qkv: p.total,
    o: p.series[4] ?? p.total,
    gate: p.pruning,
    up: p.series[5] ?? p.pruning,
    down: p.muted,
  };
  return map[base] ?? p.grid;
}

/**
 * The error chart's block view: one group of bars per block (a bar per layer role, the chosen
 * metric relative to the layer's output energy, log scale), and per recipe a line through the
 * block's Σ loss / Σ output energy.
 */
export function blockChartConfig(d: BlockChartData, metricLabel: string, selected: string | undefined): ChartConfiguration {
  const p = palette();
  const datasets: ChartDataset<'bar' | 'line', (number | null)[]>[] = d.roles.map((r) => {
    const color = roleColor(r.role, p);
    return {
      type: 'bar',
      label: r.role,
      data: r.data,
      backgroundColor: color,
      borderColor: r.layers.map((name) => (name !== null && name === selected ? p.accent : color)),
      borderWidth: r.layers.map((name) => (name !== null && name === selected ? 2 : 0)),
      categoryPercentage: 0.85,
      barPercentage: 0.95,
    };
  });
  d.recipes.forEach((r, i) => {
    const color = i === 0 ? p.foreground : p.series[(i + 2) % p.series.length]!;
    datasets.push({
      type: 'line',
      label: `${r.recipe} Σ block`,
      data: r.data,
      borderColor: color,
      backgroundColor: color,
      borderDash: i === 0 ? [] : [5, 3],
      pointRadius: 2.5,
      borderWidth: 1.5,
      spanGaps: true,
    });
  });
  const options = baseOptions(p, `${metricLabel} / output energy (log)`, true)!;
  options.scales!['x'] = { ticks: { color: p.muted, autoSkip: false, maxRotation: 0 }, grid: { color: p.grid }, title: { display: true, text: 'block', color: p.muted } };
  options.plugins!.tooltip!.callbacks = {
    title: (items) => {
      const b = d.blocks[items[0]?.dataIndex ?? 0];
      return b === null || b === undefined ? 'layers outside blocks' : `block ${b}`;
    },
    label: (ctx) => {
      const role = d.roles[ctx.datasetIndex];
      const name = role?.layers[ctx.dataIndex];
      return `${ctx.dataset.label}: ${num(ctx.parsed.y ?? undefined)}${name ? `  (${name})` : ''}`;
    },
  };
  return { type: 'bar', data: { labels: d.labels, datasets: datasets as ChartDataset<'bar'>[] }, options };
}
