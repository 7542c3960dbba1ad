// QuaRot rotation of a LLaMA-style ONNX decoder as a pure graph transform (docs/obr-algorithm.md
// §1.3; Ashkboos et al. 2024, "QuaRot", §4). The rotated model computes the same function (up to
// float rounding) but its linear-layer inputs have far smaller outliers, which is what makes
// per-token 4-bit activations (A4) and a 4-bit KV cache workable.
//
// Conventions: every projection is a MatMul y = x·W with W stored [in, out]; activations are row
// vectors. Q is the residual rotation (hidden×hidden, orthogonal):
//   residual stream   x ← x·Q                 (embedding E ← E·Q; o/down outputs W ← W·Q)
//   RMSNorm           rms(x·Q) = rms(x), so norm(x·Q) = norm(x)·Q once the norm weight γ is folded
//   readers           W ← Qᵀ·diag(γ)·W        (q/k/v with input_layernorm, gate/up with
//                                              post_attention_layernorm, lm_head with the final norm)
//   values            W_v ← W_v·(I_kv ⊗ H_d)    per kv head, exact offline (§1.3 step 3)
//   o_proj input      online (H_heads ⊗ I_d) across heads, so o's input sees H_heads ⊗ H_d,
//                     W_o ← (H_heads ⊗ I_d)ᵀ·(I_heads ⊗ H_d)ᵀ·W_o·Q
//   down_proj input   online H_I (size intermediate), W_down ← H_Iᵀ·W_down·Q (§1.3 step 4)
// Deviation from QuaRot: the embedding is NOT mean-centred. QuaRot's fuse_layer_norms subtracts the
// embedding rows' mean, which is harmless for LayerNorm models but changes an RMSNorm model's
// function (the mean is part of the signal RMSNorm sees); we keep the function exact instead.
import { hadamardMatrix, hadamardPlan, orthogonalMatrix, rotateVectors, type Rotation } from '../core/hadamard';
import { ModelWriteInputError } from './errors';
import { indexGraph, pruneUnused, setMetadata, type GraphIndex } from './graph';
import { DataType, type ModelProto, type NodeProto } from './proto';
import {
  activationType,
  constantSource,
  findDecoder,
  GraphEditor,
  GraphPatternFormatError,
  readFloat64,
  readFloats,
  withValues,
  type Decoder,
} from './rotateGraph';
import { tensorDims } from './tensor';
import type { AttentionGeometry, LinearLayer } from './types';

export interface RotateOptions {
  /** Seed of the random ±1 signs of the residual Hadamard (QuaRot uses a fixed seed, 0). */
  seed: number;
  /** Attention head size, when the graph doesn't show it (Reshape after q_proj). */
  headDim?: number;
  /** Geometry from the user (CLI flags): used before what the graph shows. */
  geometry?: AttentionGeometry;
  /** Geometry from config.json / genai_config.json: used when the graph shows none. */
  configGeometry?: AttentionGeometry;
  /** Insert the online cross-head Hadamard before o_proj (QuaRot does; default true). */
  onlineHeadHadamard?: boolean;
  /** Largest online Hadamard stored as one dense [n, n] MatMul; larger ones are Kronecker-factored (default 2048). */
  maxDenseOnline?: number;
}

export interface RotationMatrixInfo {
  size: number;
  kind: Rotation['kind'];
  /** How the Hadamard is built, e.g. "paley-1 12 ⊗ sylvester 32"; absent for random orthogonal. */
  construction?: string;
}

/** What rotateModel did; stored as JSON in the model's metadata under `obr.rotation`. */
export interface RotationInfo {
  method: 'quarot';
  seed: number;
  hidden: number;
  intermediate: number;
  headDim: number;
  numHeads: number;
  numKvHeads: number;
  blocks: number;
  residual: RotationMatrixInfo;
  valueHead: RotationMatrixInfo;
  /** Online cross-head Hadamard before o_proj, when inserted. */
  onlineHead: RotationMatrixInfo | null;
  onlineDown: RotationMatrixInfo & { factored: boolean };
  normsFolded: number;
  embeddingsRotated: number;
  /** Always false: see the header comment. */
  embeddingMeanCentred: false;
}

