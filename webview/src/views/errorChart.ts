// The "Error per layer" section at real size. Two views of the same losses:
//   - by block: one group of bars per decoder block (a bar per layer role), recipes' block totals
//     as lines — readable at 22–32 blocks where 150–220 single bars are not;
//   - by layer: the pruning / quantization / total bars of every layer of the shown blocks.
// Both show a window of blocks: zoom (buttons, Ctrl/⌘ + wheel around the pointer), pan (buttons,
// dragging, Shift + wheel) and a typed range. A double-click on a block group opens its layers.
// Zoom and pan are done here, in whole blocks, instead of with chartjs-plugin-zoom: the plugin
// zooms category indexes (not blocks), would pull in hammerjs (unmaintained since 2016), and the
// window is state the table and the saved view state share.
import type { LayerSummary, ReportSummary } from '../../../src/protocol/webview';
import { button, dropdown, textField } from '../components/toolkit';
import {
  blockBounds,
  blockChartData,
  clampWindow,
  formatBlockRange,
  isWholeRange,
  layersInWindow,
  panWindow,
  parseBlockRange,
  windowWidth,
  zoomWindow,
  type BlockBounds,
  type BlockWindow,
  type ErrorMetric,
} from './blocks';
import { blockChartConfig, errorChartConfig, type ChartSlot } from './charts';

export interface ErrorChartState {
  /** Unset: by block for reports of 8 blocks or more, else by layer. */
  view?: 'blocks' | 'layers';
  metric: ErrorMetric;
  /** Unset: every block. */
  window?: BlockWindow;
  /** Where a double-click on a block came from, for the Back button. */
  back?: { view: 'blocks' | 'layers'; window?: BlockWindow };
}

export interface ErrorChartHandlers {
  onSelect(layer: string): void;
  /** The view, metric or window changed (to save the state). */
  onChange(state: ErrorChartState): void;
}

interface Shown {
  layers: readonly LayerSummary[];
  baselines: ReportSummary['baselines'];
  recipe: string;
  selected: string | undefined;
}

/** Reports with at least this many blocks open in the block view. */
const BLOCK_VIEW_FROM = 8;

export class ErrorChart {
  /** Where the chart's canvas goes (main.ts owns the slot, so a theme change can rebuild it). */
  readonly chartHost: HTMLElement;
  private readonly toolbar: HTMLElement;
  private readonly viewBox: HTMLElement & { value: string };
  private metricBox: (HTMLElement & { value: string }) | undefined;
  private metricKey = '';
  private readonly rangeField: HTMLElement & { value: string };
  private readonly windowText: HTMLElement;
  private readonly backButton: HTMLElement;
  private shown: Shown | undefined;
  private slot: ChartSlot | undefined;
  /** What each category of the drawn chart is: a block (block view) or a layer (layer view). */
  private categories: { blocks: Array<number | null>; roleLayers?: Array<Array<string | null>>; layers?: readonly LayerSummary[] } = { blocks: [] };
  private drag: { x: number; window: BlockWindow; moved: boolean } | undefined;
  private suppressClick = false;

  constructor(
    private readonly body: HTMLElement,
    private readonly state: ErrorChartState,
    private readonly handlers: ErrorChartHandlers,
  ) {
    this.toolbar = document.createElement('div');
    this.toolbar.className = 'toolbar chart-toolbar';
    this.viewBox = dropdown(
      [
        { value: 'blocks', label: 'By block' },
        { value: 'layers', label: 'By layer' },
      ],
      state.view ?? 'blocks',
      (v) => {
        this.state.view = v === 'layers' ? 'layers' : 'blocks';
        this.state.back = undefined;
        this.changed();
      },
    ) as HTMLElement & { value: string };
    this.viewBox.id = 'chart-view';
    this.rangeField = textField('Blocks', '', (v) => {
      const r = parseBlockRange(v);
      const b = this.bounds();
      this.rangeField.classList.toggle('invalid', r === undefined);
      if (!r || !b) return;
      this.setWindow({ from: r.from ?? b.first, to: r.to ?? b.last });
    }) as HTMLElement & { value: string };
    this.rangeField.id = 'chart-blocks';
    this.rangeField.title = 'Blocks to show: 7, 3-9, 12- (from 12 on), -5 (up to 5); empty = all';
    this.windowText = document.createElement('span');
    this.windowText.className = 'muted';
    this.windowText.id = 'chart-window';
    const tool = (id: string, label: string, title: string, act: () => void): HTMLElement => {
      const b = button(label, act);
      b.id = id;
      b.title = title;
      return b;
    };
    this.backButton = tool('chart-back', '← Blocks', 'Back to the blocks', () => {
      const back = this.state.back;
      this.state.back = undefined;
      this.state.view = back?.view ?? 'blocks';
      this.setWindow(back?.window);
    });
    this.toolbar.append(
      this.backButton,
      this.viewBox,
      this.rangeField,
      tool('chart-zoom-in', '+', 'Zoom in (Ctrl/⌘ + wheel over the chart)', () => this.zoom(0.5)),
      tool('chart-zoom-out', '−', 'Zoom out', () => this.zoom(2)),
      tool('chart-pan-left', '◀', 'Earlier blocks (drag the chart, or Shift + wheel)', () => this.pan(-1)),
      tool('chart-pan-right', '▶', 'Later blocks', () => this.pan(1)),
      tool('chart-reset', 'All blocks', 'Show every block', () => this.setWindow(undefined)),
      this.windowText,
    );
    this.chartHost = document.createElement('div');
    const hint = document.createElement('p');
    hint.className = 'muted hint';
    hint.textContent = 'Click a bar to select its layer; double-click a block to show its layers. Ctrl/⌘ + wheel zooms, drag or Shift + wheel pans.';
    body.replaceChildren(this.toolbar, this.chartHost, hint);
  }

