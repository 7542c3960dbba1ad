// chart.js configurations for the Benchmarks view. Pure functions of the data and a palette (no
// DOM, no chart.js import: chart.js is an ES module the node tests can't type-import from
// CommonJS), so they are unit-tested in Node; view.ts hands them to chart.js.
import type { BenchHistoryEntry, BenchResult, Stat } from '../../../src/protocol/bench';

/** The colours the charts use (a structural subset of the inspector's theme Palette). */
export interface ChartPalette {
  foreground: string;
  muted: string;
  grid: string;
  pruning: string;
  quantization: string;
  recovered: string;
  total: string;
  accent: string;
  series: string[];
}
type Palette = ChartPalette;

/** A chart.js configuration (the subset these charts use; view.ts passes it to Chart as is). */
export interface BenchChartConfig {
  type: 'bar' | 'line';
  data: { labels: string[]; datasets: ChartDataset[] };
  options: ChartOptions;
}
type ChartDataset = { label: string; data: Array<number | null> } & Record<string, unknown>;
type ChartOptions = Record<string, unknown> & { indexAxis?: 'x' | 'y'; plugins: Record<string, unknown>; scales: Record<string, unknown> };
type ChartConfiguration = BenchChartConfig;

const MiB = 2 ** 20;

function axes(p: Palette, yTitle: string, log = false): ChartOptions {
  return {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    plugins: { legend: { labels: { color: p.foreground, boxWidth: 12 } } },
    scales: {
      x: { ticks: { color: p.muted }, grid: { color: p.grid } },
      y: { type: log ? 'logarithmic' : 'linear', beginAtZero: !log, title: { display: true, text: yTitle, color: p.muted }, ticks: { color: p.muted }, grid: { color: p.grid } },
    },
  };
}

function spread(s: Stat | undefined, unit: string): string {
  return s && s.n ? `median ${s.median.toFixed(2)} ${unit} (min ${s.min.toFixed(2)}, max ${s.max.toFixed(2)}, n=${s.n})` : '–';
}

/** Perplexity of the dense model and of every recipe run (horizontal bars, lower is better). */
export function perplexityChart(r: BenchResult, p: Palette): ChartConfiguration | undefined {
  const q = r.quality;
  if (!q) return undefined;
  const runs = q.runs.filter((x) => x.perplexity);
  const labels = ['dense', ...runs.map((x) => `${x.recipe} W${x.wbits}`)];
  const values = [q.dense.perplexity, ...runs.map((x) => x.perplexity!.perplexity)];
  const colors = [p.muted, ...runs.map((x) => (x.recipe.startsWith('obr') ? p.total : p.series[(runs.indexOf(x) + 1) % p.series.length]!))];
  const options = axes(p, 'perplexity (lower is better)');
  options.indexAxis = 'y';
  options.plugins.legend = { display: false };
  options.scales = {
    x: { beginAtZero: false, ticks: { color: p.muted }, grid: { color: p.grid }, title: { display: true, text: 'perplexity (lower is better)', color: p.muted } },
    y: { ticks: { color: p.foreground }, grid: { color: p.grid } },
  };
  return { type: 'bar', data: { labels, datasets: [{ label: 'perplexity', data: values, backgroundColor: colors }] }, options };
}

/** Load, prefill and per-token decode times, dense vs packed (log scale; tooltips give the spread). */
export function latencyChart(r: BenchResult, p: Palette): ChartConfiguration | undefined {
  const rt = r.runtime;
  if (!rt) return undefined;
  const labels = ['session load (ms)', `prefill ${rt.promptTokens} tok (ms)`, 'decode (ms/token)'];
  const stats = (v: typeof rt.dense | undefined): Array<Stat | undefined> => [v?.loadMs, v?.prefillMs, v?.decodeMsPerToken];
  const variants = [rt.dense, ...(rt.packed ? [rt.packed] : [])];
  const datasets: ChartDataset[] = variants.map((v, i) => ({
    label: v.label,
    data: stats(v).map((s) => (s && s.n ? s.median : null)),
    backgroundColor: i === 0 ? p.muted : p.total,
  }));
  const options = axes(p, 'milliseconds (log)', true);
  // Bars on a log axis start at its minimum: put it a decade below the smallest value so every bar shows.
  const values = datasets.flatMap((d) => d.data).filter((x): x is number => typeof x === 'number' && x > 0);
  if (values.length) options.scales['y'] = { ...(options.scales['y'] as object), min: 10 ** Math.floor(Math.log10(Math.min(...values)) - 0.3) };
  options.plugins.tooltip = {
    callbacks: {
      label: (ctx: { datasetIndex: number; dataIndex: number }) => {
        const v = variants[ctx.datasetIndex];
        const unit = ctx.dataIndex === 2 ? 'ms/token' : 'ms';
        return `${v?.label}: ${spread(stats(v)[ctx.dataIndex], unit)}`;
      },
    },
  };
  return { type: 'bar', data: { labels, datasets }, options };
}

/** Size on disk: dense, packed (measured) and the computed sparse formats. */
export function sizeChart(r: BenchResult, p: Palette): ChartConfiguration | undefined {
  const rt = r.runtime;
  if (!rt) return undefined;
  const labels: string[] = ['dense (fp32)'];
  const values: number[] = [rt.dense.fileBytes / MiB];
  const colors: string[] = [p.muted];
  if (rt.packed) {
    labels.push(`packed W${rt.wbits} (measured)`);
    values.push(rt.packed.fileBytes / MiB);
    colors.push(p.total);
  }
  const s = rt.sparseStorage;
  if (s) {
    labels.push('bitmap + non-zeros (computed)', '2:4 + metadata (computed)');
    values.push(s.modelBytesBitmap / MiB, s.modelBytesTwoFour / MiB);
    colors.push(p.recovered, p.quantization);
  }
  const options = axes(p, 'MiB on disk');
  options.plugins.legend = { display: false };
  return { type: 'bar', data: { labels, datasets: [{ label: 'MiB', data: values, backgroundColor: colors }] }, options };
}

