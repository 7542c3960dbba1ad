// The layer table: one row per compressed layer, sortable by any column, filterable by name, role
// and block range; clicking a row selects the layer the views below show. At real size (154–224
// layers) the grid draws only the rows in view, and typing in the filter is debounced.
import type { LayerSummary, ModelLayerInfo } from '../../../src/protocol/webview';
import { dataGrid, dropdown, textField, type DataGridView, type GridColumn } from '../components/toolkit';
import { parseBlockRange } from './blocks';
import { filterRows, modelRows, reportRows, sortRows } from './layerRows';

export interface TableState {
  sortKey: string;
  descending: boolean;
  filter: string;
  role: string;
  /** Block range filter as typed ("3-9"); empty = every block. */
  blocks: string;
  selected?: string;
}

export interface TableHandlers {
  onChange(state: TableState): void;
}

type TableData = { kind: 'report'; layers: readonly LayerSummary[] } | { kind: 'model'; layers: readonly ModelLayerInfo[] };

/** The drawn table, for the page to move the selection or show new layers without drawing it again. */
export interface LayerTable {
  select(id: string | undefined, reveal?: boolean): void;
  /**
   * Shows new data (a running job's next layers) in place: filters, order, scroll position and
   * the focus in the filter fields stay. False when it cannot (another kind of table, or the
   * table left the page): draw a new one then.
   */
  update(data: TableData): boolean;
}

/** Typing pauses this long before the table is filtered again. */
const FILTER_DEBOUNCE_MS = 150;

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

function rowsOf(data: TableData) {
  return data.kind === 'report' ? reportRows(data.layers) : modelRows(data.layers);
}

function rolesOf(rows: ReturnType<typeof rowsOf>): string[] {
  return [...new Set(rows.map((r) => r.role))].sort();
}

export function renderLayerTable(container: HTMLElement, data: TableData, state: TableState, handlers: TableHandlers): LayerTable {
  container.replaceChildren();
  let rows = rowsOf(data);
  const columns = data.kind === 'report' ? REPORT_COLUMNS : MODEL_COLUMNS;
  let roles = rolesOf(rows);
  // A job's first layer already has its block, so whether the table has blocks does not change.
  const hasBlocks = data.kind === 'model' ? data.layers.some((l) => l.block !== null) : data.layers.length === 0 || data.layers.some((l) => l.block !== null);

  const toolbar = document.createElement('div');
  toolbar.className = 'toolbar';
  const count = document.createElement('span');
  count.className = 'muted';
  count.id = 'layer-count';
  let timer: ReturnType<typeof setTimeout> | undefined;
  const filterField = textField('Filter layers (name or role)', state.filter, (v) => {
    state.filter = v;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      handlers.onChange(state);
      drawGrid();
    }, FILTER_DEBOUNCE_MS);
  });
  filterField.id = 'layer-filter';
  const roleDropdown = (): HTMLElement => {
    const box = dropdown([{ value: '', label: 'All roles' }, ...roles.map((r) => ({ value: r, label: r }))], state.role, (v) => {
      state.role = v;
      handlers.onChange(state);
      drawGrid();
    });
    box.id = 'layer-role';
    return box;
  };
  let roleBox = roleDropdown();
  toolbar.append(filterField, roleBox);
  if (hasBlocks) {
    const blockField = textField('Blocks, e.g. 3-9', state.blocks, (v) => {
      state.blocks = v;
      blockField.classList.toggle('invalid', parseBlockRange(v) === undefined);
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = undefined;
        handlers.onChange(state);
        drawGrid();
      }, FILTER_DEBOUNCE_MS);
    });
    blockField.id = 'layer-blocks';
    blockField.title = 'Show the layers of these blocks: 7, 3-9, 12- (from 12 on), -5 (up to 5)';
    blockField.classList.toggle('invalid', parseBlockRange(state.blocks) === undefined);
    toolbar.append(blockField);
  }
  toolbar.append(count);
  const grid: DataGridView = dataGrid(columns, {
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
      grid.select(id);
      handlers.onChange(state);
    },
  });
  container.append(toolbar, grid.element);

  /** Draws the filtered, sorted rows; a new filter or order starts at its first row (`fromTop`). */
  function drawGrid(fromTop = true): void {
    if (fromTop) grid.element.scrollTop = 0;
    const visible = sortRows(filterRows(rows, { text: state.filter, role: state.role, blocks: hasBlocks ? state.blocks : '' }), state.sortKey, state.descending);
    count.textContent = visible.length === rows.length ? `${rows.length} layers` : `${visible.length} of ${rows.length} layers`;
    grid.setRows(visible, { sortKey: state.sortKey, descending: state.descending, selected: state.selected });
  }
  drawGrid();
  return {
    select: (id, reveal) => grid.select(id, reveal),
    update(next) {
      if (next.kind !== data.kind || !container.contains(grid.element)) return false;
      data = next;
      rows = rowsOf(next);
      const nextRoles = rolesOf(rows);
      if (nextRoles.join() !== roles.join()) {
        roles = nextRoles;
        const box = roleDropdown();
        roleBox.replaceWith(box);
        roleBox = box;
      }
      drawGrid(false);
      return true;
    },
  };
}