export interface RotateResult {
  model: ModelProto;
  warnings: string[];
  rotation: RotationInfo;
}

export const ROTATION_METADATA_KEY = 'obr.rotation';

export function rotateModel(model: ModelProto, options: RotateOptions): RotateResult {
  if (!model.graph) throw new GraphPatternFormatError('the model has no graph');
  if (rotationOf(model)) throw new ModelWriteInputError('bad-option', 'the model is already rotated (metadata "obr.rotation"); rotate the original model instead');
  const idx = indexGraph(model.graph);
  const dec = findDecoder(model, idx, options.geometry ?? options.headDim, options.configGeometry);
  if (!dec.lmHead) throw new GraphPatternFormatError('found no lm_head projection; the residual rotation must be undone by the output projection, so a decoder without one can\'t be rotated');
  const warnings: string[] = [];
  const { hidden, intermediate, headDim, numHeads, numKvHeads } = dec;
  const onlineHead = options.onlineHeadHadamard ?? true;
  const maxDense = options.maxDenseOnline ?? 2048;

  const residual = orthogonalMatrix(hidden, { seed: options.seed, randomized: true });
  const valueHead = orthogonalMatrix(headDim, { seed: options.seed + 1, randomized: false });
  const head = onlineHead ? orthogonalMatrix(numHeads, { seed: options.seed + 2, randomized: false }) : null;
  const down = onlineDownHadamard(intermediate, options.seed + 3, maxDense);
  // Where a size has no Hadamard the matrix is a seeded random orthogonal one: still exact, so the
  // rotated model computes the same function; the report says which rotation it was.
  const noHadamard = (r: Rotation | null, what: string) => {
    if (r?.warning) warnings.push(`${what}: no Hadamard matrix of order ${r.n} exists here, so it is a seeded random orthogonal ${r.n}×${r.n} matrix (exact; spreads outliers a little less evenly)`);
  };
  noHadamard(residual, `hidden size ${hidden} (residual rotation)`);
  noHadamard(valueHead, `head_dim ${headDim} (value/output rotation)`);
  noHadamard(head, `${numHeads} attention heads (online cross-head rotation before o_proj)`);
  noHadamard(down.rotation, `FF width ${intermediate} (online rotation before down_proj)`);

  const embeddings = findEmbeddings(idx, hidden, dec);
  if (embeddings.length === 0) throw new GraphPatternFormatError('found no embedding Gather over a [vocab, hidden] initializer; can\'t rotate the residual stream');

  const ed = new GraphEditor(model, idx);
  // Each weight is read once (float32, or float64 for double tensors), transformed in place with
  // every rotation it needs (rounded once), and stored once.
  const weight = (l: LinearLayer) => readFloats(ed.initializer(l.weightName)!);
  const store = (l: LinearLayer, values: Float32Array | Float64Array) => ed.replaceInitializer(withValues(ed.initializer(l.weightName)!, values));

  // (a) fold the norms, (b) rotate readers by Qᵀ on the input side: W ← Qᵀ·diag(γ)·W.
  let normsFolded = 0;
  const sharedNormWeights = new Set<string>();
  const foldInto = (readers: LinearLayer[], after?: (l: LinearLayer, w: Float32Array | Float64Array) => void) => {
    if (readers.some((l) => l.inputName !== readers[0].inputName)) {
      throw new GraphPatternFormatError(`${readers.map((l) => `"${l.name}"`).join(', ')} read different tensors; LLaMA's q/k/v (and gate/up) share one normalized input`);
    }
    const gamma = foldNorm(ed, idx, readers[0].inputName, readers, hidden, sharedNormWeights);
    normsFolded++;
    for (const l of readers) {
      const w = rotateRowsT(weight(l), l.outFeatures, residual, 1, 1, gamma);
      after?.(l, w);
      store(l, w);
    }
  };
  for (const b of dec.blocks) {
    // (c) values: per kv head W_v ← W_v·(I_kv ⊗ H_d), after the residual rotation.
    foldInto([b.q, b.k, b.v], (l, w) => {
      if (l === b.v) rotateCols(w, hidden, b.v.outFeatures, valueHead, 1, numKvHeads);
    });
    foldInto([b.gate, b.up]);
  }
  foldInto([dec.lmHead]);

  for (const b of dec.blocks) {
    // o_proj: W ← Mᵀ·Bᵀ·W·Q with B = I_heads ⊗ H_d (offline, matches v) and M = H_heads ⊗ I_d (online).
    const wo = rotateRowsT(weight(b.o), hidden, valueHead, 1, numHeads);
    if (head) rotateRowsT(wo, hidden, head, headDim, 1);
    store(b.o, rotateCols(wo, b.o.inFeatures, hidden, residual, 1, 1));
    // (d) down_proj: W ← H_Iᵀ·W·Q, with the online H_I on its input.
    const wd = rotateRowsT(weight(b.down), hidden, down.rotation, 1, 1);
    store(b.down, rotateCols(wd, intermediate, hidden, residual, 1, 1));
  }

  // Residual writers: embeddings E ← E·Q.
  for (const name of embeddings) {
    const t = ed.initializer(name)!;
    const rows = tensorDims(t)[0];
    ed.replaceInitializer(withValues(t, rotateCols(readFloats(t), rows, hidden, residual, 1, 1)));
  }
  // Online Hadamards as graph nodes.
  const actType = activationType(idx, dec.blocks[0].down);
  const downConsts = down.factors
    ? { a: ed.addInitializer(`obr.hadamard.down.${down.factors.a}`, [down.factors.a, down.factors.a], down.factors.ha, actType), b: ed.addInitializer(`obr.hadamard.down.${down.factors.b}`, [down.factors.b, down.factors.b], down.factors.hb, actType) }
    : { dense: ed.addInitializer(`obr.hadamard.down.${intermediate}`, [intermediate, intermediate], down.rotation.matrix, actType) };
  const headConst = head ? ed.addInitializer(`obr.hadamard.heads.${numHeads}`, [numHeads, numHeads], head.matrix, activationType(idx, dec.blocks[0].o)) : null;
  for (const b of dec.blocks) {
    const downNode = nodeOf(idx, b.down);
    const base = `${b.down.nodeName || b.down.name}/online_hadamard`;
    const out = downConsts.dense
      ? insertDenseMatMul(ed, b.down.inputName, downConsts.dense, base)
      : insertKroneckerMatMul(ed, b.down.inputName, down.factors!.a, down.factors!.b, downConsts.a!, downConsts.b!, base);
    ed.rewireInput(downNode, 0, out);
    if (headConst) {
      const oNode = nodeOf(idx, b.o);
      const hout = insertKroneckerMatMul(ed, b.o.inputName, numHeads, headDim, headConst, null, `${b.o.nodeName || b.o.name}/online_head_hadamard`);
      ed.rewireInput(oNode, 0, hout);
    }
  }

  const rotation: RotationInfo = {
    method: 'quarot',
    seed: options.seed,
    hidden,
    intermediate,
    headDim,
    numHeads,
    numKvHeads,
    blocks: dec.blocks.length,
    residual: describe(residual),
    valueHead: describe(valueHead),
    onlineHead: head ? describe(head) : null,
    onlineDown: { ...describe(down.rotation), factored: !!down.factors },
    normsFolded,
    embeddingsRotated: embeddings.length,
    embeddingMeanCentred: false,
  };
  const out = ed.finish();
  // A shared norm weight every reader now bypasses is dead weight in the rotated graph.
  if (sharedNormWeights.size > 0) pruneUnused(out);
  setMetadata(out, ROTATION_METADATA_KEY, JSON.stringify(rotation));
  return { model: out, warnings, rotation };
}

