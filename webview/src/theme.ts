// Colours come from VS Code's theme variables, read at draw time, so charts and heatmaps follow
// light, dark and high-contrast themes (and re-draw when the theme changes).
export interface Palette {
  foreground: string;
  muted: string;
  background: string;
  grid: string;
  pruning: string;
  quantization: string;
  recovered: string;
  total: string;
  kept: string;
  error: string;
  accent: string;
  series: string[];
}

function cssVar(name: string, fallback: string): string {
  const v = getComputedStyle(document.body).getPropertyValue(name).trim();
  return v || fallback;
}

export function palette(): Palette {
  const blue = cssVar('--vscode-charts-blue', '#3794ff');
  const red = cssVar('--vscode-charts-red', '#f14c4c');
  const green = cssVar('--vscode-charts-green', '#89d185');
  const yellow = cssVar('--vscode-charts-yellow', '#cca700');
  const orange = cssVar('--vscode-charts-orange', '#d18616');
  const purple = cssVar('--vscode-charts-purple', '#b180d7');
  return {
    foreground: cssVar('--vscode-editor-foreground', '#cccccc'),
    muted: cssVar('--vscode-descriptionForeground', '#999999'),
    background: cssVar('--vscode-editor-background', '#1e1e1e'),
    grid: cssVar('--vscode-editorWidget-border', cssVar('--vscode-panel-border', '#444444')),
    pruning: orange,
    quantization: purple,
    recovered: green,
    total: blue,
    kept: cssVar('--vscode-charts-blue', '#3794ff'),
    error: cssVar('--vscode-errorForeground', red),
    accent: cssVar('--vscode-focusBorder', blue),
    series: [blue, orange, purple, green, yellow, red],
  };
}

/** Parses #rgb, #rrggbb(aa) or rgb()/rgba() into [r, g, b] (0–255). */
export function rgb(color: string): [number, number, number] {
  const c = color.trim();
  if (c.startsWith('#')) {
    const h = c.slice(1);
    const full = h.length <= 4 ? h.split('').map((x) => x + x).join('') : h;
    return [parseInt(full.slice(0, 2), 16), parseInt(full.slice(2, 4), 16), parseInt(full.slice(4, 6), 16)];
  }
  const m = /rgba?\(([^)]+)\)/.exec(c);
  if (m) {
    const [r, g, b] = m[1]!.split(',').map((x) => parseFloat(x));
    return [r ?? 0, g ?? 0, b ?? 0];
  }
  return [128, 128, 128];
}

/** Calls `redraw` when VS Code switches theme (it changes the body's class). */
export function onThemeChange(redraw: () => void): void {
  new MutationObserver(() => redraw()).observe(document.body, { attributes: true, attributeFilter: ['class'] });
}
