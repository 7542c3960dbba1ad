// The only module that knows about @vscode/webview-ui-toolkit. Views build UI through these
// helpers, so the toolkit (no longer maintained upstream) can be swapped for
// @vscode-elements/elements by rewriting this file alone.
import {
  provideVSCodeDesignSystem,
  vsCodeBadge,
  vsCodeButton,
  vsCodeDataGrid,
  vsCodeDataGridCell,
  vsCodeDataGridRow,
  vsCodeDivider,
  vsCodeDropdown,
  vsCodeOption,
  vsCodeProgressRing,
  vsCodeTextField,
} from '@vscode/webview-ui-toolkit';

let registered = false;

export function registerComponents(): void {
  if (registered) return;
  registered = true;
  provideVSCodeDesignSystem().register(
    vsCodeBadge(),
    vsCodeButton(),
    vsCodeDataGrid(),
    vsCodeDataGridCell(),
    vsCodeDataGridRow(),
    vsCodeDivider(),
    vsCodeDropdown(),
    vsCodeOption(),
    vsCodeProgressRing(),
    vsCodeTextField(),
  );
}

export function button(label: string, onClick: () => void, appearance: 'primary' | 'secondary' | 'icon' = 'secondary'): HTMLElement {
  const b = document.createElement('vscode-button');
  b.setAttribute('appearance', appearance);
  b.textContent = label;
  b.addEventListener('click', onClick);
  return b;
}

export function textField(placeholder: string, value: string, onInput: (value: string) => void): HTMLElement {
  const t = document.createElement('vscode-text-field') as HTMLElement & { value: string };
  t.setAttribute('placeholder', placeholder);
  t.value = value;
  t.addEventListener('input', () => onInput(t.value));
  return t;
}

export function dropdown(options: Array<{ value: string; label: string }>, value: string, onChange: (value: string) => void): HTMLElement {
  const d = document.createElement('vscode-dropdown') as HTMLElement & { value: string };
  for (const o of options) {
    const opt = document.createElement('vscode-option') as HTMLElement & { value: string };
    opt.setAttribute('value', o.value);
    opt.textContent = o.label;
    if (o.value === value) opt.setAttribute('selected', '');
    d.appendChild(opt);
  }
  d.addEventListener('change', () => onChange(d.value));
  return d;
}

export function badge(text: string): HTMLElement {
  const b = document.createElement('vscode-badge');
  b.textContent = text;
  return b;
}

export function progressRing(): HTMLElement {
  return document.createElement('vscode-progress-ring');
}

export function divider(): HTMLElement {
  return document.createElement('vscode-divider');
}

export interface GridColumn {
  key: string;
  title: string;
  /** CSS grid track, e.g. "1fr" or "80px". */
  width: string;
  align?: 'start' | 'end';
}

export interface GridRow {
  id: string;
  cells: Record<string, string>;
  titles?: Record<string, string>;
}

export interface GridHandlers {
  onSort(key: string): void;
  onSelect(id: string): void;
}

/** A data grid that shows thousands of rows by drawing only the ones in view (see dataGrid). */
export interface DataGridView {
  /** The scrolling element to put on the page. */
  readonly element: HTMLElement;
  /** Replaces the rows (already filtered and sorted) and the sort mark of the header. */
  setRows(rows: readonly GridRow[], view: { sortKey?: string; descending?: boolean; selected?: string }): void;
  /** Marks the selected row (by id) and scrolls it into view when `reveal`. */
  select(id: string | undefined, reveal?: boolean): void;
}

/** Rows drawn beyond the visible ones, above and below, so a fast scroll shows no gap. */
const OVERSCAN = 10;
/** Tables with at most this many rows are drawn whole. */
const DRAW_WHOLE = 48;

/**
 * A data grid built from explicit rows (not the toolkit's rowsData), so cells can carry titles
 * and the host page can sort, filter and select. Header cells call onSort with their key.
 *
 * At real size (22–32 blocks × 7 layers, more with several recipes) a toolkit row costs a few
 * milliseconds to create and re-attach, so the grid keeps a fixed pool of row elements — as many
 * as fit the scrolling box plus OVERSCAN on each side — and on scroll, sort or filter only rewrites
 * their cells' text; the grid's top and bottom padding stand in for the rows not drawn, so the
 * scrollbar and the sticky header behave as with every row present. Rows have one fixed height
 * (cells do not wrap), measured from the first drawn row.
 */
