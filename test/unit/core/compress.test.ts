// compressLayer end to end: degenerate reductions (§7.8), invariances (§7.9), the GPTQ tail
// (§7.10), loss bookkeeping, and statistical improvements averaged over seeds (§7.11).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compressLayer, type LayerConfig, type LayerProblem } from '../../../src/core/compress';
import { syntheticLayer } from '../../../src/core/random';
import { symmetricRowScales } from '../../../src/core/quantize';
import { pruneMask, wandaScores } from '../../../src/core/mask';
import { refDamp, refGptq, refInverse, refLoss, refObrCompensate, refQ, refUpperCholesky } from './reference';

const half = { kind: 'unstructured', ratio: 0.5 } as const;

function problem(rows: number, cols: number, seed: number, tokens = 160): LayerProblem {
  const L = syntheticLayer(rows, cols, seed, { tokens });
  return { weight: L.weight, rows, cols, hessian: L.hessian, channelEnergy: L.channelEnergy };
}

const cfg = (method: LayerConfig['method'], extra: Partial<LayerConfig> = {}): LayerConfig => ({ method, sparsity: half, wbits: 4, alpha: 0.5, damp: 0.01, ...extra });

function close(a: ArrayLike<number>, b: ArrayLike<number>, rel: number, what: string): void {
  let scale = 0;
  let diff = 0;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(b[i]));
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
  }
  assert.ok(diff <= rel * scale, `${what}: max diff ${diff} (scale ${scale})`);
}

test('rtn = per-row RTN on the dense-W scales; s = 0 OBR_RTN with α ∈ {0, 1} reduces to it (§7.8)', async () => {
  const p = problem(10, 40, 1);
  const rtn = await compressLayer(p, cfg('rtn'));
  const scales = symmetricRowScales(p.weight, 10, 40, 4);
  const expected = p.weight.map((v, i) => refQ(v, scales[Math.floor(i / 40)], 7));
  assert.deepEqual(Array.from(rtn.weight), Array.from(expected));
  for (const alpha of [0, 1]) {
    const obr = await compressLayer(p, cfg('obr-rtn', { sparsity: { kind: 'dense' }, alpha }), { threads: 1 });
    assert.deepEqual(Array.from(obr.weight), Array.from(expected), `alpha ${alpha}`);
  }
});

test('gptq equals the plain column-by-column reference (lazy batches, rel. 1e-9); s = 0, α = 0 OBR_GPTQ is GPTQ (§7.8)', async () => {
  const rows = 8;
  const cols = 200; // two blocks of 128, the second partial
  const p = problem(rows, cols, 2, 400);
  const scales = symmetricRowScales(p.weight, rows, cols, 4);
  const u = refUpperCholesky(refInverse(refDamp(p.hessian, cols, 0.01), cols), cols);
  const ref = refGptq(p.weight, rows, cols, u, scales, 7, null, 0);
  const ours = await compressLayer(p, cfg('gptq'));
  close(ours.weight, ref, 1e-9, 'gptq');
  const obr = await compressLayer(p, cfg('obr-gptq', { sparsity: { kind: 'dense' }, alpha: 0 }), { threads: 1 });
  close(obr.weight, ours.weight, 1e-12, 'obr-gptq s=0 α=0');
});

test('obr-gptq = RTN of W_c on [0,k) + masked GPTQ tail from W_c, for α not a multiple of 128 (P4 fixed, §7.10)', async () => {
  const rows = 6;
  const cols = 160;
  const p = problem(rows, cols, 3, 320);
  for (const alpha of [0.3, 0.5, 0.9]) {
    const k = Math.floor(alpha * cols);
    const hd = refDamp(p.hessian, cols, 0.01);
    const scales = symmetricRowScales(p.weight, rows, cols, 4);
    const mask = pruneMask(wandaScores(p.weight, rows, cols, p.channelEnergy!), rows, cols, half);
    const wc = refObrCompensate(p.weight, rows, cols, hd, mask, scales, 7, k);
    const u = refUpperCholesky(refInverse(hd, cols), cols);
    const ref = refGptq(wc.map((v, i) => ((i % cols) < k ? refQ(v, scales[Math.floor(i / cols)], 7) : v)), rows, cols, u, scales, 7, mask, k);
    const ours = await compressLayer(p, cfg('obr-gptq', { alpha }), { threads: 1 });
    close(ours.weight, ref, 1e-8, `alpha ${alpha}`);
    // Tail identity: U[k:, k:] of chol(H⁻¹) equals chol((H[k:, k:])⁻¹).
    const m = cols - k;
    const sub = new Float64Array(m * m);
    for (let i = 0; i < m; i++) for (let j = 0; j < m; j++) sub[i * m + j] = hd[(k + i) * cols + k + j];
    const us = refUpperCholesky(refInverse(sub, m), m);
    for (let i = 0; i < m; i += 17) for (let j = i; j < m; j += 13) assert.ok(Math.abs(us[i * m + j] - u[(k + i) * cols + k + j]) <= 1e-9 * Math.abs(u[(k + i) * cols + k + i]));
  }
});

