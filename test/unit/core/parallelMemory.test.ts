// Worker threads must not keep a layer's shared arrays alive (issue #12 item 2). The row workers
// read their tasks' arrays from SharedArrayBuffers; a SharedArrayBuffer's memory is freed only
// when every thread that saw it has collected its handle, and a worker's heap is so small that
// it may never collect on its own: before this fix every task's arrays (the dense W copy, the
// damped H, the factors of the GPTQ tail: hundreds of MB on a 2048 × 5632 layer) stayed resident
// until the pool was closed, 30 s after the job's last layer. Measured, not self-reported: the
// process's ArrayBuffer bytes (every ArrayBuffer and SharedArrayBuffer of all threads) after full
// collections on the main thread, against what was live before.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { collectNow } from '../../../src/core/gc';
import { compressLayer } from '../../../src/core/compress';
import { RowPool, shared } from '../../../src/core/parallel';
import { syntheticLayer } from '../../../src/core/random';

/** ArrayBuffer bytes of the process still reachable after two full collections on this thread. */
function liveArrayBuffers(): number {
  collectNow();
  collectNow();
  return process.memoryUsage().arrayBuffers;
}

const MiB = 2 ** 20;

test('a finished row task leaves no shared array behind in the workers (before the pool is released)', async () => {
  const pool = RowPool.acquire(2);
  try {
    const base = liveArrayBuffers();
    const rows = 512;
    const cols = 4096;
    // 16 MiB of weights the workers read, 4 KiB of scales they write.
    let weight: Float64Array | null = shared.f64(rows * cols);
    for (let i = 0; i < weight.length; i++) weight[i] = Math.sin(i * 0.37) * (1 + (i % 7));
    let scales: Float64Array | null = shared.f64(rows);
    await pool.run({ kind: 'scales', weight, cols, maxq: 7, norm: 2.4, grid: 20, steps: 10, scales, groupSize: 0, zeros: null }, rows);
    assert.ok(scales.every((s) => s > 0), 'the task ran: every row has a scale');
    weight = null;
    scales = null;
    // A second, small task on the same workers: they handle messages in order, so once it is done
    // they have handled whatever the first run left them to do.
    const small = shared.f64(4 * 64).fill(1);
    await pool.run({ kind: 'scales', weight: small, cols: 64, maxq: 7, norm: 2.4, grid: 20, steps: 10, scales: shared.f64(4), groupSize: 0, zeros: null }, 4);
    const left = liveArrayBuffers() - base;
    assert.ok(left < 1 * MiB, `${(left / MiB).toFixed(2)} MiB of the first task's 16 MiB still live`);
  } finally {
    await pool.release();
  }
});

test('compressLayer on worker threads: after the layer only its result is live (obr-gptq, 256 × 1024, seeded)', async () => {
  const rows = 256;
  const cols = 1024;
  const layer = syntheticLayer(rows, cols, 7, { tokens: 2 * cols });
  // Warm the pool and the kernels on this shape once, so the baseline holds what any layer keeps.
  const config = { method: 'obr-gptq' as const, sparsity: { kind: 'unstructured' as const, ratio: 0.5 }, wbits: 4, alpha: 0.5, damp: 0.01 };
  await compressLayer({ weight: layer.weight, rows, cols, hessian: layer.hessian }, config, { threads: 2, solver: 'exact' });
  const base = liveArrayBuffers();
  const r = await compressLayer({ weight: layer.weight, rows, cols, hessian: layer.hessian }, config, { threads: 2, solver: 'exact' });
  const result = r.weight.byteLength + r.scales.byteLength + r.codes.byteLength + (r.zeros?.byteLength ?? 0);
  const left = liveArrayBuffers() - base - result;
  // The layer's shared arrays (W copies, the damped H, factors: ≥ 4 × 2 MiB + 8 MiB here) are gone.
  assert.ok(left < 1 * MiB, `${(left / MiB).toFixed(2)} MiB beyond the ${(result / MiB).toFixed(2)} MiB result still live after the layer`);
});
