// Core kernels suite: throughput of src/core's compressLayer per recipe on seeded synthetic layers
// (rows = cols = 256, 512, 1024 by default), the same layers and flop model as the core helper's
// `npm run bench:core` (scripts/bench/core.ts): syntheticLayer with 2·cols tokens, 50% Wanda mask,
// 4-bit, α = 0.5, damp 0.01, loss statistics skipped while timing.
import { compressLayer, layerLossBetween } from '../../core/compress';
import { syntheticLayer } from '../../core/random';
import type { BenchSpec, CoreKernelPoint, CoreResult } from '../../protocol/bench';
import { parseSparsity, type RecipeName } from '../../protocol/recipes';
import { throwIfAborted } from '../cancel';
import { sig, timeRepeated } from './stats';

/** Seed of the synthetic layers (scripts/bench/core.ts uses 20260 + cols too). */
const CORE_SEED = 20260;

/**
 * Nominal flops of the reference algorithm for an n-column layer (shared with
 * scripts/bench/core.ts): RTN ≈ 320 per weight; GPTQ/SparseGPT 2·rows·n² + n³ (Cholesky + inverse of H); OBR's
 * per-row solves on the r = n/2 kept columns r³/3 + (r/2)³/3 + 4r², plus the GPTQ tail.
 */
export function nominalFlops(method: RecipeName, rows: number, n: number): number {
  const factor = n ** 3;
  switch (method) {
    case 'rtn':
    case 'wanda-rtn':
      return rows * n * 80 * 4;
    case 'gptq':
    case 'sparsegpt-gptq':
      return 2 * rows * n * n + factor;
    case 'obr-rtn':
    case 'obr-gptq': {
      const r = n / 2;
      const perRow = r ** 3 / 3 + (r / 2) ** 3 / 3 + 4 * r * r;
      return rows * perRow + (method === 'obr-gptq' ? rows * n * n + factor : 0);
    }
    default: {
      const never: never = method;
      return never;
    }
  }
}

export async function runCoreSuite(
  spec: BenchSpec,
  hooks: { signal?: AbortSignal; onStep?(done: number, total: number, message: string): void },
): Promise<CoreResult> {
  const points: CoreKernelPoint[] = [];
  const total = spec.coreSizes.length * spec.recipes.length;
  let done = 0;
  const sparsity = parseSparsity(spec.sparsity);
  for (const cols of spec.coreSizes) {
    const rows = cols;
    const layer = syntheticLayer(rows, cols, CORE_SEED + cols, { tokens: 2 * cols });
    const energy = layerLossBetween(layer.weight, null, rows, cols, layer.hessian);
    for (const method of spec.recipes) {
      throwIfAborted(hooks.signal);
      hooks.onStep?.(done, total, `${method} ${rows}×${cols}`);
      let relativeLoss = Number.NaN;
      const seconds = await timeRepeated(
        async (rep) => {
          const t = performance.now();
          const r = await compressLayer(
            { weight: layer.weight, rows, cols, hessian: layer.hessian, channelEnergy: layer.channelEnergy },
            { method, sparsity: sparsity.kind === 'dense' ? { kind: 'unstructured', ratio: 0.5 } : sparsity, wbits: spec.wbits[0] ?? 4, alpha: 0.5, damp: 0.01 },
            { threads: spec.threads, skipLoss: true, signal: hooks.signal },
          );
          const s = (performance.now() - t) / 1000;
          if (rep === 0) relativeLoss = layerLossBetween(r.weight, layer.weight, rows, cols, layer.hessian) / energy;
          return s;
        },
        { warmup: spec.warmup, reps: Math.max(1, Math.min(spec.reps, 3)), signal: hooks.signal },
      );
      points.push({ method, rows, cols, seconds, gflops: sig(nominalFlops(method, rows, cols) / seconds.median / 1e9, 4), relativeLoss: sig(relativeLoss, 4) });
      done++;
    }
  }
  hooks.onStep?.(total, total, 'core kernels done');
  return {
    sizes: [...spec.coreSizes],
    points,
    flopModel: 'nominal flops of the reference algorithm (scripts/bench/core.ts): RTN 320·rows·n; GPTQ/SparseGPT 2·rows·n² + n³; OBR rows·(r³/3 + (r/2)³/3 + 4r²), r = n/2, + the GPTQ tail for obr-gptq',
  };
}
