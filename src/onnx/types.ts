// Shared shapes of the ONNX layer's answers, used by the pipeline, the CLI and the extension.
import type { LayerRole } from '../protocol/report';

/** Element types of weights we read and write. */
export type WeightDtype = 'float32' | 'float16' | 'bfloat16';

/**
 * A linear layer: a MatMul/Gemm whose weight is a constant initializer, possibly reached through
 * Transpose/Cast/DequantizeLinear. Shapes are given in the math convention W ∈ R^{out×in}
 * (rows = output channels) whatever the storage orientation.
 */
export interface LinearLayer {
  /** Stable id: the MatMul/Gemm node name (or its first output when unnamed). */
  name: string;
  nodeName: string;
  /** `Attention`: onnxruntime's fused attention op holding a packed [in, 3·out] q/k/v weight (input 1). */
  opType: 'MatMul' | 'Gemm' | 'Attention';
  /** The initializer holding the weight values. */
  weightName: string;
  /** Storage orientation of the initializer: `in-out` = [in, out] (MatMul), `out-in` = [out, in]. */
  orientation: 'in-out' | 'out-in';
  dtype: WeightDtype;
  /** Input channels n (columns of W). */
  inFeatures: number;
  /** Output channels m (rows of W). */
  outFeatures: number;
  /** The activation tensor feeding the layer: layers with the same input share a Hessian. */
  inputName: string;
  /** Decoder block index, or null for layers outside the blocks (lm_head). */
  block: number | null;
  role: LayerRole;
  // ---- set by findLinearLayers (optional so hand-made layers in tests stay valid) ----
  /** The layer's output tensor. */
  outputName?: string;
  /** Position of the node in graph.node (topological order). */
  order?: number;
  /** Ops between the initializer and the MatMul/Gemm, initializer side first (e.g. ['Cast']). */
  weightPath?: string[];
  /** Element type as stored (differs from dtype behind DequantizeLinear, e.g. 'int8'). */
  storedDtype?: string;
  /** The weight initializer also feeds other nodes (e.g. a tied embedding Gather). */
  weightShared?: boolean;
  /** Bias initializer (Gemm C), if any. */
  biasName?: string;
  /** How `role` was found: graph topology, the node/weight name, or neither. */
  roleSource?: 'topology' | 'name' | 'none';
  /** For a fused `qkv` layer: which output rows (in the [out, in] convention) are q, k and v. */
  parts?: Array<{ role: 'q' | 'k' | 'v'; rows: [number, number] }>;
}

/** Layers that read the same activation (and therefore share one Hessian XᵀX). */
export interface LayerGroup {
  inputName: string;
  /** Input channels n of the shared activation. */
  inFeatures: number;
  block: number | null;
  /** Layer names (LinearLayer.name), in graph order. */
  layers: string[];
}

/**
 * Attention geometry given from outside the graph (CLI flags, config.json / genai_config.json),
 * each field optional; see findDecoder for the order in which sources are used.
 */
export interface AttentionGeometry {
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  /** Where it came from, for error messages ("--heads/--kv-heads/--head-dim", "config.json"). */
  source?: string;
}