/** Reads the rotation description a rotated model carries, if any. */
export function rotationOf(model: ModelProto): RotationInfo | undefined {
  const p = (model.metadataProps ?? []).find((x) => x.key === ROTATION_METADATA_KEY);
  return p?.value ? (JSON.parse(p.value) as RotationInfo) : undefined;
}

function describe(r: Rotation): RotationMatrixInfo {
  const info: RotationMatrixInfo = { size: r.n, kind: r.kind };
  if (r.plan) info.construction = r.plan.base === 1 ? `sylvester ${r.plan.power}` : `${r.plan.baseKind} ${r.plan.base} ⊗ sylvester ${r.plan.power}`;
  return info;
}

interface OnlineDown {
  /** H_I; its dense matrix (built on first read) is the online constant when not factored. */
  rotation: Rotation;
  /** Set when stored as H_a ⊗ H_b (two small MatMuls) instead of one dense [n, n]. */
  factors?: { a: number; b: number; ha: Float64Array; hb: Float64Array };
}

function onlineDownHadamard(n: number, seed: number, maxDense: number): OnlineDown {
  const rotation = orthogonalMatrix(n, { seed, randomized: false });
  const plan = hadamardPlan(n);
  if (!plan || n <= maxDense || plan.power === 1) return { rotation };
  if (plan.base === 1) {
    // Pure 2^k: split as 2^⌈k/2⌉ ⊗ 2^⌊k/2⌋ (Sylvester matrices factor exactly).
    let a = 1;
    while (a * a < n) a *= 2;
    const b = n / a;
    return { rotation, factors: { a, b, ha: hadamardMatrix(a), hb: hadamardMatrix(b) } };
  }
  // hadamardMatrix(n) = H_base ⊗ H_power (same factor order), so the factored graph is exact.
  return { rotation, factors: { a: plan.base, b: plan.power, ha: hadamardMatrix(plan.base), hb: hadamardMatrix(plan.power) } };
}

