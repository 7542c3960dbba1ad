// Rotation for the head counts and widths users' models have: GQA with 5 query heads sharing one KV
// head (hidden 160, head_dim 32, FF 416), a Qwen2.5-0.5B-shaped model (14 q / 2 kv heads, hidden
// 896, FF 4864), a shared RMSNorm weight, and an FF width of 172·2^k (Llama-2-7B's 11008 = 172·64).
// Each rotated model must compute the dense model's logits (float tolerance) and run with A4/KV4.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { addFakeQuant } from '../../../src/onnx/fakeQuant';
import { rotateModel } from '../../../src/onnx/rotate';
import { miniLlama, relError, runLogits, type MiniLlama } from './miniLlama';

const SEQ = 12;
const ids = (vocab: number) => Array.from({ length: SEQ }, (_, i) => (i * 7 + 3) % vocab);

async function rotatedAndQuantized(cfg: MiniLlama): Promise<{ rotation: ReturnType<typeof rotateModel>; rotErr: number; quantErr: number }> {
  const model = miniLlama(cfg);
  const dense = await runLogits(model, ids(cfg.vocab));
  const rotation = rotateModel(model, { seed: 0 });
  const rotErr = relError(dense, await runLogits(rotation.model, ids(cfg.vocab)));
  const fq = addFakeQuant(rotation.model, { abits: 4, kvbits: 4 });
  const quantErr = relError(dense, await runLogits(fq.model, ids(cfg.vocab)));
  return { rotation, rotErr, quantErr };
}