/** Compression seconds end to end per recipe (speed suite). */
export function speedChart(r: BenchResult, p: Palette): ChartConfiguration | undefined {
  const runs = (r.speed?.runs ?? []).filter((x) => x.seconds);
  if (runs.length === 0) return undefined;
  const options = axes(p, 'seconds end to end');
  options.plugins.legend = { display: false };
  return {
    type: 'bar',
    data: {
      labels: runs.map((x) => `${x.recipe} W${x.wbits}`),
      datasets: [{ label: 'seconds', data: runs.map((x) => x.seconds!.endToEnd.median), backgroundColor: runs.map((x) => (x.recipe.startsWith('obr') ? p.total : p.pruning)) }],
    },
    options,
  };
}

/** GFLOP/s of the core per method, one dataset per layer size. */
export function coreChart(r: BenchResult, p: Palette): ChartConfiguration | undefined {
  const c = r.core;
  if (!c || c.points.length === 0) return undefined;
  const methods = [...new Set(c.points.map((x) => x.method))];
  const datasets: ChartDataset[] = c.sizes.map((n, i) => ({
    label: `${n}×${n}`,
    data: methods.map((m) => c.points.find((x) => x.method === m && x.cols === n)?.gflops ?? null),
    backgroundColor: p.series[i % p.series.length]!,
  }));
  return { type: 'bar', data: { labels: methods, datasets }, options: axes(p, 'GFLOP/s (nominal)') };
}

/** Perplexity of each recipe and packed decode speed over the runs of history.jsonl. */
export function historyChart(history: readonly BenchHistoryEntry[], p: Palette): ChartConfiguration | undefined {
  if (history.length === 0) return undefined;
  const labels = history.map((h) => h.createdAt.replace('T', ' ').slice(0, 16));
  const keys = [...new Set(history.flatMap((h) => Object.keys(h.perplexity)))];
  const datasets: ChartDataset[] = [];
  if (history.some((h) => h.densePerplexity !== undefined)) {
    datasets.push({ label: 'dense perplexity', data: history.map((h) => h.densePerplexity ?? null), borderColor: p.muted, backgroundColor: p.muted, yAxisID: 'y', spanGaps: true });
  }
  keys.forEach((k, i) => {
    const color = p.series[i % p.series.length]!;
    datasets.push({ label: `${k} perplexity`, data: history.map((h) => h.perplexity[k] ?? null), borderColor: color, backgroundColor: color, yAxisID: 'y', spanGaps: true });
  });
  const hasDecode = history.some((h) => h.decodeTokensPerSecond?.packed !== undefined || h.decodeTokensPerSecond?.dense !== undefined);
  if (hasDecode) {
    datasets.push({ label: 'decode tok/s dense', data: history.map((h) => h.decodeTokensPerSecond?.dense ?? null), borderColor: p.foreground, borderDash: [4, 3], yAxisID: 'y1', spanGaps: true });
    datasets.push({ label: 'decode tok/s packed', data: history.map((h) => h.decodeTokensPerSecond?.packed ?? null), borderColor: p.accent, borderDash: [4, 3], yAxisID: 'y1', spanGaps: true });
  }
  const options = axes(p, 'perplexity');
  options.scales['y'] = { ...(options.scales['y'] as object), beginAtZero: false };
  if (hasDecode) {
    options.scales['y1'] = { position: 'right', title: { display: true, text: 'tokens/s', color: p.muted }, ticks: { color: p.muted }, grid: { display: false } };
  }
  return { type: 'line', data: { labels, datasets }, options };
}

/** Headline numbers shown above the charts. */
export function headlines(r: BenchResult): Array<{ label: string; value: string }> {
  const out: Array<{ label: string; value: string }> = [];
  const q = r.quality;
  if (q) {
    out.push({ label: 'dense perplexity', value: q.dense.perplexity.toFixed(3) });
    const best = [...q.runs].filter((x) => x.perplexity).sort((a, b) => a.perplexity!.perplexity - b.perplexity!.perplexity)[0];
    if (best) out.push({ label: 'best recipe', value: `${best.recipe} W${best.wbits}: ${best.perplexity!.perplexity.toFixed(3)}` });
    for (const x of q.obrVsSparseGpt ?? []) out.push({ label: `OBR / SparseGPT+GPTQ perplexity (W${x.wbits})`, value: x.ratio.toFixed(4) });
  }
  const rt = r.runtime;
  if (rt?.ratios) {
    out.push({ label: 'packed / dense size', value: `${(rt.ratios.size * 100).toFixed(1)}%` });
    if (rt.ratios.decode) out.push({ label: 'decode speed packed vs dense', value: `${rt.ratios.decode.toFixed(2)}×` });
    out.push({ label: 'prefill speed packed vs dense', value: `${rt.ratios.prefill.toFixed(2)}×` });
  }
  out.push({ label: 'machine', value: `${r.machine.cpuModel} × ${r.machine.cores}, ${r.machine.executionProvider}, load ${r.machine.loadAverageStart[0]}` });
  return out;
}
