// The dense products a compression step may hand to a faster engine outside core: the float32
// GEMMs of the batched OBR solver (./admm.ts, the default when a backend has them) and of the
// batched PCG experiment (./pcgBatched.ts). src/runtime/ortBackend.ts implements them on
// onnxruntime with the job's execution provider. Core's own float64 kernels are the WebAssembly
// ones of ./kernels.ts and need no backend.

export interface MatrixBackend {
  name: string;
  /** Optional float32 product Y (m×n) = A (m×k) · B (k×n), row-major, on a fast (multi-threaded
   *  SGEMM or GPU) implementation; the batched solvers need it. */
  matmulF32?(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Promise<Float32Array>;
  /** Optional float64 product, the same shapes: the batched solver's factorization uses it for the
   *  off-diagonal blocks of L⁻¹ (admm.ts, invertLowerBlocked). */
  matmulF64?(a: Float64Array, b: Float64Array, m: number, k: number, n: number): Promise<Float64Array>;
}

/** No fast products: compressLayer then uses the exact per-row solver (pcg-batched reports that
 *  it needs matmulF32; admm.ts falls back to a plain-JS product when called directly). */
export const jsBackend: MatrixBackend = { name: 'js' };