function nodeOf(idx: GraphIndex, l: LinearLayer): NodeProto {
  const n = (idx.graph.node ?? [])[l.order ?? -1];
  if (!n) throw new GraphPatternFormatError(`lost track of node "${l.name}"`);
  return n;
}

/** y = x·H as one MatMul against a constant [n, n]. */
function insertDenseMatMul(ed: GraphEditor, x: string, h: string, base: string): string {
  const mm = ed.node('MatMul', [x, h], `${base}/MatMul`);
  ed.insertAfterProducer(x, [mm]);
  return mm.output![0];
}

/**
 * y = x·(H_a ⊗ H_b) on the last axis of a rank-3 x [b, s, a·b] without forming the big matrix:
 * X = reshape(x, [b, s, a, b]); Y = H_aᵀ·X·H_b; y = reshape(Y, [b, s, a·b]). With hb = null the
 * second factor is the identity (the cross-head Hadamard H_heads ⊗ I_d).
 */
function insertKroneckerMatMul(ed: GraphEditor, x: string, a: number, b: number, ha: string, hb: string | null, base: string): string {
  const split = ed.addInt64(`${base}/split_shape`, [0, 0, a, b]);
  const merge = ed.addInt64(`${base}/merge_shape`, [0, 0, a * b]);
  const nodes: NodeProto[] = [];
  const reshape = ed.node('Reshape', [x, split], `${base}/Reshape`);
  nodes.push(reshape);
  let cur = reshape.output![0];
  if (hb) {
    const mmb = ed.node('MatMul', [cur, hb], `${base}/MatMul_b`);
    nodes.push(mmb);
    cur = mmb.output![0];
  }
  const perm = [{ name: 'perm', type: 7, ints: [0, 1, 3, 2] }];
  const t1 = ed.node('Transpose', [cur], `${base}/Transpose`, perm);
  const mma = ed.node('MatMul', [t1.output![0], ha], `${base}/MatMul_a`);
  const t2 = ed.node('Transpose', [mma.output![0]], `${base}/Transpose_1`, perm);
  const back = ed.node('Reshape', [t2.output![0], merge], `${base}/Reshape_1`);
  nodes.push(t1, mma, t2, back);
  ed.insertAfterProducer(x, nodes);
  return back.output![0];
}

/**
 * Finds the RMSNorm whose output is `tensor` (…Div(x, Sqrt(ReduceMean(x²) + ε))·γ), checks that only
 * the given layers read it, sets γ to ones and returns the old γ (float64).
 */
