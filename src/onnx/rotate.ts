// QuaRot rotation of a LLaMA- or GPT-2-style ONNX decoder as a pure graph transform (docs/obr-algorithm.md
// §1.3; Ashkboos et al. 2024, "QuaRot", §4). The rotated model computes the same function (up to
// float rounding) but its linear-layer inputs have far smaller outliers, which is what makes
// per-token 4-bit activations (A4) and a 4-bit KV cache workable.
//
// Conventions: activations are row vectors, y = x·W (+ b) with W [in, out] (MatMul, Gemm without
// transB, onnxruntime's packed Attention weight) or stored [out, in] (Gemm transB = 1); the algebra
// below is written for [in, out] and applied on the matching axis of either. Q is the residual
// rotation (hidden×hidden, orthogonal):
//   residual stream   x ← x·Q                 (embeddings E ← E·Q; o/down outputs W ← W·Q, b ← b·Q)
//   RMSNorm           rms(x·Q) = rms(x), so norm(x·Q) = norm(x)·Q once the norm weight γ is folded
//   readers           W ← Qᵀ·diag(γ)·W        (q/k/v with input_layernorm, gate/up with
//                                              post_attention_layernorm, lm_head with the final norm)
//   values            W_v ← W_v·(I_kv ⊗ H_d), b_v ← b_v·(I_kv ⊗ H_d)  per kv head, exact offline (§1.3 step 3)
//   o_proj input      online (H_heads ⊗ I_d) across heads, so o's input sees H_heads ⊗ H_d,
//                     W_o ← (H_heads ⊗ I_d)ᵀ·(I_heads ⊗ H_d)ᵀ·W_o·Q
//   down_proj input   online H_I (size intermediate), W_down ← H_Iᵀ·W_down·Q (§1.3 step 4)
// LayerNorm decoders (GPT-2) are first made RMSNorm decoders, exactly (norms.ts; SliceGPT §3.2):
// every writer into the residual stream is centred, so the stream is mean-free — embeddings
// E ← E·C, o/down W ← W·C and b ← b·C with C = I − 𝟙𝟙ᵀ/hidden — each LayerNorm becomes
// x / sqrt(mean(x²) + ε) and its β moves into the readers' biases (b ← b + β·W, W before γ).
// Deviation from QuaRot for RMSNorm models: the embedding is NOT mean-centred. QuaRot's
// fuse_layer_norms subtracts the embedding rows' mean, which is right for LayerNorm models (as
// above) but changes an RMSNorm model's function (the mean is part of the signal RMSNorm sees).
import { hadamardMatrix, hadamardPlan, orthogonalMatrix, rotateVectors, type Rotation } from '../core/hadamard';
import { ModelWriteInputError } from './errors';
import { cloneModel, indexGraph, pruneUnused, setMetadata, type GraphIndex } from './graph';
import { DataType, type ModelProto, type NodeProto, type TensorProto } from './proto';
import { foldNorm } from './norms';
import {
  activationType,
  constantSource,
  findDecoder,
  GraphEditor,
  GraphPatternFormatError,
  partRows,
  readFloat64,
  readFloats,
  withValues,
  type Decoder,
} from './rotateGraph';
import { decodeFloats, elementCount, elementSize, inlineTensorBytes, isExternal, tensorDims, tensorHeader } from './tensor';
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
  /** 'layer': a LayerNorm decoder made an RMSNorm one first (residual writers centred; header comment). */
  norm: 'rms' | 'layer';
  embeddingsRotated: number;
  /** True exactly for LayerNorm decoders (see the header comment). */
  embeddingMeanCentred: boolean;
}

export interface RotateResult {
  model: ModelProto;
  warnings: string[];
  rotation: RotationInfo;
}

export const ROTATION_METADATA_KEY = 'obr.rotation';

/**
 * One weight transform of the rotation: reads initializers (`reads`) and returns the values of
 * the initializers it writes (`writes`, in order). Tasks run in order, each with only its own
 * tensors in memory (rotateModelStreamed) or all in memory (rotateModel), with the same result
 * bit for bit. A read is the input model's tensor, or — `written`, for a tensor several layers
 * share (an exporter's deduplicated bias) — the value an earlier task wrote.
 */