test('diagonal H (uncorrelated inputs) ⇒ OBR_RTN = prune-then-RTN (§7.8)', async () => {
  const p = problem(8, 32, 4);
  const diag = new Float64Array(32 * 32);
  for (let j = 0; j < 32; j++) diag[j * 33] = p.hessian[j * 33];
  const q = { ...p, hessian: diag };
  const obr = await compressLayer(q, cfg('obr-rtn'), { threads: 1 });
  const wanda = await compressLayer(q, cfg('wanda-rtn'));
  assert.deepEqual(Array.from(obr.weight), Array.from(wanda.weight));
});

test('H → cH leaves every method unchanged (damping is relative, §7.9)', async () => {
  const p = problem(8, 48, 5);
  for (const method of ['gptq', 'sparsegpt-gptq', 'obr-rtn', 'obr-gptq'] as const) {
    const a = await compressLayer(p, cfg(method), { threads: 1 });
    const b = await compressLayer({ ...p, hessian: p.hessian.map((v) => v * 37.5), channelEnergy: p.channelEnergy!.map((v) => v * 3) }, cfg(method), { threads: 1 });
    close(b.weight, a.weight, 1e-9, method);
    assert.ok(Math.abs(b.stats.loss.total / a.stats.loss.total - 37.5) < 1e-6 * 37.5);
  }
});

test('loss terms use the undamped H and add up; dead inputs are zeroed', async () => {
  const p = problem(6, 32, 6);
  // Make input 5 dead: H row/col 5 = 0.
  const h = p.hessian.slice();
  for (let j = 0; j < 32; j++) h[5 * 32 + j] = h[j * 32 + 5] = 0;
  const q = { ...p, hessian: h };
  for (const method of ['rtn', 'gptq', 'wanda-rtn', 'sparsegpt-gptq', 'obr-rtn', 'obr-gptq'] as const) {
    const res = await compressLayer(q, cfg(method), { threads: 1 });
    const { loss } = res.stats;
    assert.ok(Math.abs(loss.total - refLoss(res.weight, q.weight, 6, 32, h)) <= 1e-9 * loss.outputEnergy, method);
    assert.ok(Math.abs(loss.recovered - (loss.pruning + loss.quantization - loss.total)) <= 1e-9 * loss.outputEnergy);
    assert.ok(Math.abs(loss.outputEnergy - refLoss(q.weight, new Float64Array(q.weight.length), 6, 32, h)) <= 1e-9 * loss.outputEnergy);
    for (let r = 0; r < 6; r++) assert.equal(res.weight[r * 32 + 5], 0, `${method}: dead column zeroed`);
    if (method === 'rtn' || method === 'gptq') {
      assert.equal(loss.pruning, 0);
      assert.ok(res.mask.every((m) => m === 1));
    } else {
      assert.ok(res.stats.sparsity >= 0.5 - 1e-12, `${method} sparsity ${res.stats.sparsity}`);
    }
    assert.equal(res.stats.codeHistogram.reduce((a, b) => a + b, 0), res.mask.reduce((a, b) => a + b, 0));
  }
});

test('sparsegpt-gptq: block-adaptive mask, exact zeros, codes on grid, N:M valid', async () => {
  const p = problem(8, 64, 7);
  const res = await compressLayer(p, cfg('sparsegpt-gptq'));
  const pruned = res.mask.reduce((a, m) => a + (m ? 0 : 1), 0);
  assert.ok(pruned >= 0.5 * res.mask.length && pruned <= 0.5 * res.mask.length + 2);
  for (let i = 0; i < res.weight.length; i++) {
    if (!res.mask[i]) assert.equal(res.weight[i], 0);
    assert.equal(res.weight[i], res.scales[Math.floor(i / 64)] * res.codes[i]);
  }
  const nm = await compressLayer(p, cfg('sparsegpt-gptq', { sparsity: { kind: 'nm', n: 2, m: 4 } }));
  for (let i = 0; i < nm.mask.length; i += 4) assert.equal(4 - (nm.mask[i] + nm.mask[i + 1] + nm.mask[i + 2] + nm.mask[i + 3]), 2);
});