export function dataGrid(columns: GridColumn[], handlers: GridHandlers, maxHeightPx = 420): DataGridView {
  const host = document.createElement('div');
  host.className = 'grid-host';
  host.style.maxHeight = `${maxHeightPx}px`;
  const grid = document.createElement('vscode-data-grid');
  grid.setAttribute('generate-header', 'none');
  grid.setAttribute('grid-template-columns', columns.map((c) => c.width).join(' '));
  grid.setAttribute('aria-label', 'Layers');
  const header = document.createElement('vscode-data-grid-row');
  header.setAttribute('row-type', 'sticky-header');
  const headerCells = columns.map((c, i) => {
    const cell = document.createElement('vscode-data-grid-cell');
    cell.setAttribute('cell-type', 'columnheader');
    cell.setAttribute('grid-column', String(i + 1));
    cell.className = 'sortable' + (c.align === 'end' ? ' num' : '');
    cell.dataset['key'] = c.key;
    cell.textContent = c.title;
    cell.addEventListener('click', () => handlers.onSort(c.key));
    header.appendChild(cell);
    return cell;
  });
  grid.appendChild(header);
  host.appendChild(grid);

  let rows: readonly GridRow[] = [];
  let selected: string | undefined;
  let rowHeight = 0;
  let first = -1;
  const pool: HTMLElement[] = [];

  const makeRow = (): HTMLElement => {
    const row = document.createElement('vscode-data-grid-row');
    columns.forEach((c, i) => {
      const cell = document.createElement('vscode-data-grid-cell');
      cell.setAttribute('grid-column', String(i + 1));
      if (c.align === 'end') cell.classList.add('num');
      row.appendChild(cell);
    });
    row.addEventListener('click', () => {
      if (row.dataset['layer']) handlers.onSelect(row.dataset['layer']);
    });
    row.addEventListener('keydown', (e) => {
      if (row.dataset['layer'] && ((e as KeyboardEvent).key === 'Enter' || (e as KeyboardEvent).key === ' ')) handlers.onSelect(row.dataset['layer']);
    });
    return row;
  };

  const poolSize = (): number => {
    if (rows.length <= DRAW_WHOLE) return rows.length;
    const visible = Math.ceil(maxHeightPx / (rowHeight || 24));
    return Math.min(rows.length, visible + 2 * OVERSCAN);
  };

  const fill = (row: HTMLElement, r: GridRow): void => {
    row.dataset['layer'] = r.id;
    row.classList.toggle('selected', r.id === selected);
    const cells = row.children;
    columns.forEach((c, i) => {
      const cell = cells[i] as HTMLElement;
      const text = r.cells[c.key] ?? '';
      if (cell.textContent !== text) cell.textContent = text;
      const title = r.titles?.[c.key];
      if (title) cell.title = title;
      else if (cell.title) cell.removeAttribute('title');
    });
  };

  /** Draws the rows in view into the pool; `force` also when the first row has not changed. */
  const draw = (force: boolean): void => {
    const size = poolSize();
    while (pool.length < size) {
      const row = makeRow();
      pool.push(row);
      grid.appendChild(row);
    }
    while (pool.length > size) pool.pop()!.remove();
    const h = rowHeight || 24;
    const start = Math.max(0, Math.min(rows.length - size, Math.floor(host.scrollTop / h) - OVERSCAN));
    if (!force && start === first) return;
    first = start;
    pool.forEach((row, i) => fill(row, rows[start + i]!));
    grid.style.paddingTop = `${start * h}px`;
    grid.style.paddingBottom = `${(rows.length - start - size) * h}px`;
    if (!rowHeight && pool[0]) {
      // The first draw measures the row height; the pool and padding are sized again with it.
      const measured = pool[0].getBoundingClientRect().height;
      if (measured > 0) {
        rowHeight = measured;
        draw(true);
      }
    }
  };

  let scheduled = false;
  host.addEventListener('scroll', () => {
    if (scheduled || rows.length <= DRAW_WHOLE) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      draw(false);
    });
  });

  return {
    element: host,
    setRows(next, view) {
      rows = next;
      selected = view.selected;
      columns.forEach((c, i) => {
        headerCells[i]!.textContent = c.title + (view.sortKey === c.key ? (view.descending ? ' ▾' : ' ▴') : '');
      });
      draw(true);
    },
    select(id, reveal = false) {
      selected = id;
      for (const row of pool) row.classList.toggle('selected', row.dataset['layer'] === id);
      if (!reveal || id === undefined) return;
      const i = rows.findIndex((r) => r.id === id);
      if (i < 0) return;
      const h = rowHeight || 24;
      const headerHeight = header.getBoundingClientRect().height;
      const top = i * h;
      if (top < host.scrollTop || top + h > host.scrollTop + host.clientHeight - headerHeight) {
        host.scrollTop = Math.max(0, top - (host.clientHeight - headerHeight) / 2);
        draw(false);
      }
    },
  };
}
