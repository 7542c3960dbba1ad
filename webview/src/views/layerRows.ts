// The layer table's rows: cell texts and sort values per layer, filtering by text, role and block
// range, and sorting — pure functions of the data (no DOM), unit-tested in Node. layerTable.ts
// draws them.
import type { LayerSummary, ModelLayerInfo } from '../../../src/protocol/webview';
import { num, pct, rel, seconds } from '../format';
import { parseBlockRange, relativeLoss } from './blocks';

/** The weight grid of a layer for the table: "row" (one scale per row) or "g128", "+zp" when asymmetric. */
export function groupLabel(l: Pick<LayerSummary, 'groupSize' | 'asymmetric'>): string {
  const g = l.groupSize ?? 0;
  return `${g > 0 ? `g${g}` : 'row'}${l.asymmetric ? '+zp' : ''}`;
}

export type Row = { id: string; index: number; sortValues: Record<string, number | string>; cells: Record<string, string>; titles: Record<string, string>; role: string; name: string; block: number | null };

export function reportRows(layers: readonly LayerSummary[]): Row[] {
  return layers.map((l, index) => {
    const r = relativeLoss(l);
    return {
      id: l.name,
      index,
      name: l.name,
      role: l.role,
      block: l.block,
      sortValues: {
        index,
        block: l.block ?? 1e9,
        name: l.name,
        role: l.role,
        shape: l.rows * l.cols,
        sparsity: l.sparsity,
        wbits: l.wbits,
        // Per row sorts as the widest group; asymmetric after symmetric of the same size.
        group: (l.groupSize || 1e9) + (l.asymmetric ? 0.5 : 0),
        pruning: r.pruning,
        quantization: r.quantization,
        recovered: r.recovered,
        total: r.total,
        seconds: l.seconds,
      },
      cells: {
        index: String(index),
        block: l.block === null ? '–' : String(l.block),
        name: l.name,
        role: l.role,
        shape: `${l.rows}×${l.cols}`,
        sparsity: pct(l.sparsity),
        wbits: String(l.wbits),
        group: groupLabel(l),
        pruning: rel(r.pruning),
        quantization: rel(r.quantization),
        recovered: rel(r.recovered),
        total: rel(r.total),
        seconds: seconds(l.seconds),
      },
      titles: {
        pruning: `pruning loss ${num(l.loss.pruning)} / output energy ${num(l.loss.outputEnergy)}`,
        quantization: `quantization loss ${num(l.loss.quantization)}`,
        recovered: `recovered by compensation ${num(l.loss.recovered)} (pruning + quantization − total)`,
        total: `total loss tr(ΔW H ΔWᵀ) = ${num(l.loss.total)}`,
        group: `${(l.groupSize ?? 0) > 0 ? `one scale per ${l.groupSize} input columns of a row` : 'one scale per output row'}${l.asymmetric ? ', with a zero point each' : ', symmetric'}`,
      },
    };
  });
}

export function modelRows(layers: readonly ModelLayerInfo[]): Row[] {
  return layers.map((l, index) => ({
    id: l.name,
    index,
    name: l.name,
    role: l.role,
    block: l.block,
    sortValues: { index, block: l.block ?? 1e9, name: l.name, role: l.role, shape: l.rows * l.cols, dtype: l.dtype, mean: l.mean, std: l.std, absMax: l.absMax, crest: l.crest, zeros: l.zeros },
    cells: {
      index: String(index),
      block: l.block === null ? '–' : String(l.block),
      name: l.name,
      role: l.role,
      shape: `${l.rows}×${l.cols}`,
      dtype: l.dtype,
      mean: num(l.mean, 4),
      std: num(l.std, 4),
      absMax: num(l.absMax, 3),
      crest: num(l.crest, 1),
      zeros: pct(l.zeros),
    },
    titles: { crest: 'max|w| / rms(w): heavy tails make round-to-nearest coarse' },
  }));
}


/** What the table shows: layers whose name contains `text` (or whose role is `text`), of `role`, in `blocks` ("3-9"). */
export interface RowFilter {
  text: string;
  role: string;
  blocks: string;
}

/**
 * The rows passing the filter. A block range that does not parse filters nothing (the field
 * shows it as invalid); with a range, layers outside blocks (lm_head) are left out.
 */
export function filterRows(rows: readonly Row[], f: RowFilter): Row[] {
  const text = f.text.trim().toLowerCase();
  const range = parseBlockRange(f.blocks) ?? {};
  const ranged = range.from !== undefined || range.to !== undefined;
  const from = range.from ?? -Infinity;
  const to = range.to ?? Infinity;
  return rows.filter(
    (r) =>
      (!f.role || r.role === f.role) &&
      (!text || r.name.toLowerCase().includes(text) || r.role === text) &&
      (!ranged || (r.block !== null && r.block >= from && r.block <= to)),
  );
}

/** Rows sorted by a column's sort value (NaN first ascending), ties in report order; a new array. */
export function sortRows(rows: readonly Row[], key: string, descending: boolean): Row[] {
  const value = (r: Row): number | string => {
    const v = r.sortValues[key] ?? r.index;
    return typeof v === 'number' && Number.isNaN(v) ? -Infinity : v;
  };
  return [...rows].sort((a, b) => {
    const x = value(a);
    const y = value(b);
    const c = typeof x === 'string' || typeof y === 'string' ? String(x).localeCompare(String(y)) : x - y;
    return (descending ? -c : c) || a.index - b.index;
  });
}