export interface TaskRead {
  name: string;
  as: 'floats' | 'float64';
  /** Read what an earlier task wrote under this name (not the input model's value). */
  written?: boolean;
}

export interface RotationTask {
  /** Initializers it reads: `floats` as float32 (float64 for double tensors), `float64` as float64. */
  reads: ReadonlyArray<TaskRead>;
  /** The initializers it writes, as they stand in the graph before the task's values (name, dims, type). */
  writes: readonly TensorProto[];
  /** The values of `writes` from the values of `reads` (it may modify and return its inputs). */
  run(inputs: Array<Float32Array | Float64Array>): Array<Float32Array | Float64Array>;
}

/**
 * The rotation as a graph transform plus weight tasks: `model` is the rotated graph whose task
 * outputs are placeholders (header only, no data) until filled with the tasks' values
 * (rotateModel, rotateModelStreamed). A branch whose weights are replaced afterwards anyway (a
 * merged decoder's with-past branch) needs only the graph.
 */
export interface RotationPlan extends RotateResult {
  tasks: RotationTask[];
  /** Names of the placeholder initializers in `model` (each written by exactly one task). */
  placeholders: ReadonlySet<string>;
}

export function rotateModel(model: ModelProto, options: RotateOptions): RotateResult {
  const plan = planRotation(model, options);
  const inputs = indexGraph(model.graph!).initializers;
  const values = new Map<string, TensorProto>();
  for (const task of plan.tasks) {
    const out = task.run(task.reads.map((r) => readAs(r.written ? values.get(r.name)! : inputs.get(r.name)!, r.as)));
    task.writes.forEach((h, i) => values.set(h.name ?? '', withValues(h, out[i]!)));
  }
  return { model: fillPlaceholders(plan, values), warnings: plan.warnings, rotation: plan.rotation };
}

/** Where rotateModelStreamed reads and writes weights: the job's working store (src/onnx/store.ts). */
export interface RotationStore {
  /** Bytes of a tensor (inline or external); external reads are fresh buffers the caller owns. */
  readTensor(t: TensorProto): Promise<Uint8Array>;
  /** Hands back bytes returned by readTensor. */
  release(bytes: number): void;
  /** Stores `bytes` for `header`; returns the tensor as the graph should hold it (an external reference or inline). */
  put(header: TensorProto, bytes: Uint8Array): Promise<TensorProto>;
}

/**
 * Whether the graph transform may read a tensor's data (rotateModelStreamed reads these before
 * planning): vectors and scalars (norm gains and shifts, biases, ε) and small non-float tensors
 * (shape constants). Weight matrices are left to the tasks.
 */
function readByPlan(t: TensorProto): boolean {
  const dims = tensorDims(t);
  if (dims.filter((d) => d > 1).length <= 1) return true;
  const float = t.dataType === DataType.FLOAT || t.dataType === DataType.FLOAT16 || t.dataType === DataType.BFLOAT16 || t.dataType === DataType.DOUBLE;
  return !float && elementCount(dims) * (elementSize(t.dataType ?? 0) ?? 8) <= 1 << 20;
}

/**
 * rotateModel on a graph whose weights are external references (the job's working copy), one
 * tensor at a time: the vectors and constants the graph transform reads (norm gains, biases, shape
 * constants; readByPlan) are read first; then each task reads its few weights from `store`, rotates them and
 * writes the result back to `store`, and drops them — so memory holds the largest task's tensors
 * (an embedding table, or lm_head and its copy), never the model. The result equals rotateModel
 * on the same model with every weight inline, bit for bit (test/unit/onnx/rotateStreamed.test.ts).
 * `onTask(done, total)` reports progress.
 */
export async function rotateModelStreamed(
  model: ModelProto,
  options: RotateOptions,
  store: RotationStore,
  onTask?: (done: number, total: number) => void,
): Promise<RotateResult> {
  const planned = await readPlanTensors(model, store);
  try {
    const plan = planRotation(planned.model, options);
    const inputs = indexGraph(planned.model.graph!).initializers;
    const values = new Map<string, TensorProto>();
    let done = 0;
    for (const task of plan.tasks) {
      let held = 0;
      try {
        const args: Array<Float32Array | Float64Array> = [];
        for (const r of task.reads) {
          const t = r.written ? values.get(r.name)! : inputs.get(r.name)!;
          const bytes = await store.readTensor(t);
          if (isExternal(t)) held += bytes.length;
          args.push(readAs(t, r.as, bytes));
        }
        const out = task.run(args);
        for (let i = 0; i < task.writes.length; i++) {
          const h = task.writes[i]!;
          values.set(h.name ?? '', await store.put(h, inlineTensorBytes(withValues(h, out[i]!))));
        }
      } finally {
        store.release(held);
      }
      onTask?.(++done, plan.tasks.length);
    }
    const out = planned.restore(fillPlaceholders(plan, values));
    return { model: out, warnings: plan.warnings, rotation: plan.rotation };
  } finally {
    store.release(planned.bytes);
  }
}