  /** Whether the chart's elements are still on the page (main.ts re-creates the chart otherwise). */
  get attached(): boolean {
    return this.body.contains(this.toolbar);
  }

  /** Draws the chart for these layers into `slot` (a new slot after a theme change is wired again). */
  update(slot: ChartSlot, shown: Shown): void {
    this.shown = shown;
    if (slot !== this.slot) {
      this.slot = slot;
      this.wire(slot);
    }
    this.draw();
  }

  private bounds(): BlockBounds | undefined {
    return this.shown ? blockBounds(this.shown.layers) : undefined;
  }

  private view(): 'blocks' | 'layers' {
    const b = this.bounds();
    if (!b) return 'layers';
    return this.state.view ?? (b.last - b.first + 1 >= BLOCK_VIEW_FROM ? 'blocks' : 'layers');
  }

  private window(): BlockWindow | undefined {
    const b = this.bounds();
    if (!b) return undefined;
    return this.state.window ? clampWindow(this.state.window, b) : { from: b.first, to: b.last };
  }

  private changed(): void {
    this.handlers.onChange(this.state);
    this.draw();
  }

  private setWindow(w: BlockWindow | undefined): void {
    const b = this.bounds();
    this.state.window = w && b && !isWholeRange(clampWindow(w, b), b) ? clampWindow(w, b) : undefined;
    this.changed();
  }

  private zoom(factor: number, center?: number): void {
    const b = this.bounds();
    const w = this.window();
    if (b && w) this.setWindow(zoomWindow(w, b, factor, center));
  }

  private pan(direction: number): void {
    const b = this.bounds();
    const w = this.window();
    // A step is half the window (at least one block), so context carries over between steps.
    if (b && w) this.setWindow(panWindow(w, b, direction * Math.max(1, Math.floor(windowWidth(w) / 2))));
  }

  /** The metric dropdown: this job's loss terms and each baseline's total (rebuilt when the baselines change). */
  private metricChoices(): void {
    const baselines = this.shown?.baselines ?? [];
    const key = baselines.map((b) => b.recipe).join(',');
    const options: Array<{ value: ErrorMetric; label: string }> = [
      { value: 'total', label: 'Total (after compensation)' },
      { value: 'pruning', label: 'Pruning alone' },
      { value: 'quantization', label: 'Quantization alone' },
      ...baselines.map((b) => ({ value: `baseline:${b.recipe}` as ErrorMetric, label: `${b.recipe} total (baseline)` })),
    ];
    if (!options.some((o) => o.value === this.state.metric)) this.state.metric = 'total';
    if (this.metricBox && key === this.metricKey) return;
    this.metricKey = key;
    const box = dropdown(options, this.state.metric, (v) => {
      this.state.metric = v as ErrorMetric;
      this.changed();
    }) as HTMLElement & { value: string };
    box.id = 'chart-metric';
    box.title = 'What the bars show for each layer';
    if (this.metricBox) this.metricBox.replaceWith(box);
    else this.viewBox.after(box);
    this.metricBox = box;
  }

  private metricLabel(): string {
    const m = this.state.metric;
    return m.startsWith('baseline:') ? `${m.slice('baseline:'.length)} total loss` : m === 'total' ? 'total loss' : `${m} loss`;
  }

