// The normalization before a group of linear layers, folded for the QuaRot rotation (rotate.ts,
// docs/rotation.md): RMSNorm (decomposed x / sqrt(mean(x²) + ε) · γ, SimplifiedLayerNormalization,
// SkipSimplifiedLayerNormalization) gives up its gain γ, which the readers absorb; LayerNorm
// (LayerNormalization, onnxruntime's SkipLayerNormalization and EmbedLayerNormalization) gives up γ
// and β and becomes an RMSNorm without gain. The LayerNorm → RMSNorm step is exact only on a
// mean-free residual stream: with Σᵢ xᵢ = 0, (x − mean(x)) / sqrt(var(x) + ε) = x / sqrt(mean(x²) + ε).
// rotate.ts makes the stream mean-free by centring every writer into it (embeddings, o/down
// outputs and their biases), as SliceGPT (Ashkboos et al. 2024, §3.2) and QuaRot's
// fuse_layer_norms do for OPT/GPT-2-style models.
import { attrFloat, attrInt, opsetVersion, type GraphIndex } from './graph';
import type { ModelProto, NodeProto } from './proto';
import { constantSource, GraphEditor, GraphPatternFormatError, readFloat64, withValues } from './rotateGraph';
import { tensorDims } from './tensor';
import type { LinearLayer } from './types';

export type NormKind = 'rms' | 'layer';

export interface FoldedNorm {
  kind: NormKind;
  /** The gain γ the readers absorb (W ← diag(γ)·W on the input axis). */
  gamma: Float64Array;
  /** LayerNorm's shift β, if any: the readers' biases absorb β·W (W before any change). */
  beta?: Float64Array;
  /** The norm's op (for messages). */
  op: string;
}

/** LayerNorm ops: [γ input slot, β input slot, normalized output slot]. */
const LAYER_NORMS: Readonly<Record<string, readonly [number, number, number]>> = {
  LayerNormalization: [1, 2, 0],
  SkipLayerNormalization: [2, 3, 0],
  EmbedLayerNormalization: [5, 6, 0],
};

/** Ops that pass a normalized tensor on to a reader unchanged in value: dtype casts and a Gemm's flattening Reshape. */
const PASS_THROUGH = new Set(['Cast', 'Reshape']);

/**
 * Finds the norm whose output the `readers` read (directly or through Cast/Reshape), checks that
 * nothing else reads it, removes its gain (and for a LayerNorm its shift, turning it into an
 * RMSNorm without gain, via `ed`) and returns what the readers must absorb.
 */
export function foldNorm(ed: GraphEditor, idx: GraphIndex, model: ModelProto, readers: LinearLayer[], hidden: number, sharedWeights: Set<string>): FoldedNorm {
  const fail = (why: string): never => {
    throw new GraphPatternFormatError(`the input of ${readers.map((l) => `"${l.name}"`).join(', ')} is not a norm output (${why}); only decoders with RMSNorm or LayerNorm before their projections can be rotated`);
  };
  // Walk each reader's input back through Cast/Reshape to the norm's output; all must meet there.
  const chain = new Set<NodeProto>();
  let normOut: string | undefined;
  for (const l of readers) {
    const readerNode = (idx.graph.node ?? [])[l.order ?? -1];
    if (readerNode) chain.add(readerNode);
    let t = l.inputName;
    let p = idx.producer.get(t);
    while (p && PASS_THROUGH.has(p.opType ?? '')) {
      chain.add(p);
      t = p.input?.[0] ?? '';
      p = idx.producer.get(t);
    }
    if (normOut !== undefined && normOut !== t) fail('they read different norms');
    normOut = t;
  }
  const t = normOut ?? '';
  const norm = idx.producer.get(t);
  const users = (idx.consumers.get(t) ?? []).filter((n) => n.opType !== 'Shape');
  for (const u of users) if (!chain.has(u)) fail(`"${u.name}" (${u.opType}) also reads it`);
  for (const n of chain) {
    if (!PASS_THROUGH.has(n.opType ?? '')) continue;
    const others = (idx.consumers.get(n.output?.[0] ?? '') ?? []).filter((c) => c.opType !== 'Shape' && !chain.has(c));
    if (others.length > 0) fail(`"${others[0]!.name}" (${others[0]!.opType}) also reads it`);
  }
  if (!norm) return fail('it is a graph input');
  const ln = LAYER_NORMS[norm.opType ?? ''];
  if (ln) return foldLayerNorm(ed, idx, model, norm, t, ln, hidden, fail);
  return foldRmsNorm(ed, idx, norm, t, hidden, sharedWeights, fail);
}