test('§7.11 averaged over seeds: OBR_RTN < prune+OBS→RTN < prune→RTN, OBR_GPTQ ≤ OBR_RTN, OBR_GPTQ < SparseGPT+GPTQ', async () => {
  const sums = { naive: 0, obs: 0, obrRtn: 0, obrGptq: 0, sparsegpt: 0 };
  for (let seed = 100; seed < 106; seed++) {
    const p = problem(16, 64, seed, 256);
    const total = async (c: LayerConfig) => (await compressLayer(p, c, { threads: 1 })).stats.loss.total;
    sums.naive += await total(cfg('wanda-rtn'));
    sums.obs += await total(cfg('obr-rtn', { alpha: 0 })); // α = 0: pruning compensation only
    sums.obrRtn += await total(cfg('obr-rtn'));
    sums.obrGptq += await total(cfg('obr-gptq'));
    sums.sparsegpt += await total(cfg('sparsegpt-gptq'));
  }
  assert.ok(sums.obrRtn < sums.obs, JSON.stringify(sums));
  assert.ok(sums.obs < sums.naive, JSON.stringify(sums));
  assert.ok(sums.obrGptq <= sums.obrRtn, JSON.stringify(sums));
  assert.ok(sums.obrGptq < sums.sparsegpt, JSON.stringify(sums));
});

test('magnitude and sparsegpt mask scores work for OBR; abort signal stops compression', async () => {
  const p = problem(6, 32, 8);
  for (const mask of ['magnitude', 'sparsegpt'] as const) {
    const res = await compressLayer(p, cfg('obr-gptq', { mask }), { threads: 1 });
    for (let r = 0; r < 6; r++) assert.equal(res.mask.subarray(r * 32, r * 32 + 32).reduce((a, b) => a + b, 0), 16);
  }
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(compressLayer(p, cfg('obr-gptq'), { signal: ac.signal }));
});

test('worker threads (forced) give bit-identical results to one thread for every method (§7.9)', async () => {
  const p = problem(20, 64, 9);
  for (const method of ['rtn', 'gptq', 'wanda-rtn', 'sparsegpt-gptq', 'obr-rtn', 'obr-gptq'] as const) {
    const one = await compressLayer(p, cfg(method), { threads: 1 });
    const two = await compressLayer(p, cfg(method), { threads: 2 });
    assert.deepEqual(Array.from(two.weight), Array.from(one.weight), method);
    assert.deepEqual(Array.from(two.codes), Array.from(one.codes), method);
    assert.ok(!(two.weight.buffer instanceof SharedArrayBuffer), 'results are ordinary arrays');
  }
});

test('bad problems are InputErrors', async () => {
  const p = problem(4, 16, 10);
  const bad: Array<[LayerProblem, LayerConfig]> = [
    [{ ...p, weight: p.weight.map((v, i) => (i === 3 ? Number.NaN : v)) }, cfg('rtn')],
    [{ ...p, hessian: p.hessian.map((v, i) => (i === 5 ? Infinity : v)) }, cfg('gptq')],
    [{ ...p, hessian: p.hessian.subarray(0, 100) }, cfg('obr-gptq')],
    [{ ...p, rows: 5 }, cfg('obr-gptq')],
    [p, cfg('obr-gptq', { wbits: 9 })],
    [p, cfg('obr-gptq', { alpha: 1.5 })],
  ];
  for (const [prob, c] of bad) await assert.rejects(compressLayer(prob, c), (e: unknown) => (e as Error).name === 'InputError');
});

test('worker pools are reused across layers; a layer aborted mid-run does not poison the next one', async () => {
  const rows = 96;
  const cols = 128;
  const L = syntheticLayer(rows, cols, 91, { tokens: 400 });
  const problem = { weight: L.weight, hessian: L.hessian, rows, cols, channelEnergy: L.channelEnergy };
  const config: LayerConfig = { method: 'obr-gptq', sparsity: { kind: 'unstructured', ratio: 0.5 }, wbits: 4, alpha: 0.5, damp: 0.01 };
  const first = await compressLayer(problem, config, { threads: 2, skipLoss: true });
  const again = await compressLayer(problem, config, { threads: 2, skipLoss: true });
  assert.deepEqual(again.weight, first.weight, 'a reused pool gives the same answer');
  // Abort while the workers are busy, then run again on (necessarily) a fresh pool.
  const ac = new AbortController();
  const pending = compressLayer(problem, config, { threads: 2, skipLoss: true, signal: ac.signal });
  setImmediate(() => ac.abort(new Error('stop')));
  await assert.rejects(pending);
  const after = await compressLayer(problem, config, { threads: 2, skipLoss: true });
  assert.deepEqual(after.weight, first.weight);
  const serial = await compressLayer(problem, config, { threads: 1, skipLoss: true });
  assert.deepEqual(serial.weight, first.weight, 'threads do not change the result');
});