  private draw(): void {
    const shown = this.shown;
    const slot = this.slot;
    if (!shown || !slot) return;
    const b = this.bounds();
    const w = this.window();
    const view = this.view();
    this.metricChoices();
    this.viewBox.value = view;
    this.metricBox!.hidden = view !== 'blocks';
    for (const el of this.toolbar.querySelectorAll<HTMLElement>('#chart-blocks, #chart-zoom-in, #chart-zoom-out, #chart-pan-left, #chart-pan-right, #chart-reset')) el.hidden = !b;
    this.viewBox.hidden = !b;
    this.backButton.hidden = !this.state.back || view !== 'layers';
    if (b && w) {
      const text = isWholeRange(w, b) ? '' : formatBlockRange(w);
      // Leave the field alone while the user types in it.
      if (document.activeElement !== this.rangeField && this.rangeField.value !== text) this.rangeField.value = text;
      this.windowText.textContent = `blocks ${formatBlockRange(w)} of ${formatBlockRange({ from: b.first, to: b.last })}`;
    } else {
      this.windowText.textContent = '';
    }
    if (view === 'blocks' && b && w) {
      const d = blockChartData(shown.layers, shown.baselines, shown.recipe, w, this.state.metric);
      this.categories = { blocks: d.blocks, roleLayers: d.roles.map((r) => r.layers) };
      slot.show(blockChartConfig(d, this.metricLabel(), shown.selected));
    } else {
      const layers = w ? layersInWindow(shown.layers, w, b) : shown.layers;
      this.categories = { blocks: layers.map((l) => l.block), layers };
      slot.show(errorChartConfig(layers, shown.baselines, shown.selected));
    }
    slot.canvas.dataset['view'] = view;
    slot.canvas.dataset['window'] = w ? `${w.from}-${w.to}` : '';
  }

  /** The block a category stands for (a layer's block in the layer view); null outside blocks. */
  private blockOf(category: number | undefined): number | null | undefined {
    return category === undefined ? undefined : this.categories.blocks[Math.max(0, Math.min(this.categories.blocks.length - 1, category))];
  }

  private wire(slot: ChartSlot): void {
    const canvas = slot.canvas;
    canvas.addEventListener('click', (e) => {
      if (this.suppressClick) {
        this.suppressClick = false;
        return;
      }
      if (this.categories.roleLayers) {
        const hit = slot.barAt(e);
        const name = hit ? this.categories.roleLayers[hit.datasetIndex]?.[hit.index] : undefined;
        if (name) this.handlers.onSelect(name);
        return;
      }
      const i = slot.categoryAt(e);
      const l = i === undefined ? undefined : this.categories.layers?.[i];
      if (l) this.handlers.onSelect(l.name);
    });
    canvas.addEventListener('dblclick', (e) => {
      if (this.view() !== 'blocks') return;
      const block = this.blockOf(slot.categoryAt(e));
      if (block === null || block === undefined) return;
      this.state.back = { view: 'blocks', window: this.state.window };
      this.state.view = 'layers';
      this.setWindow({ from: block, to: block });
    });
    canvas.addEventListener(
      'wheel',
      (e) => {
        if (!this.bounds()) return;
        if (e.ctrlKey || e.metaKey) {
          e.preventDefault();
          const block = this.blockOf(slot.categoryAt(e));
          this.zoom(e.deltaY < 0 ? 0.5 : 2, block ?? undefined);
        } else if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
          e.preventDefault();
          const d = e.shiftKey ? e.deltaY : e.deltaX;
          if (d !== 0) this.pan(Math.sign(d));
        }
        // A plain vertical wheel scrolls the page.
      },
      { passive: false },
    );
    canvas.addEventListener('pointerdown', (e) => {
      const w = this.window();
      if (e.button !== 0 || !w) return;
      this.drag = { x: e.clientX, window: w, moved: false };
    });
    canvas.addEventListener('pointermove', (e) => {
      const d = this.drag;
      const b = this.bounds();
      if (!d || !b || !(e.buttons & 1)) return;
      const dx = e.clientX - d.x;
      if (!d.moved && Math.abs(dx) < 6) return;
      if (!d.moved) canvas.setPointerCapture(e.pointerId);
      d.moved = true;
      // Dragging right shows earlier blocks, as when dragging a map.
      const blocksPerPixel = windowWidth(d.window) / Math.max(1, slot.plotWidth());
      const next = panWindow(d.window, b, -Math.round(dx * blocksPerPixel));
      const w = this.window();
      if (!w || next.from !== w.from) this.setWindow(next);
    });
    const end = (e: PointerEvent) => {
      if (this.drag?.moved) {
        // The click that ends a drag is not a selection (it comes right after pointerup).
        this.suppressClick = true;
        setTimeout(() => (this.suppressClick = false), 0);
        if (canvas.hasPointerCapture(e.pointerId)) canvas.releasePointerCapture(e.pointerId);
      }
      this.drag = undefined;
    };
    canvas.addEventListener('pointerup', end);
    canvas.addEventListener('pointercancel', end);
  }
}
