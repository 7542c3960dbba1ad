// The Benchmarks view: headline numbers, perplexity per recipe, latency and size dense vs packed,
// compression speed, core throughput and the history over runs. The inspector mounts it with
// renderBenchmarks(container, data); calling it again with new data updates the charts in place.
import type { ChartConfiguration } from 'chart.js';
import type { BenchmarksViewData } from '../../../src/protocol/bench';
import { palette } from '../theme';
import { ChartSlot } from '../views/charts';
import { coreChart, headlines, type BenchChartConfig, historyChart, latencyChart, perplexityChart, sizeChart, speedChart } from './charts';

const slots = new WeakMap<HTMLElement, Map<string, ChartSlot>>();

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: Array<Node | string>): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

/** Renders (or re-renders) the Benchmarks view into `container`. */
export function renderBenchmarks(container: HTMLElement, data: BenchmarksViewData): void {
  const p = palette();
  const r = data.latest;
  let charts = slots.get(container);
  if (!charts) {
    charts = new Map();
    slots.set(container, charts);
  }
  for (const s of charts.values()) s.destroy();
  charts.clear();
  container.replaceChildren();
  container.classList.add('obr-benchmarks');

  if (!r && data.history.length === 0) {
    container.append(el('p', { class: 'muted' }, 'No benchmark results yet. Run "OBR: Run Benchmarks" or `obr bench MODEL.onnx`.'));
    return;
  }
  if (r) {
    container.append(
      el('h2', {}, 'Benchmarks'),
      el('p', { class: 'muted' }, `${r.model.path} — ${r.createdAt}${r.spec.command ? ` — ${r.spec.command}` : ''}`),
    );
    const table = el('table', { class: 'bench-headlines' });
    for (const h of headlines(r)) {
      const th = el('th', { scope: 'row' }, h.label);
      // CSSOM, not a style attribute: the webview's CSP allows no inline styles.
      th.style.textAlign = 'left';
      th.style.fontWeight = 'normal';
      th.style.paddingRight = '1.5em';
      table.append(el('tr', {}, th, el('td', {}, h.value)));
    }
    container.append(table);
    for (const n of r.notes) container.append(el('p', { class: 'muted' }, n));
    if (r.runtime) container.append(el('p', { class: 'bench-note' }, r.runtime.sparsityNote));
  }

  const sections: Array<[string, string, BenchChartConfig | undefined, number]> = r
    ? [
        ['bench-ppl', 'Perplexity per recipe', perplexityChart(r, p), 40 + 28 * ((r.quality?.runs.length ?? 0) + 1)],
        ['bench-latency', 'Latency: dense vs packed', latencyChart(r, p), 240],
        ['bench-size', 'Size on disk', sizeChart(r, p), 220],
        ['bench-speed', 'Compression time per recipe', speedChart(r, p), 220],
        ['bench-core', 'Core kernels', coreChart(r, p), 220],
      ]
    : [];
  sections.push(['bench-history', 'History', historyChart(data.history, p), 260]);
  for (const [id, title, config, height] of sections) {
    if (!config) continue;
    const body = el('div', { class: 'section-body' });
    container.append(el('section', { id }, el('h3', {}, title), body));
    const slot = new ChartSlot(body, `${id}-chart`, Math.max(160, height));
    slot.show(config as unknown as ChartConfiguration);
    charts.set(id, slot);
  }
  if (r?.warnings.length) {
    const ul = el('ul', { class: 'bench-warnings' });
    for (const w of new Set(r.warnings)) ul.append(el('li', {}, w));
    container.append(el('h3', {}, 'Warnings'), ul);
  }
}

/** Destroys the charts of a container rendered by renderBenchmarks (when the view is unmounted). */
export function disposeBenchmarks(container: HTMLElement): void {
  const charts = slots.get(container);
  for (const s of charts?.values() ?? []) s.destroy();
  slots.delete(container);
}