test('GQA 5 query heads / 1 KV head, hidden 160, head_dim 32, FF 416: exact rotation, W4A4KV4 runs', async (t) => {
  const { rotation, rotErr, quantErr } = await rotatedAndQuantized({ vocab: 64, heads: 5, kvHeads: 1, headDim: 32, intermediate: 416, layers: 2, seq: SEQ });
  const r = rotation.rotation;
  t.diagnostic(`rotation rel. error ${rotErr.toExponential(2)}, A4/KV4 ${quantErr.toFixed(3)}; ${JSON.stringify({ residual: r.residual, onlineHead: r.onlineHead, onlineDown: r.onlineDown })}`);
  assert.deepEqual([r.hidden, r.numHeads, r.numKvHeads, r.headDim, r.intermediate], [160, 5, 1, 32, 416]);
  assert.equal(r.residual.construction, 'paley-1 20 ⊗ sylvester 8');
  assert.equal(r.onlineDown.construction, 'williamson 52 ⊗ sylvester 8');
  // No Hadamard of order 5 exists: the cross-head rotation is an exact random orthogonal matrix, said so.
  assert.equal(r.onlineHead?.kind, 'random-orthogonal');
  assert.match(rotation.warnings.join('\n'), /5 attention heads \(online cross-head rotation before o_proj\): no Hadamard matrix of order 5 exists here, so it is a seeded random orthogonal 5×5 matrix \(exact/);
  assert.ok(rotErr < 1e-5, `rotation: ${rotErr}`);
  assert.ok(quantErr < 0.5, `A4/KV4: ${quantErr}`);
});

test('Qwen2.5-0.5B shape: 14 query heads / 2 KV heads, hidden 896, FF 4864 (2 blocks): exact rotation, W4A4KV4 runs', { timeout: 240_000 }, async (t) => {
  const { rotation, rotErr, quantErr } = await rotatedAndQuantized({ vocab: 48, heads: 14, kvHeads: 2, headDim: 64, intermediate: 4864, layers: 2, seq: SEQ });
  const r = rotation.rotation;
  t.diagnostic(`rotation rel. error ${rotErr.toExponential(2)}, A4/KV4 ${quantErr.toFixed(3)}`);
  assert.equal(r.residual.construction, 'paley-2 28 ⊗ sylvester 32');
  assert.equal(r.onlineDown.construction, 'paley-2 76 ⊗ sylvester 64');
  assert.equal(r.onlineHead?.kind, 'random-orthogonal');
  assert.ok(rotErr < 1e-5, `rotation: ${rotErr}`);
  assert.ok(quantErr < 0.5, `A4/KV4: ${quantErr}`);
});

test('a shared RMSNorm weight is duplicated before folding, not refused', async () => {
  const cfg = { vocab: 32, heads: 4, kvHeads: 2, headDim: 8, intermediate: 48, layers: 2, seq: SEQ, sharedNormWeight: true };
  const model = miniLlama(cfg);
  const mulsReading = model.graph!.node!.filter((n) => n.input?.includes('norm.weight.shared')).length;
  assert.equal(mulsReading, 5, 'the builder shares one gain among the 5 norms');
  const dense = await runLogits(model, ids(cfg.vocab));
  const r = rotateModel(model, { seed: 0 });
  assert.equal(r.rotation.normsFolded, 5);
  assert.ok(!r.model.graph!.initializer!.some((t) => t.name === 'norm.weight.shared'), 'the shared gain is gone once every norm has its own folded copy');
  const err = relError(dense, await runLogits(r.model, ids(cfg.vocab)));
  assert.ok(err < 1e-5, `${err}`);
});

test('FF width 172·2^k (as Llama-2-7B 11008 = 172·64) uses the Williamson Hadamard, not a random matrix', async () => {
  const cfg = { vocab: 32, heads: 2, kvHeads: 2, headDim: 8, intermediate: 344, layers: 1, seq: SEQ };
  const model = miniLlama(cfg);
  const dense = await runLogits(model, ids(cfg.vocab));
  const r = rotateModel(model, { seed: 0, maxDenseOnline: 256 });
  assert.deepEqual(r.warnings, []);
  assert.equal(r.rotation.onlineDown.kind, 'hadamard');
  assert.equal(r.rotation.onlineDown.construction, 'williamson 172 ⊗ sylvester 2');
  assert.equal(r.rotation.onlineDown.factored, true);
  const err = relError(dense, await runLogits(r.model, ids(cfg.vocab)));
  assert.ok(err < 1e-5, `${err}`);
});

test("5 query heads in a dynamic-shape export (Shape(q) feeds a later Reshape): the q/k Hadamard sits on RoPE's output, W4A4KV4 runs", async (t) => {
  // The "dimension mismatch at q_hadamard/MatMul": with a Shape query on q, the RoPE Add no
  // longer post-dominated q along every path and the q Hadamard landed on a later Add (the residual
  // stream, [b, s, 160] · [32, 32]). Shape queries carry no data and the scores MatMul ends RoPE's region.
  const cfg = { vocab: 64, heads: 5, kvHeads: 1, headDim: 32, intermediate: 416, layers: 2, seq: SEQ, shapeQueries: true };
  assert.ok(miniLlama(cfg).graph!.node!.some((n) => n.opType === 'Shape'), 'the builder reads q\'s shape');
  const { rotation, rotErr, quantErr } = await rotatedAndQuantized(cfg);
  const fq = addFakeQuant(rotation.model, { abits: 4, kvbits: 4 });
  const byName = new Map((fq.model.graph!.node ?? []).map((n) => [n.name ?? '', n]));
  const qh = byName.get('/model/layers.0/self_attn/q_hadamard/MatMul')!;
  const producer = (fq.model.graph!.node ?? []).find((n) => n.output?.includes(qh.input![0]!));
  assert.equal(producer?.name, '/model/layers.0/self_attn/rope_q/Add', 'the q Hadamard reads the RoPE output');
  t.diagnostic(`rotation rel. error ${rotErr.toExponential(2)}, A4/KV4 ${quantErr.toFixed(3)}`);
  assert.ok(rotErr < 1e-5, `rotation: ${rotErr}`);
  assert.ok(quantErr < 0.5, `A4/KV4: ${quantErr}`);
});