/**
 * The rotated graph of `model` without its weights: what the rotation does to the graph (norms,
 * online Hadamards, added biases and copies), with every tensor a weight task would write left as
 * a placeholder (named in `placeholders`, no data) for the caller to replace — a merged decoder's
 * with-past branch takes them from the rotated no-past branch (src/onnx/merged.ts
 * withSharedWeightsOf). Reads only the vectors and constants the transform needs (from `store`
 * when external).
 */
export async function rotateGraphOnly(
  model: ModelProto,
  options: RotateOptions,
  store?: Pick<RotationStore, 'readTensor' | 'release'>,
): Promise<RotateResult & { placeholders: ReadonlySet<string> }> {
  const planned = store ? await readPlanTensors(model, store) : { model, bytes: 0, restore: (m: ModelProto) => m };
  try {
    const plan = planRotation(planned.model, options);
    return { model: planned.restore(plan.model), warnings: plan.warnings, rotation: plan.rotation, placeholders: plan.placeholders };
  } finally {
    store?.release(planned.bytes);
  }
}

/**
 * A copy of `model` with the external tensors the graph transform reads (readByPlan) read inline
 * (`bytes` of them, to release); `restore` puts the original references back into a graph
 * derived from the copy wherever a tensor was left as it was.
 */
async function readPlanTensors(model: ModelProto, store: Pick<RotationStore, 'readTensor' | 'release'>): Promise<{ model: ModelProto; bytes: number; restore(m: ModelProto): ModelProto }> {
  const original = new Map<TensorProto, TensorProto>();
  const copy = cloneModel(model);
  const inits = copy.graph!.initializer!;
  let bytes = 0;
  try {
    for (let i = 0; i < inits.length; i++) {
      const t = inits[i]!;
      if (!isExternal(t) || !readByPlan(t)) continue;
      const rawData = await store.readTensor(t);
      bytes += rawData.length;
      const inline: TensorProto = { ...tensorHeader(t), rawData };
      original.set(inline, t);
      inits[i] = inline;
    }
  } catch (e) {
    store.release(bytes);
    throw e;
  }
  return {
    model: copy,
    bytes,
    restore: (m) => {
      m.graph!.initializer = m.graph!.initializer!.map((t) => original.get(t) ?? t);
      return m;
    },
  };
}

/**
 * A tensor's values for a task: `floats` as float32 (float64 for double tensors), `float64` as
 * float64. `bytes`, when given, are its stored bytes read fresh from a file: a float32 tensor is
 * then used in place (no copy).
 */
function readAs(t: TensorProto, as: 'floats' | 'float64', bytes?: Uint8Array): Float32Array | Float64Array {
  if (!bytes) return as === 'floats' ? readFloats(t) : readFloat64(t);
  const n = elementCount(tensorDims(t));
  if (as === 'floats' && t.dataType === DataType.FLOAT && isExternal(t) && bytes.byteOffset % 4 === 0 && bytes.byteLength === 4 * n) {
    return new Float32Array(bytes.buffer, bytes.byteOffset, n);
  }
  const out = as === 'float64' || t.dataType === DataType.DOUBLE ? new Float64Array(n) : new Float32Array(n);
  return decodeFloats(bytes, t.dataType ?? 0, out);
}

/** The plan's model with its placeholders replaced by `values` (every one must be there). */
function fillPlaceholders(plan: RotationPlan, values: ReadonlyMap<string, TensorProto>): ModelProto {
  const out = plan.model;
  out.graph!.initializer = out.graph!.initializer!.map((t) => {
    const name = t.name ?? '';
    if (!plan.placeholders.has(name)) return t;
    const v = values.get(name);
    if (!v) throw new Error(`internal: the rotation computed no values for "${name}"`);
    return v;
  });
  return out;
}