function foldRmsNorm(ed: GraphEditor, idx: GraphIndex, mul: NodeProto, t: string, hidden: number, sharedWeights: Set<string>, fail: (why: string) => never): FoldedNorm {
  // onnxruntime's fused RMSNorm ops (onnxruntime-genai builder, transformers optimizer): γ is input
  // 1 of SimplifiedLayerNormalization and input 2 of SkipSimplifiedLayerNormalization, whose
  // output 0 is the normalized sum (output 3, the sum itself, stays on the residual stream).
  const fusedSlot = mul.opType === 'SimplifiedLayerNormalization' || mul.opType === 'RMSNormalization' ? 1 : mul.opType === 'SkipSimplifiedLayerNormalization' ? 2 : -1;
  if (fusedSlot > 0 && mul.output?.[0] !== t) return fail(`it is output "${t}" of ${mul.opType}, not its normalized output`);
  if (mul.opType !== 'Mul' && fusedSlot < 0) return fail(`it comes from ${mul.opType}`);
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
  if (shared) {
    const ones = ed.addInitializer(`${gammaName}.folded`, tensorDims(src.initializer), new Float64Array(hidden).fill(1), src.seenType);
    ed.rewireInput(mul, weightSlot, ones);
    sharedWeights.add(gammaName);
  } else ed.replaceInitializer(withValues(src.initializer, new Float64Array(hidden).fill(1)));
  return { kind: 'rms', gamma, op: mul.opType ?? '' };
}

/**
 * A LayerNorm op becomes an RMSNorm without gain: LayerNormalization → x / sqrt(mean(x²) + ε);
 * SkipLayerNormalization → SkipSimplifiedLayerNormalization with unit γ (same inputs and
 * outputs, the residual sum stays output 3); EmbedLayerNormalization → the two embedding Gathers,
 * their sum (its output 2) and x / sqrt(mean(x²) + ε). γ and β are returned for the readers.
 */