function foldNorm(ed: GraphEditor, idx: GraphIndex, tensor: string, readers: LinearLayer[], hidden: number, sharedWeights: Set<string>): Float64Array {
  let t = tensor;
  let mul = idx.producer.get(t);
  while (mul && mul.opType === 'Cast') mul = idx.producer.get((t = mul.input?.[0] ?? ''));
  const fail = (why: string): never => {
    throw new GraphPatternFormatError(`the input of ${readers.map((l) => `"${l.name}"`).join(', ')} is not an RMSNorm output (${why}); only LLaMA-style RMSNorm decoders can be rotated`);
  };
  // onnxruntime's fused RMSNorm ops (onnxruntime-genai builder, transformers optimizer): γ is input
  // 1 of SimplifiedLayerNormalization and input 2 of SkipSimplifiedLayerNormalization, whose
  // output 0 is the normalized sum (output 3, the sum itself, stays on the residual stream).
  const fusedSlot = mul?.opType === 'SimplifiedLayerNormalization' || mul?.opType === 'RMSNormalization' ? 1 : mul?.opType === 'SkipSimplifiedLayerNormalization' ? 2 : -1;
  if (mul && fusedSlot > 0 && mul.output?.[0] !== t) return fail(`it is output "${t}" of ${mul.opType}, not its normalized output`);
  if (!mul || (mul.opType !== 'Mul' && fusedSlot < 0)) return fail(`it comes from ${mul?.opType ?? 'a graph input'}`);
  let weightSlot: number;
  let src: ReturnType<typeof constantSource>;
  if (fusedSlot > 0) {
    weightSlot = fusedSlot;
    src = constantSource(idx, mul.input?.[fusedSlot] ?? '');
    if (!src) return fail(`the weight of ${mul.opType} is not a constant`);
  } else {
    const [i0, i1] = mul.input ?? [];
    const w0 = constantSource(idx, i0 ?? '');
    const w1 = constantSource(idx, i1 ?? '');
    weightSlot = w1 ? 1 : w0 ? 0 : -1;
    if (weightSlot < 0 || (w0 && w1)) return fail('no single constant norm weight');
    src = (weightSlot === 1 ? w1 : w0)!;
    const normalized = (mul.input ?? [])[1 - weightSlot] ?? '';
    if (!isRmsNormalized(idx, normalized)) return fail('no x / sqrt(mean(x²) + ε) before the weight');
  }
  const gammaName = src.initializer.name ?? '';
  const gamma = readFloat64(src.initializer);
  if (gamma.length !== hidden) return fail(`its weight has ${gamma.length} entries, not ${hidden}`);
  // Exporters store identical norm weights once (e.g. an untrained model's all-ones gains): a
  // shared γ is read here and the Mul gets its own all-ones copy; the others fold their own reads.
  const shared = (idx.consumers.get(gammaName)?.length ?? 0) !== 1 || idx.outputNames.has(gammaName);
  const allowed = new Set(readers.map((l) => l.inputName));
  const users = (idx.consumers.get(t) ?? []).filter((n) => n.opType !== 'Shape');
  const readerNodes = new Set(readers.map((l) => (idx.graph.node ?? [])[l.order ?? -1]));
  for (const u of users) {
    if (readerNodes.has(u)) continue;
    if (u.opType === 'Cast' && allowed.has(u.output?.[0] ?? '')) continue;
    fail(`"${u.name}" (${u.opType}) also reads it`);
  }
  if (shared) {
    const ones = ed.addInitializer(`${gammaName}.folded`, tensorDims(src.initializer), new Float64Array(hidden).fill(1), src.seenType);
    ed.rewireInput(mul, weightSlot, ones);
    sharedWeights.add(gammaName);
  } else ed.replaceInitializer(withValues(src.initializer, new Float64Array(hidden).fill(1)));
  return gamma;
}