/**
 * The rotation's graph transform and its weight tasks (see RotationPlan). Reads the data of small
 * tensors only (norm gains and shifts, shape constants); the weights are read by the tasks.
 */
export function planRotation(model: ModelProto, options: RotateOptions): RotationPlan {
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

  const ed = new GraphEditor(model, idx);
  // Weight tasks: each reads input-model initializers and writes placeholders. `copyOf` maps an
  // added copy (a tied lm_head's) to the table it copies, which the task reads instead.
  const tasks: RotationTask[] = [];
  const placeholders = new Set<string>();
  const copyOf = new Map<string, string>();
  const read = (name: string, as: TaskRead['as']): TaskRead => {
    const s = copyOf.get(name) ?? name;
    if (!idx.initializers.has(s)) throw new Error(`internal: the rotation reads "${s}", which is no initializer of the model`);
    // A tensor several layers share (a deduplicated bias) is read as the earlier layer's task left it.
    return placeholders.has(s) ? { name: s, as, written: true } : { name: s, as };
  };
  /** The current tensor `name` becomes a placeholder; returns it as it stood (the header for withValues). */
  const place = (name: string): TensorProto => {
    const t = ed.initializer(name)!;
    placeholders.add(name);
    // The fields withValues keeps: a second write (a shared bias) gets the same header.
    ed.replaceInitializer({ name: t.name, dims: t.dims, dataType: t.dataType, docString: t.docString });
    return t;
  };
  /** A new initializer the tasks fill: a tied lm_head's copy (written by its reader task), a LayerNorm reader's new bias. */
  const addPlaceholder = (base: string, dims: number[], dataType: number): string => ed.addPlaceholder(base, dims, dataType);
  // A tied lm_head (reading the embedding table, e.g. through a Transpose) gets its own copy: the
  // table is rotated as a writer (E·C·Q), lm_head as a reader (Qᵀ·diag(γ)·W).
  const lmHead = dec.lmHead.weightShared ? untieHead(ed, idx, dec.lmHead, warnings, addPlaceholder, copyOf) : dec.lmHead;
  const embeddings = findEmbeddings(idx, hidden, { ...dec, lmHead });
  if (embeddings.length === 0) throw new GraphPatternFormatError('found no embedding Gather over a [vocab, hidden] initializer; can\'t rotate the residual stream');

  // Each weight is read once (float32, or float64 for double tensors), transformed in place with
  // every rotation it needs (rounded once), and stored once; biases likewise in float64.
  const vRows = partRows(dec.blocks[0], 'v');

  // (a) fold the norms, (b) rotate readers by Qᵀ on the input side: W ← Qᵀ·diag(γ)·W; a
  // LayerNorm's β goes into the readers' biases first.
  let normsFolded = 0;
  const kinds = new Set<string>();
  const sharedNormWeights = new Set<string>();
  const foldInto = (readers: LinearLayer[], values?: LinearLayer) => {
    const norm = foldNorm(ed, idx, model, readers, hidden, sharedNormWeights);
    kinds.add(norm.kind);
    normsFolded++;
    for (const l of readers) {
      const biasName = biasOf(idx, l);
      const reads = [read(l.weightName, 'floats'), ...(biasName ? [read(biasName, 'float64')] : [])];
      const writes = [place(l.weightName)];
      // A LayerNorm's β·W gives a reader without a bias one.
      if (biasName) writes.push(place(biasName));
      else if (norm.beta) {
        const added = addBias(ed, idx, l, addPlaceholder);
        placeholders.add(added);
        writes.push(ed.initializer(added)!);
      }
      const { gamma, beta } = norm;
      const isValues = l === values;
      tasks.push({
        reads,
        writes,
        run: ([w, stored]) => {
          let b = stored as Float64Array | undefined;
          if (beta) {
            const shift = inputTimes(beta, w!, l);
            if (b) for (let j = 0; j < b.length; j++) b[j] += shift[j];
            else b = shift;
          }
          rotateInput(w!, l, residual, { prescale: gamma });
          // (c) values: per kv head W_v ← W_v·(I_kv ⊗ H_d) (and its bias), after the residual rotation.
          if (isValues) {
            rotateOutput(w!, l, valueHead, { outer: numKvHeads, offset: vRows[0] });
            if (b) rotateCols(b, 1, b.length, valueHead, 1, numKvHeads, { offset: vRows[0] });
          }
          return b ? [w!, b] : [w!];
        },
      });
    }
  };
  for (const b of dec.blocks) {
    foldInto(b.fused ? [b.q] : [b.q, b.k, b.v], b.v);
    foldInto(b.gate ? [b.gate, b.up] : [b.up]);
  }
  foldInto([lmHead]);
  if (kinds.size > 1) throw new GraphPatternFormatError('the decoder mixes RMSNorm and LayerNorm before its projections; can\'t rotate it');
  const layerNorm = kinds.has('layer');

  // Writers into the residual stream: W ← W·C·Q, b ← b·C·Q (C centres, LayerNorm decoders only);
  // `inputSide` applies what the writer's input needs first.
  const writeResidual = (l: LinearLayer, inputSide: (w: Float32Array | Float64Array) => void) => {
    const biasName = biasOf(idx, l);
    const reads = [read(l.weightName, 'floats'), ...(biasName ? [read(biasName, 'float64')] : [])];
    const writes = [place(l.weightName), ...(biasName ? [place(biasName)] : [])];
    tasks.push({
      reads,
      writes,
      run: ([w, b]) => {
        inputSide(w!);
        if (layerNorm) centreOutput(w!, l);
        rotateOutput(w!, l, residual, {});
        if (!b) return [w!];
        if (layerNorm) centre(b, 0, b.length, 1);
        return [w!, rotateCols(b, 1, hidden, residual, 1, 1)];
      },
    });
  };
  for (const b of dec.blocks) {
    // o_proj: W ← Mᵀ·Bᵀ·W·Q with B = I_heads ⊗ H_d (offline, matches v) and M = H_heads ⊗ I_d (online).
    writeResidual(b.o, (wo) => {
      rotateInput(wo, b.o, valueHead, { outer: numHeads });
      if (head) rotateInput(wo, b.o, head, { inner: headDim });
    });
    // (d) down_proj: W ← H_Iᵀ·W·Q, with the online H_I on its input.
    writeResidual(b.down, (wd) => rotateInput(wd, b.down, down.rotation, {}));
  }

  // Embeddings E ← E·C·Q.
  for (const name of embeddings) {
    const reads = [read(name, 'floats')];
    const header = place(name);
    const rows = tensorDims(header)[0];
    tasks.push({
      reads,
      writes: [header],
      run: ([e]) => {
        if (layerNorm) for (let r = 0; r < rows; r++) centre(e!, r * hidden, hidden, 1);
        return [rotateCols(e!, rows, hidden, residual, 1, 1)];
      },
    });
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
    norm: layerNorm ? 'layer' : 'rms',
    embeddingsRotated: embeddings.length,
    embeddingMeanCentred: layerNorm,
  };
  const out = ed.finish();
  // A shared norm weight every reader now bypasses, or a LayerNorm's γ/β, is dead weight now.
  if (sharedNormWeights.size > 0 || layerNorm) pruneUnused(out);
  setMetadata(out, ROTATION_METADATA_KEY, JSON.stringify(rotation));
  return { model: out, warnings, rotation, tasks, placeholders };
}

