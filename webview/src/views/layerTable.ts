// The layer table: one row per compressed layer, sortable by any column, filterable by name or
// role; clicking a row selects the layer the views below show.
import type { LayerReport } from '../../../src/protocol/report';
import type { ModelLayerInfo } from '../../../src/protocol/webview';
import { dataGrid, dropdown, textField, type GridColumn } from '../components/toolkit';
import { num, pct, rel, seconds } from '../format';

export interface TableState {
  sortKey: string;
  descending: boolean;
  filter: string;
  role: string;
  selected?: string;
}

export interface TableHandlers {
  onChange(state: TableState): void;
}

/** The columns naming a layer, shared by the report and the model tables. */
const LAYER_COLUMNS: GridColumn[] = [
  { key: 'index', title: '#', width: '56px', align: 'end' },
  { key: 'block', title: 'Block', width: '68px', align: 'end' },
  { key: 'name', title: 'Layer', width: 'minmax(160px, 3fr)' },
  { key: 'role', title: 'Role', width: '64px' },
  { key: 'shape', title: 'Shape', width: '96px', align: 'end' },
];

const REPORT_COLUMNS: GridColumn[] = [
  ...LAYER_COLUMNS,
  { key: 'sparsity', title: 'Sparsity', width: '92px', align: 'end' },
  { key: 'wbits', title: 'Bits', width: '60px', align: 'end' },
  { key: 'group', title: 'Group', width: '84px', align: 'end' },
  { key: 'pruning', title: 'Pruning/E', width: '100px', align: 'end' },
  { key: 'quantization', title: 'Quant/E', width: '92px', align: 'end' },
  { key: 'recovered', title: 'Recovered/E', width: '116px', align: 'end' },
  { key: 'total', title: 'Total/E', width: '92px', align: 'end' },
  { key: 'seconds', title: 'Time', width: '80px', align: 'end' },
];

const MODEL_COLUMNS: GridColumn[] = [
  ...LAYER_COLUMNS,
  { key: 'dtype', title: 'Type', width: '72px' },
  { key: 'mean', title: 'Mean', width: '84px', align: 'end' },
  { key: 'std', title: 'Std', width: '84px', align: 'end' },
  { key: 'absMax', title: 'max|w|', width: '84px', align: 'end' },
  { key: 'crest', title: 'Crest', width: '72px', align: 'end' },
  { key: 'zeros', title: 'Zeros', width: '72px', align: 'end' },
];

/** The weight grid of a layer for the table: "row" (one scale per row) or "g128", "+zp" when asymmetric. */
export function groupLabel(l: Pick<LayerReport, 'groupSize' | 'asymmetric'>): string {
  const g = l.groupSize ?? 0;
  return `${g > 0 ? `g${g}` : 'row'}${l.asymmetric ? '+zp' : ''}`;
}

/** Relative loss terms of a layer: each divided by the dense output energy tr(W H Wᵀ). */
export function relativeLoss(l: LayerReport): { pruning: number; quantization: number; recovered: number; total: number } {
  const e = l.loss.outputEnergy > 0 ? l.loss.outputEnergy : NaN;
  return { pruning: l.loss.pruning / e, quantization: l.loss.quantization / e, recovered: l.loss.recovered / e, total: l.loss.total / e };
}

type Row = { id: string; index: number; sortValues: Record<string, number | string>; cells: Record<string, string>; titles: Record<string, string>; role: string; name: string };

function reportRows(layers: LayerReport[]): Row[] {
  return layers.map((l, index) => {
    const r = relativeLoss(l);
    return {
      id: l.name,
      index,
      name: l.name,
      role: l.role,
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

function modelRows(layers: ModelLayerInfo[]): Row[] {
  return layers.map((l, index) => ({
    id: l.name,
    index,
    name: l.name,
    role: l.role,
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

export function renderLayerTable(
  container: HTMLElement,
  data: { kind: 'report'; layers: LayerReport[] } | { kind: 'model'; layers: ModelLayerInfo[] },
  state: TableState,
  handlers: TableHandlers,
): void {
  container.replaceChildren();
  const rows = data.kind === 'report' ? reportRows(data.layers) : modelRows(data.layers);
  const columns = data.kind === 'report' ? REPORT_COLUMNS : MODEL_COLUMNS;
  const roles = [...new Set(rows.map((r) => r.role))].sort();

  const toolbar = document.createElement('div');
  toolbar.className = 'toolbar';
  const count = document.createElement('span');
  count.className = 'muted';
  const filterField = textField('Filter layers (name or role)', state.filter, (v) => {
    state.filter = v;
    handlers.onChange(state);
    drawGrid();
  });
  filterField.id = 'layer-filter';
  const roleBox = dropdown([{ value: '', label: 'All roles' }, ...roles.map((r) => ({ value: r, label: r }))], state.role, (v) => {
    state.role = v;
    handlers.onChange(state);
    drawGrid();
  });
  toolbar.append(filterField, roleBox, count);
  const gridHost = document.createElement('div');
  gridHost.className = 'grid-host';
  container.append(toolbar, gridHost);

  function drawGrid(): void {
    const f = state.filter.trim().toLowerCase();
    const visible = rows.filter((r) => (!state.role || r.role === state.role) && (!f || r.name.toLowerCase().includes(f) || r.role === f));
    const k = state.sortKey;
    visible.sort((a, b) => {
      const x = a.sortValues[k] ?? a.index;
      const y = b.sortValues[k] ?? b.index;
      const c = typeof x === 'string' || typeof y === 'string' ? String(x).localeCompare(String(y)) : (Number.isNaN(x) ? -Infinity : x) - (Number.isNaN(y) ? -Infinity : y);
      return state.descending ? -c : c;
    });
    count.textContent = visible.length === rows.length ? `${rows.length} layers` : `${visible.length} of ${rows.length} layers`;
    gridHost.replaceChildren(
      dataGrid(
        columns,
        visible.map((r) => ({ id: r.id, cells: r.cells, titles: r.titles, selected: r.id === state.selected })),
        {
          sortKey: state.sortKey,
          descending: state.descending,
          onSort: (key) => {
            if (state.sortKey === key) state.descending = !state.descending;
            else {
              state.sortKey = key;
              state.descending = !['index', 'block', 'name', 'role'].includes(key);
            }
            handlers.onChange(state);
            drawGrid();
          },
          onSelect: (id) => {
            state.selected = id;
            for (const row of gridHost.querySelectorAll<HTMLElement>('vscode-data-grid-row[data-layer]')) {
              row.classList.toggle('selected', row.dataset['layer'] === id);
            }
            handlers.onChange(state);
          },
        },
      ),
    );
  }
  drawGrid();
}
