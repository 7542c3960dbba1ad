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

/**
 * A data grid built from explicit rows (not the toolkit's rowsData), so cells can carry titles
 * and the host page can sort, filter and select. Header cells call onSort with their key.
 */
export function dataGrid(
  columns: GridColumn[],
  rows: Array<{ id: string; cells: Record<string, string>; titles?: Record<string, string>; selected?: boolean }>,
  handlers: { onSort(key: string): void; onSelect(id: string): void; sortKey?: string; descending?: boolean },
): HTMLElement {
  const grid = document.createElement('vscode-data-grid');
  grid.setAttribute('generate-header', 'none');
  grid.setAttribute('grid-template-columns', columns.map((c) => c.width).join(' '));
  grid.setAttribute('aria-label', 'Layers');
  const header = document.createElement('vscode-data-grid-row');
  header.setAttribute('row-type', 'sticky-header');
  columns.forEach((c, i) => {
    const cell = document.createElement('vscode-data-grid-cell');
    cell.setAttribute('cell-type', 'columnheader');
    cell.setAttribute('grid-column', String(i + 1));
    cell.className = 'sortable' + (c.align === 'end' ? ' num' : '');
    cell.dataset['key'] = c.key;
    cell.textContent = c.title + (handlers.sortKey === c.key ? (handlers.descending ? ' ▾' : ' ▴') : '');
    cell.addEventListener('click', () => handlers.onSort(c.key));
    header.appendChild(cell);
  });
  grid.appendChild(header);
  for (const r of rows) {
    const row = document.createElement('vscode-data-grid-row');
    row.dataset['layer'] = r.id;
    if (r.selected) row.classList.add('selected');
    columns.forEach((c, i) => {
      const cell = document.createElement('vscode-data-grid-cell');
      cell.setAttribute('grid-column', String(i + 1));
      if (c.align === 'end') cell.classList.add('num');
      cell.textContent = r.cells[c.key] ?? '';
      const title = r.titles?.[c.key];
      if (title) cell.title = title;
      row.appendChild(cell);
    });
    row.addEventListener('click', () => handlers.onSelect(r.id));
    row.addEventListener('keydown', (e) => {
      if ((e as KeyboardEvent).key === 'Enter' || (e as KeyboardEvent).key === ' ') handlers.onSelect(r.id);
    });
    grid.appendChild(row);
  }
  return grid;
}