/** x / sqrt(mean(x²) + ε) (or x · 1/sqrt(…)): an RMS normalization without mean subtraction. */
function isRmsNormalized(idx: GraphIndex, t: string): boolean {
  let p = idx.producer.get(t);
  while (p && p.opType === 'Cast') p = idx.producer.get(p.input?.[0] ?? '');
  if (!p || (p.opType !== 'Div' && p.opType !== 'Mul')) return false;
  const x = p.input?.[0] ?? '';
  let d = idx.producer.get(p.input?.[1] ?? '');
  const seen: string[] = [];
  for (let i = 0; d && i < 6; i++) {
    seen.push(d.opType ?? '');
    if (d.opType === 'ReduceMean') {
      const sq = idx.producer.get(d.input?.[0] ?? '');
      if (!sq || (sq.opType !== 'Pow' && sq.opType !== 'Mul')) return false;
      const base = sq.input?.[0] ?? '';
      return sameSource(idx, base, x) && seen.includes('Sqrt');
    }
    // Follow the non-constant operand (e.g. past the ε of the Add).
    const next: string = (d.input ?? []).find((y) => !!y && !idx.initializers.has(y) && !idx.constants.has(y)) ?? '';
    d = idx.producer.get(next);
  }
  return false;
}

/** Two tensor names that are the same value up to Casts. */
function sameSource(idx: GraphIndex, a: string, b: string): boolean {
  const strip = (t: string) => {
    let p = idx.producer.get(t);
    while (p && p.opType === 'Cast') {
      t = p.input?.[0] ?? '';
      p = idx.producer.get(t);
    }
    return t;
  };
  return strip(a) === strip(b);
}

/** Embedding tables: Gather over a constant [vocab, hidden] float initializer with runtime indices. */
function findEmbeddings(idx: GraphIndex, hidden: number, dec: Decoder): string[] {
  const names = new Set<string>();
  const lmWeight = dec.lmHead?.weightName;
  for (const n of idx.graph.node ?? []) {
    if (n.opType !== 'Gather') continue;
    const src = constantSource(idx, n.input?.[0] ?? '');
    if (!src || idx.initializers.has(n.input?.[1] ?? '')) continue;
    const dims = tensorDims(src.initializer);
    const dt = src.initializer.dataType;
    if (dims.length !== 2 || dims[1] !== hidden || (dt !== DataType.FLOAT && dt !== DataType.FLOAT16 && dt !== DataType.BFLOAT16 && dt !== DataType.DOUBLE)) continue;
    if (src.initializer.name === lmWeight) throw new GraphPatternFormatError('the embedding is tied to lm_head; untie the weights before rotating');
    names.add(src.initializer.name ?? '');
  }
  return [...names];
}

// ---- weight algebra on flat row-major matrices (in place; src/core/hadamard.ts rotateVectors) ---

/**
 * W ← Rᵀ·W in place on the row axis k of rows indexed (o, k, i), o < outer, k < R.n, i < inner:
 * out[(o, k′, i), :] = Σ_k R[k, k′]·W[(o, k, i), :]. (outer = inner = 1: Rᵀ·W; inner = 1:
 * (I_outer ⊗ R)ᵀ·W; outer = 1: (R ⊗ I_inner)ᵀ·W.) With `prescale` (inner = 1, one entry per row)
 * the rows are scaled first: W ← Rᵀ·diag(prescale)·W (a folded norm weight). Returns `w`.
 */
export function rotateRowsT<T extends Float32Array | Float64Array>(w: T, cols: number, r: Rotation, inner: number, outer: number, prescale?: Float64Array): T {
  if (prescale && inner !== 1) throw new Error('internal: a row prescale needs inner = 1');
  // For fixed o the rows (k, i) form an [R.n, inner·cols] block whose columns are the vectors.
  const width = inner * cols;
  for (let o = 0; o < outer; o++) rotateVectors(r, w, { offset: o * r.n * width, stride: width, count: width, step: 1 }, prescale?.subarray(o * r.n, (o + 1) * r.n));
  return w;
}

/**
 * W ← W·R in place on the column axis k of columns indexed (o, k, i) as in rotateRowsT:
 * out[:, (o, k′, i)] = Σ_k W[:, (o, k, i)]·R[k, k′] (outer = inner = 1: W·R). Returns `w`.
 */
export function rotateCols<T extends Float32Array | Float64Array>(w: T, rows: number, cols: number, r: Rotation, inner: number, outer: number): T {
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) rotateVectors(r, w, { offset: o * r.n * inner + i, stride: inner, count: rows, step: cols });
  }
  return w;
}
