// The inspector's view of a report at real size (22–32 decoder blocks × 7 layers, several recipes):
// layers grouped by block for the error chart, the window of blocks the chart shows (zoom and
// pan in whole blocks), and block ranges typed by the user. Pure functions of the data — no DOM,
// no chart.js — so they are unit-tested in Node (test/unit/webview).
import type { LayerSummary, ReportSummary } from '../../../src/protocol/webview';

/** The blocks a report's layers span (layers outside blocks, e.g. lm_head, have block null). */
export interface BlockBounds {
  first: number;
  last: number;
}

/** The blocks the error chart shows: from … to, inclusive, within the bounds. */
export interface BlockWindow {
  from: number;
  to: number;
}

/** Relative loss terms of a layer: each divided by the dense output energy tr(W H Wᵀ). */
export function relativeLoss(l: Pick<LayerSummary, 'loss'>): { pruning: number; quantization: number; recovered: number; total: number } {
  const e = l.loss.outputEnergy > 0 ? l.loss.outputEnergy : NaN;
  return { pruning: l.loss.pruning / e, quantization: l.loss.quantization / e, recovered: l.loss.recovered / e, total: l.loss.total / e };
}

export function blockBounds(layers: ReadonlyArray<Pick<LayerSummary, 'block'>>): BlockBounds | undefined {
  let first = Infinity;
  let last = -Infinity;
  for (const l of layers) {
    if (l.block === null) continue;
    if (l.block < first) first = l.block;
    if (l.block > last) last = l.block;
  }
  return Number.isFinite(first) ? { first, last } : undefined;
}

/** Number of blocks a window shows. */
export function windowWidth(w: BlockWindow): number {
  return w.to - w.from + 1;
}

/** The window moved inside the bounds (keeping its width when it fits), with from ≤ to. */
export function clampWindow(w: BlockWindow, b: BlockBounds): BlockWindow {
  let from = Math.round(Math.min(w.from, w.to));
  let to = Math.round(Math.max(w.from, w.to));
  const width = Math.min(to - from + 1, b.last - b.first + 1);
  if (from < b.first) from = b.first;
  if (from + width - 1 > b.last) from = b.last - width + 1;
  to = from + width - 1;
  return { from, to };
}

/** Whether the window shows every block. */
export function isWholeRange(w: BlockWindow, b: BlockBounds): boolean {
  return w.from <= b.first && w.to >= b.last;
}

/**
 * Zooms by `factor` (< 1 zooms in, > 1 out) around block `center` (default: the window's middle),
 * which keeps its relative place in the window. At least one block stays shown; the width
 * changes by at least one block per step so repeated steps never stall.
 */
export function zoomWindow(w: BlockWindow, b: BlockBounds, factor: number, center?: number): BlockWindow {
  const width = windowWidth(w);
  let next = Math.round(width * factor);
  if (factor < 1 && next >= width) next = width - 1;
  if (factor > 1 && next <= width) next = width + 1;
  next = Math.max(1, Math.min(b.last - b.first + 1, next));
  const c = Math.min(w.to, Math.max(w.from, center ?? (w.from + w.to) / 2));
  const t = width > 1 ? (c - w.from) / (width - 1) : 0.5;
  const from = Math.round(c - t * (next - 1));
  return clampWindow({ from, to: from + next - 1 }, b);
}

/** Moves the window by `delta` blocks (negative = towards block 0), keeping its width. */
export function panWindow(w: BlockWindow, b: BlockBounds, delta: number): BlockWindow {
  return clampWindow({ from: w.from + Math.round(delta), to: w.to + Math.round(delta) }, b);
}

/**
 * A block range as typed: "7", "3-9" (also "3–9", "3..9", "3 to 9"), "12-" (12 onwards), "-5"
 * (up to 5); empty = every block. Undefined when the text is not a range.
 */
export function parseBlockRange(text: string): { from?: number; to?: number } | undefined {
  const t = text.trim();
  if (!t) return {};
  const one = /^(\d+)$/.exec(t);
  if (one) return { from: Number(one[1]), to: Number(one[1]) };
  const m = /^(\d*)\s*(?:-|–|\.\.|to)\s*(\d*)$/.exec(t);
  if (!m || (!m[1] && !m[2])) return undefined;
  const from = m[1] ? Number(m[1]) : undefined;
  const to = m[2] ? Number(m[2]) : undefined;
  return from !== undefined && to !== undefined && from > to ? { from: to, to: from } : { from, to };
}

export function formatBlockRange(w: BlockWindow): string {
  return w.from === w.to ? String(w.from) : `${w.from}–${w.to}`;
}