/**
 * lm_head reading the embedding table (tied weights): a copy of the table for lm_head alone,
 * wired in where the lm_head path reads the table (the Transpose before a MatMul, or the Gemm).
 * Any other sharing is refused. The copy is a placeholder lm_head's task fills.
 */
function untieHead(
  ed: GraphEditor,
  idx: GraphIndex,
  head: LinearLayer,
  warnings: string[],
  addPlaceholder: (base: string, dims: number[], dataType: number) => string,
  copyOf: Map<string, string>,
): LinearLayer {
  const table = head.weightName;
  const tableReaders = idx.consumers.get(table) ?? [];
  let reader = nodeOf(idx, head);
  let slot = 1;
  for (let step = 0; step < 4 && reader.input?.[slot] !== table; step++) {
    const p = idx.producer.get(reader.input?.[slot] ?? '');
    if (!p || (p.opType !== 'Transpose' && p.opType !== 'Cast')) break;
    reader = p;
    slot = 0;
  }
  const others = tableReaders.filter((n) => n !== reader);
  if (reader.input?.[slot] !== table || idx.outputNames.has(table) || others.length === 0 || others.some((n) => n.opType !== 'Gather')) {
    throw new GraphPatternFormatError(`weight "${table}" of "${head.name}" is shared with other nodes (tied weights) in a way rotation can't untie; untie it before rotating`);
  }
  const src = ed.initializer(table)!;
  // The copy's values are the table's: lm_head's task reads the table (copyOf) and writes the copy.
  const copy = addPlaceholder(`${table}.lm_head`, tensorDims(src), src.dataType ?? DataType.FLOAT);
  copyOf.set(copy, table);
  ed.rewireInput(reader, slot, copy);
  const dims = tensorDims(src);
  warnings.push(`lm_head shares its weight with the embedding (tied); the rotation folds them differently, so lm_head gets its own copy (${dims.join(' × ')} more weights)`);
  return { ...head, weightName: copy, weightShared: false };
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
 * y = x·(H_a ⊗ H_b) on the last axis of x (any rank, e.g. [b, s, a·b], or [b·s, a·b] before a
 * Gemm) without forming the big matrix: X = reshape(x, [−1, a, b]); Y = H_aᵀ·X·H_b;
 * y = reshape(Y, shape(x)). With hb = null the second factor is the identity (the cross-head
 * Hadamard H_heads ⊗ I_d).
 */
function insertKroneckerMatMul(ed: GraphEditor, x: string, a: number, b: number, ha: string, hb: string | null, base: string): string {
  const split = ed.addInt64(`${base}/split_shape`, [-1, a, b]);
  const nodes: NodeProto[] = [];
  const shape = ed.node('Shape', [x], `${base}/Shape`);
  const reshape = ed.node('Reshape', [x, split], `${base}/Reshape`);
  nodes.push(shape, reshape);
  let cur = reshape.output![0];
  if (hb) {
    const mmb = ed.node('MatMul', [cur, hb], `${base}/MatMul_b`);
    nodes.push(mmb);
    cur = mmb.output![0];
  }
  const perm = [{ name: 'perm', type: 7, ints: [0, 2, 1] }];
  const t1 = ed.node('Transpose', [cur], `${base}/Transpose`, perm);
  const mma = ed.node('MatMul', [t1.output![0], ha], `${base}/MatMul_a`);
  const t2 = ed.node('Transpose', [mma.output![0]], `${base}/Transpose_1`, perm);
  const back = ed.node('Reshape', [t2.output![0], shape.output![0]], `${base}/Reshape_1`);
  nodes.push(t1, mma, t2, back);
  ed.insertAfterProducer(x, nodes);
  return back.output![0];
}

/** Embedding tables: [rows, hidden] float initializers a Gather (with runtime indices) or an EmbedLayerNormalization reads. */
function findEmbeddings(idx: GraphIndex, hidden: number, dec: Decoder): string[] {
  const names = new Set<string>();
  const lmWeight = dec.lmHead?.weightName;
  for (const n of idx.graph.node ?? []) {
    // onnxruntime's EmbedLayerNormalization reads the word (input 2) and position (input 3) tables.
    const tables = n.opType === 'Gather' && !idx.initializers.has(n.input?.[1] ?? '') ? [n.input?.[0]] : n.opType === 'EmbedLayerNormalization' ? [n.input?.[2], n.input?.[3]] : [];
    for (const table of tables) {
    const src = constantSource(idx, table ?? '');
    if (!src) continue;
    const dims = tensorDims(src.initializer);
    const dt = src.initializer.dataType;
    if (dims.length !== 2 || dims[1] !== hidden || (dt !== DataType.FLOAT && dt !== DataType.FLOAT16 && dt !== DataType.BFLOAT16 && dt !== DataType.DOUBLE)) continue;
    if (src.initializer.name === lmWeight) throw new GraphPatternFormatError('the embedding is tied to lm_head; untie the weights before rotating');
    names.add(src.initializer.name ?? '');
    }
  }
  return [...names];
}

// ---- a layer's weight and bias, either storage orientation -----------------------------------------

interface AxisOptions {
  /** Structure of the rotated axis (o, k, i) as in rotateRowsT: k < R.n, i < inner, o < outer (default 1, 1). */
  inner?: number;
  outer?: number;
  /** Per-entry scale of the input axis applied first (a folded norm gain γ; inner = 1). */
  prescale?: Float64Array;
  /** First output channel of the rotated range (a fused qkv layer's v part). */
  offset?: number;
}

/** The layer reads x·R instead of x: W ← Rᵀ·diag(prescale)·W on the input axis. Returns `w`. */
function rotateInput<T extends Float32Array | Float64Array>(w: T, l: LinearLayer, r: Rotation, o: AxisOptions): T {
  const opts = { prescale: o.prescale };
  return l.orientation === 'in-out' ? rotateRowsT(w, l.outFeatures, r, o.inner ?? 1, o.outer ?? 1, opts) : rotateCols(w, l.outFeatures, l.inFeatures, r, o.inner ?? 1, o.outer ?? 1, opts);
}

/** The layer's outputs become y·R (on channels offset …): W ← W·R on the output axis. Returns `w`. */
function rotateOutput<T extends Float32Array | Float64Array>(w: T, l: LinearLayer, r: Rotation, o: AxisOptions): T {
  const opts = { offset: o.offset };
  return l.orientation === 'in-out' ? rotateCols(w, l.inFeatures, l.outFeatures, r, o.inner ?? 1, o.outer ?? 1, opts) : rotateRowsT(w, l.inFeatures, r, o.inner ?? 1, o.outer ?? 1, opts);
}

/** Subtracts the mean of `n` entries data[first + k·stride] from each. */
function centre(data: Float32Array | Float64Array, first: number, n: number, stride: number): void {
  let sum = 0;
  for (let k = 0; k < n; k++) sum += data[first + k * stride];
  const mean = sum / n;
  for (let k = 0; k < n; k++) data[first + k * stride] -= mean;
}

/** W ← W·C on the output axis (C = I − 𝟙𝟙ᵀ/out): every input's row of outputs loses its mean. */
function centreOutput(w: Float32Array | Float64Array, l: LinearLayer): void {
  const [n, m] = [l.inFeatures, l.outFeatures];
  if (l.orientation === 'in-out') for (let i = 0; i < n; i++) centre(w, i * m, m, 1);
  else for (let i = 0; i < n; i++) centre(w, i, m, n);
}

/** β·W (length out) for β on the input axis, in float64. */
function inputTimes(beta: Float64Array, w: Float32Array | Float64Array, l: LinearLayer): Float64Array {
  const [n, m] = [l.inFeatures, l.outFeatures];
  const out = new Float64Array(m);
  if (l.orientation === 'in-out') {
    for (let i = 0; i < n; i++) {
      const bi = beta[i];
      if (bi === 0) continue;
      for (let j = 0; j < m; j++) out[j] += bi * w[i * m + j];
    }
  } else {
    for (let j = 0; j < m; j++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += beta[i] * w[j * n + i];
      out[j] = s;
    }
  }
  return out;
}

/**
 * The bias initializer added to a layer's output: Gemm's C, Attention's input 2, an Add of a
 * constant [out] right after a MatMul, or the bias input of the SkipLayerNormalization /
 * SkipSimplifiedLayerNormalization the output feeds (onnxruntime's optimizer moves it there).
 */
function biasOf(idx: GraphIndex, l: LinearLayer): string | undefined {
  const node = (idx.graph.node ?? [])[l.order ?? -1];
  const constant = (name: string | undefined) => {
    const src = name ? constantSource(idx, name) : undefined;
    return src && src.initializer.name && tensorDims(src.initializer).reduce((a, b) => a * b, 1) === l.outFeatures ? src.initializer.name : undefined;
  };
  if (l.opType === 'Gemm' || l.opType === 'Attention') return constant(node?.input?.[2]);
  const users = (idx.consumers.get(l.outputName ?? '') ?? []).filter((n) => n.opType !== 'Shape');
  if (users.length !== 1) return undefined;
  const u = users[0]!;
  if (u.opType === 'Add') return constant(u.input?.find((x) => x !== l.outputName));
  if (u.opType === 'SkipLayerNormalization' && u.input?.[0] === l.outputName) return constant(u.input?.[4]);
  if (u.opType === 'SkipSimplifiedLayerNormalization' && u.input?.[0] === l.outputName) return constant(u.input?.[3]);
  return undefined;
}

/**
 * Gives a layer without one a bias (a LayerNorm's β·W): Gemm's / Attention's input 2, or an Add
 * after a MatMul. Returns the bias initializer's name: a placeholder its task fills.
 */
function addBias(ed: GraphEditor, idx: GraphIndex, l: LinearLayer, addPlaceholder: (base: string, dims: number[], dataType: number) => string): string {
  const node = nodeOf(idx, l);
  const name = addPlaceholder(`${l.weightName}.bias`, [l.outFeatures], activationType(idx, l));
  if (l.opType === 'Gemm' || l.opType === 'Attention') {
    ed.rewireInput(node, 2, name);
    return name;
  }
  const y = l.outputName ?? '';
  const base = `${l.nodeName || l.name}/bias`;
  if (idx.outputNames.has(y)) {
    // The MatMul writes a graph output (logits): it gets a new output name, the Add the old one.
    const raw = ed.names.fresh(`${base}_input`);
    ed.rewireOutput(node, 0, raw);
    const add = ed.node('Add', [raw, name], `${base}/Add`);
    add.output = [y];
    ed.insertAfterProducer(y, [add]);
    return name;
  }
  const add = ed.node('Add', [y, name], `${base}/Add`);
  ed.insertAfterProducer(y, [add]);
  ed.rewireConsumers(y, add.output![0]!);
  return name;
}

// ---- weight algebra on flat row-major matrices (in place; src/core/hadamard.ts rotateVectors) ---

export interface RotateAxisOptions {
  /** Per-entry scale of the rotated axis applied first: x ← (x ⊙ prescale)·R (inner = 1). */
  prescale?: Float64Array;
  /** First row (rotateRowsT) or column (rotateCols) of the rotated range; default 0. */
  offset?: number;
}

/**
 * W ← Rᵀ·W in place on the row axis k of rows indexed (o, k, i), o < outer, k < R.n, i < inner:
 * out[(o, k′, i), :] = Σ_k R[k, k′]·W[(o, k, i), :]. (outer = inner = 1: Rᵀ·W; inner = 1:
 * (I_outer ⊗ R)ᵀ·W; outer = 1: (R ⊗ I_inner)ᵀ·W.) With `prescale` (inner = 1, one entry per row)
 * the rows are scaled first: W ← Rᵀ·diag(prescale)·W (a folded norm weight); with `offset` the
 * row index starts there (rows before it and after the range are untouched). Returns `w`.
 */
export function rotateRowsT<T extends Float32Array | Float64Array>(w: T, cols: number, r: Rotation, inner: number, outer: number, opts: RotateAxisOptions = {}): T {
  const { prescale, offset = 0 } = opts;
  if (prescale && inner !== 1) throw new Error('internal: a row prescale needs inner = 1');
  // For fixed o the rows (k, i) form an [R.n, inner·cols] block whose columns are the vectors.
  const width = inner * cols;
  for (let o = 0; o < outer; o++) rotateVectors(r, w, { offset: (offset + o * r.n * inner) * cols, stride: width, count: width, step: 1 }, prescale?.subarray(o * r.n, (o + 1) * r.n));
  return w;
}

/**
 * W ← W·R in place on the column axis k of columns indexed (o, k, i) as in rotateRowsT:
 * out[:, (o, k′, i)] = Σ_k W[:, (o, k, i)]·R[k, k′] (outer = inner = 1: W·R), on the columns
 * from `offset`; `prescale` scales each row's entries k first (W ← W·diag(prescale)·R). Returns `w`.
 */
export function rotateCols<T extends Float32Array | Float64Array>(w: T, rows: number, cols: number, r: Rotation, inner: number, outer: number, opts: RotateAxisOptions = {}): T {
  const { prescale, offset = 0 } = opts;
  if (prescale && inner !== 1) throw new Error('internal: a column prescale needs inner = 1');
  for (let o = 0; o < outer; o++) {
    const pre = prescale?.subarray(o * r.n, (o + 1) * r.n);
    for (let i = 0; i < inner; i++) rotateVectors(r, w, { offset: offset + o * r.n * inner + i, stride: inner, count: rows, step: cols }, pre);
  }
  return w;
}