function foldLayerNorm(
  ed: GraphEditor,
  idx: GraphIndex,
  model: ModelProto,
  norm: NodeProto,
  t: string,
  [gammaSlot, betaSlot, outSlot]: readonly [number, number, number],
  hidden: number,
  fail: (why: string) => never,
): FoldedNorm {
  const op = norm.opType ?? '';
  if (norm.output?.[outSlot] !== t) return fail(`it is output "${t}" of ${op}, not its normalized output`);
  if (op === 'LayerNormalization' && attrInt(norm, 'axis', -1) !== -1) {
    return fail(`its LayerNormalization normalizes from axis ${attrInt(norm, 'axis', -1)}, not the last axis`);
  }
  const gSrc = constantSource(idx, norm.input?.[gammaSlot] ?? '');
  if (!gSrc) return fail(`the weight of ${op} is not a constant`);
  const gamma = readFloat64(gSrc.initializer);
  if (gamma.length !== hidden) return fail(`its weight has ${gamma.length} entries, not ${hidden}`);
  const betaName = norm.input?.[betaSlot] ?? '';
  const bSrc = betaName ? constantSource(idx, betaName) : undefined;
  if (betaName && !bSrc) return fail(`the bias of ${op} is not a constant`);
  const beta = bSrc ? readFloat64(bSrc.initializer) : undefined;
  const eps = attrFloat(norm, 'epsilon', 1e-5);
  const dtype = gSrc.seenType;
  const used = (slot: number) => {
    const name = norm.output?.[slot];
    return !!name && ((idx.consumers.get(name)?.length ?? 0) > 0 || idx.outputNames.has(name));
  };
  const base = norm.name || t;
  if (op === 'SkipLayerNormalization') {
    if (used(1) || used(2)) return fail(`${op} "${norm.name}" has its mean / inverse-deviation outputs read`);
    const ones = ed.addInitializer(`${base}.rms_gain`, [hidden], new Float64Array(hidden).fill(1), dtype);
    const [input, skip, , , bias] = norm.input ?? [];
    const outputs = [...(norm.output ?? [])];
    while (outputs.length < 4) outputs.push('');
    const simplified: NodeProto = {
      opType: 'SkipSimplifiedLayerNormalization',
      domain: 'com.microsoft',
      name: ed.names.fresh(`${base}/rms`),
      input: bias ? [input!, skip!, ones, bias] : [input!, skip!, ones],
      output: outputs,
      attribute: [{ name: 'epsilon', type: 1, f: eps }],
    };
    ed.replaceNode(norm, [simplified]);
  } else if (op === 'EmbedLayerNormalization') {
    const [ids, segmentIds, word, position, segment, , , mask, positionIds] = norm.input ?? [];
    if (segmentIds || segment) return fail(`${op} "${norm.name}" adds segment embeddings`);
    if (mask && used(1)) return fail(`${op} "${norm.name}" has its mask_index output read`);
    if (!positionIds) return fail(`${op} "${norm.name}" has no position_ids input (positions implied)`);
    const nodes: NodeProto[] = [];
    const gw = ed.node('Gather', [word!, ids!], `${base}/word_Gather`);
    const gp = ed.node('Gather', [position!, positionIds], `${base}/position_Gather`);
    const sum = ed.node('Add', [gw.output![0]!, gp.output![0]!], `${base}/Add`);
    if (norm.output?.[2]) sum.output = [norm.output[2]];
    nodes.push(gw, gp, sum, ...rmsNodes(ed, model, sum.output![0]!, t, eps, dtype, base));
    ed.replaceNode(norm, nodes);
  } else {
    if (used(1) || used(2)) return fail(`${op} "${norm.name}" has its mean / inverse-deviation outputs read`);
    ed.replaceNode(norm, rmsNodes(ed, model, norm.input?.[0] ?? '', t, eps, dtype, base));
  }
  return { kind: 'layer', gamma, ...(beta && beta.some((v) => v !== 0) ? { beta } : {}), op };
}

/** y = x / sqrt(mean(x², last axis) + ε) writing `out`: the decomposed RMSNorm isRmsNormalized knows. */
function rmsNodes(ed: GraphEditor, model: ModelProto, x: string, out: string, eps: number, dtype: number, base: string): NodeProto[] {
  const sq = ed.node('Mul', [x, x], `${base}/rms/Mul`);
  const opset = opsetVersion(model) ?? 17;
  const keep = { name: 'keepdims', type: 2, i: 1 };
  const mean =
    opset >= 18
      ? ed.node('ReduceMean', [sq.output![0]!, ed.addInt64(`${base}/rms/axes`, [-1])], `${base}/rms/ReduceMean`, [keep])
      : ed.node('ReduceMean', [sq.output![0]!], `${base}/rms/ReduceMean`, [{ name: 'axes', type: 7, ints: [-1] }, keep]);
  const add = ed.node('Add', [mean.output![0]!, ed.addInitializer(`${base}/rms/epsilon`, [], [eps], dtype)], `${base}/rms/Add`);
  const sqrt = ed.node('Sqrt', [add.output![0]!], `${base}/rms/Sqrt`);
  const div = ed.node('Div', [x, sqrt.output![0]!], `${base}/rms/Div`);
  div.output = [out];
  return [sq, mean, add, sqrt, div];
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
