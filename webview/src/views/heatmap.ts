// Canvas drawings of the selected layer: the block-downsampled sparsity mask with row/column
// densities, and the quantization grid of one row (histogram of kept weights, the 2^b levels
// code·scale and the clipping range [−2^(b−1)·s, (2^(b−1)−1)·s]).
import type { LayerDetail } from '../../../src/protocol/webview';
import { num, pct } from '../format';
import { palette, rgb } from '../theme';

function setup(canvas: HTMLCanvasElement, cssWidth: number, cssHeight: number): CanvasRenderingContext2D {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(cssWidth * dpr);
  canvas.height = Math.round(cssHeight * dpr);
  canvas.style.width = `${cssWidth}px`;
  canvas.style.height = `${cssHeight}px`;
  const ctx = canvas.getContext('2d')!;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

/**
 * Mask heatmap: each grid cell's colour mixes the background (all pruned) with the kept colour
 * (all kept) by its density. With N:M sparsity, cells holding invalid groups are outlined.
 * A strip on the right shows row densities, one below shows column densities.
 */
export function drawMask(canvas: HTMLCanvasElement, d: LayerDetail, maxWidth: number): void {
  const p = palette();
  const strip = 14;
  const gap = 4;
  const axis = 14;
  const aspect = d.gridRows / d.gridCols;
  const w = Math.max(120, Math.min(maxWidth - strip - gap - axis, 640));
  const h = Math.max(60, Math.min(Math.round(w * aspect), 420));
  const ctx = setup(canvas, w + gap + strip + axis, h + gap + strip + axis);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const [br, bg, bb] = rgb(p.background);
  const [kr, kg, kb] = rgb(p.kept);
  const mix = (t: number) => `rgb(${Math.round(br + (kr - br) * t)},${Math.round(bg + (kg - bg) * t)},${Math.round(bb + (kb - bb) * t)})`;

  const cw = w / d.gridCols;
  const ch = h / d.gridRows;
  // Draw the grid through an ImageData at grid resolution, scaled up without smoothing: one pixel
  // per block, so a 4096×4096 layer costs as much as its 128×256 summary.
  const img = new ImageData(d.gridCols, d.gridRows);
  for (let i = 0; i < d.gridRows * d.gridCols; i++) {
    const t = d.maskDensity[i]!;
    img.data[i * 4] = br + (kr - br) * t;
    img.data[i * 4 + 1] = bg + (kg - bg) * t;
    img.data[i * 4 + 2] = bb + (kb - bb) * t;
    img.data[i * 4 + 3] = 255;
  }
  const tmp = document.createElement('canvas');
  tmp.width = d.gridCols;
  tmp.height = d.gridRows;
  tmp.getContext('2d')!.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, axis, 0, w, h);

  if (d.nm) {
    ctx.strokeStyle = p.error;
    ctx.lineWidth = 1;
    for (let gi = 0; gi < d.gridRows; gi++) {
      for (let gj = 0; gj < d.gridCols; gj++) {
        if (d.nm.validGrid[gi * d.gridCols + gj]! < 1) ctx.strokeRect(axis + gj * cw + 0.5, gi * ch + 0.5, Math.max(1, cw - 1), Math.max(1, ch - 1));
      }
    }
  }

  // Row densities (right strip), averaged into h pixel rows.
  for (let y = 0; y < h; y++) {
    const r0 = Math.floor((y / h) * d.rows);
    const r1 = Math.max(r0 + 1, Math.floor(((y + 1) / h) * d.rows));
    let s = 0;
    for (let r = r0; r < r1; r++) s += d.rowDensity[r]!;
    ctx.fillStyle = mix(s / (r1 - r0));
    ctx.fillRect(axis + w + gap, y, strip, 1);
  }
  // Column densities (bottom strip).
  for (let x = 0; x < w; x++) {
    const c0 = Math.floor((x / w) * d.cols);
    const c1 = Math.max(c0 + 1, Math.floor(((x + 1) / w) * d.cols));
    let s = 0;
    for (let c = c0; c < c1; c++) s += d.colDensity[c]!;
    ctx.fillStyle = mix(s / (c1 - c0));
    ctx.fillRect(axis + x, h + gap, 1, strip);
  }
  ctx.fillStyle = p.muted;
  ctx.font = '10px var(--vscode-font-family, sans-serif)';
  ctx.save();
  ctx.translate(10, h / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = 'center';
  ctx.fillText(`rows (${d.rows})`, 0, 0);
  ctx.restore();
  ctx.textAlign = 'center';
  ctx.fillText(`columns (${d.cols}) · block ${Math.ceil(d.rows / d.gridRows)}×${Math.ceil(d.cols / d.gridCols)}`, axis + w / 2, h + gap + strip + 11);
}

/** Summary line under the mask. */
export function maskSummary(d: LayerDetail): string {
  let kept = 0;
  for (const v of d.rowDensity) kept += v;
  const density = kept / d.rows;
  const parts = [`kept ${pct(density)} (sparsity ${pct(1 - density)})`];
  let lo = 1;
  let hi = 0;
  for (const v of d.rowDensity) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  parts.push(`row density ${pct(lo)}–${pct(hi)}`);
  if (d.nm) {
    parts.push(
      d.nm.validGroups === d.nm.totalGroups
        ? `${d.nm.n}:${d.nm.m} valid in all ${d.nm.totalGroups} groups`
        : `${d.nm.n}:${d.nm.m} INVALID in ${d.nm.totalGroups - d.nm.validGroups} of ${d.nm.totalGroups} groups (outlined)`,
    );
  }
  return parts.join(' · ');
}

/** Whether the row's grid is drawn in code units (groups or zero points: one scale no longer fits the row). */
export function gridInCodeUnits(d: LayerDetail): boolean {
  return d.groupSize > 0 || d.asymmetric;
}

/** The chosen row's group of column c. */
function groupOf(d: LayerDetail, c: number): number {
  return d.groupSize > 0 ? Math.floor(c / d.groupSize) : 0;
}

/**
 * Per group of the chosen row: columns, scale, zero point, kept weights and the codes they use
 * (from the worker's codeCounts: the packed model's codes, or round(w / scale) + zero).
 */
export function rowGroupSummaries(d: LayerDetail): Array<{ group: number; from: number; to: number; scale: number; zero: number; kept: number; codes: Map<number, number> }> {
  const levels = 2 ** d.wbits;
  const qmin = -(levels / 2);
  const n = d.rowGroups.scales.length;
  const width = d.groupSize > 0 ? d.groupSize : d.cols;
  const out = [];
  for (let g = 0; g < n; g++) {
    const codes = new Map<number, number>();
    let kept = 0;
    for (let i = 0; i < levels; i++) {
      const k = d.rowGroups.codeCounts[g * levels + i]!;
      if (k > 0) codes.set(qmin + i, k);
      kept += k;
    }
    out.push({ group: g, from: g * width, to: Math.min(d.cols, (g + 1) * width) - 1, scale: d.rowGroups.scales[g]!, zero: d.rowGroups.zeros?.[g] ?? 0, kept, codes });
  }
  return out;
}

/**
 * Histogram of the chosen row's kept weights with the quantization levels code·scale
 * (code = −2^(b−1) … 2^(b−1)−1) and the clipping range drawn over it. With groups or zero points
 * every weight is first mapped to code units, w / scale_g + zero_g of its group, so the levels are
 * the integers and all groups share one picture.
 */
export function drawRowGrid(canvas: HTMLCanvasElement, d: LayerDetail, width: number): { codes: Map<number, number>; offGrid: number } {
  const p = palette();
  const h = 200;
  const padL = 36;
  const padB = 26;
  const ctx = setup(canvas, width, h);
  ctx.clearRect(0, 0, width, h);
  const codeUnits = gridInCodeUnits(d);
  const scale = codeUnits ? 1 : d.rowScales[d.row]!;
  const qmin = -(2 ** (d.wbits - 1));
  const qmax = 2 ** (d.wbits - 1) - 1;
  const kept: number[] = [];
  d.rowValues.forEach((v, c) => {
    if (v === 0) return;
    if (!codeUnits) kept.push(v);
    else {
      const g = groupOf(d, c);
      const s = d.rowGroups.scales[g]!;
      kept.push(s > 0 ? v / s + (d.rowGroups.zeros?.[g] ?? 0) : 0);
    }
  });
  let lo = qmin * scale;
  let hi = qmax * scale;
  for (const v of kept) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const span = hi - lo || 1;
  lo -= span * 0.04;
  hi += span * 0.04;
  const plotW = width - padL - 8;
  const plotH = h - padB - 8;
  const bins = Math.min(160, Math.max(24, Math.round(plotW / 4)));
  const counts = new Array<number>(bins).fill(0);
  for (const v of kept) counts[Math.min(bins - 1, Math.max(0, Math.floor(((v - lo) / (hi - lo)) * bins)))]!++;
  const maxCount = Math.max(1, ...counts);
  const x = (v: number) => padL + ((v - lo) / (hi - lo)) * plotW;

  // Clipping range shading.
  ctx.fillStyle = p.grid;
  ctx.globalAlpha = 0.35;
  ctx.fillRect(x(qmin * scale), 8, x(qmax * scale) - x(qmin * scale), plotH);
  ctx.globalAlpha = 1;
  // Histogram bars.
  ctx.fillStyle = p.kept;
  const bw = plotW / bins;
  counts.forEach((c, i) => {
    const bh = (c / maxCount) * plotH;
    ctx.fillRect(padL + i * bw, 8 + plotH - bh, Math.max(1, bw - 1), bh);
  });
  // Levels.
  ctx.strokeStyle = p.quantization;
  ctx.lineWidth = 1;
  for (let q = qmin; q <= qmax; q++) {
    const xv = Math.round(x(q * scale)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(xv, 8);
    ctx.lineTo(xv, 8 + plotH);
    ctx.stroke();
  }
  // Clipping bounds.
  ctx.strokeStyle = p.error;
  ctx.setLineDash([4, 3]);
  for (const b of [qmin * scale, qmax * scale]) {
    const xv = Math.round(x(b)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(xv, 8);
    ctx.lineTo(xv, 8 + plotH);
    ctx.stroke();
  }
  ctx.setLineDash([]);
  // Axes and labels.
  ctx.strokeStyle = p.muted;
  ctx.beginPath();
  ctx.moveTo(padL, 8 + plotH + 0.5);
  ctx.lineTo(padL + plotW, 8 + plotH + 0.5);
  ctx.stroke();
  ctx.fillStyle = p.muted;
  ctx.font = '10px sans-serif';
  ctx.textAlign = 'center';
  // Label the clipping bounds and 0; the data range only where it doesn't collide with them.
  const labels = [qmin * scale, 0, qmax * scale];
  for (const v of [lo, hi]) if (labels.every((u) => Math.abs(x(u) - x(v)) > 48)) labels.push(v);
  for (const v of labels) ctx.fillText(num(v, 3), x(v), h - 12);
  ctx.textAlign = 'right';
  ctx.fillText(String(maxCount), padL - 4, 16);
  ctx.fillText('0', padL - 4, 8 + plotH);

  // Codes of the kept weights over all groups, and how many are off their grid (the simulated
  // weights sit on it), as the worker counted them.
  const codes = new Map<number, number>();
  for (const g of rowGroupSummaries(d)) for (const [c, k] of g.codes) codes.set(c, (codes.get(c) ?? 0) + k);
  return { codes, offGrid: d.rowGroups.offGrid };
}