/**
 * The layers the chart's layer view shows for a window: the blocks' layers in report order, and
 * the layers outside blocks (lm_head, …) when the window reaches the last block.
 */
export function layersInWindow<L extends Pick<LayerSummary, 'block'>>(layers: readonly L[], w: BlockWindow, b: BlockBounds | undefined): L[] {
  if (!b) return [...layers];
  const tail = w.to >= b.last;
  return layers.filter((l) => (l.block === null ? tail : l.block >= w.from && l.block <= w.to));
}

/** What the bars of the block view show for each layer: this job's loss terms, or a baseline's total. */
export type ErrorMetric = 'total' | 'pruning' | 'quantization' | `baseline:${string}`;

export interface BlockChartData {
  /** One category per block of the window ("0", "1", …), and "other" for layers outside blocks. */
  labels: string[];
  /** The block of each category (null: the layers outside blocks). */
  blocks: Array<number | null>;
  /**
   * One bar series per layer role, in the order roles first appear in the report (q, k, v, o, gate,
   * up, down): `data[i]` is the relative loss of that role's layer in category i, `layers[i]` its
   * name (null where the category has no such layer). A role that appears twice in a block (rare)
   * gets a second series, "role #2".
   */
  roles: Array<{ role: string; data: Array<number | null>; layers: Array<string | null> }>;
  /**
   * Per recipe (this job's first, then each baseline): Σ total loss / Σ output energy over the
   * category's layers — the block-level comparison of recipes on the same Hessians.
   */
  recipes: Array<{ recipe: string; data: Array<number | null> }>;
}

const positive = (x: number): number | null => (Number.isFinite(x) && x > 0 ? x : null);

/** The block view of the error chart for the blocks of a window (see BlockChartData). */
export function blockChartData(
  layers: readonly LayerSummary[],
  baselines: ReportSummary['baselines'],
  recipe: string,
  w: BlockWindow,
  metric: ErrorMetric,
): BlockChartData {
  const b = blockBounds(layers);
  const shown = layersInWindow(layers, w, b);
  const blocks: Array<number | null> = [];
  if (b) for (let i = w.from; i <= w.to; i++) blocks.push(i);
  if (shown.some((l) => l.block === null)) blocks.push(null);
  const category = new Map(blocks.map((blk, i) => [blk, i]));
  const baselineTotals = (baselines ?? []).map((x) => ({ recipe: x.recipe, byName: new Map(x.layers.map((l) => [l.name, l.loss])) }));
  const metricBaseline = metric.startsWith('baseline:') ? baselineTotals.find((x) => `baseline:${x.recipe}` === metric) : undefined;

  const roles: BlockChartData['roles'] = [];
  const seriesOf = new Map<string, BlockChartData['roles'][number]>();
  const seen = new Map<string, number>();
  const sums = [{ recipe, loss: blocks.map(() => 0), energy: blocks.map(() => 0) }, ...baselineTotals.map((x) => ({ recipe: x.recipe, loss: blocks.map(() => 0), energy: blocks.map(() => 0) }))];
  for (const l of shown) {
    const i = category.get(l.block)!;
    const occurrence = (seen.get(`${i}|${l.role}`) ?? 0) + 1;
    seen.set(`${i}|${l.role}`, occurrence);
    const key = occurrence === 1 ? l.role : `${l.role} #${occurrence}`;
    let series = seriesOf.get(key);
    if (!series) {
      series = { role: key, data: blocks.map(() => null), layers: blocks.map(() => null) };
      seriesOf.set(key, series);
      roles.push(series);
    }
    let value: number;
    if (metricBaseline) {
      const loss = metricBaseline.byName.get(l.name);
      value = loss && loss.outputEnergy > 0 ? loss.total / loss.outputEnergy : NaN;
    } else {
      value = relativeLoss(l)[metric as 'total' | 'pruning' | 'quantization'];
    }
    series.data[i] = positive(value);
    series.layers[i] = l.name;
    sums[0]!.loss[i]! += l.loss.total;
    sums[0]!.energy[i]! += l.loss.outputEnergy;
    baselineTotals.forEach((x, k) => {
      const loss = x.byName.get(l.name);
      if (!loss) return;
      sums[k + 1]!.loss[i]! += loss.total;
      sums[k + 1]!.energy[i]! += loss.outputEnergy;
    });
  }
  return {
    labels: blocks.map((blk) => (blk === null ? 'other' : String(blk))),
    blocks,
    roles,
    recipes: sums.map((s) => ({ recipe: s.recipe, data: s.loss.map((x, i) => (s.energy[i]! > 0 ? positive(x / s.energy[i]!) : null)) })),
  };
}
