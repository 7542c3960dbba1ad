// The dense products a compression step may hand to a faster engine outside core (the batched
// PCG solver's float32 GEMMs; src/runtime/ortBackend.ts implements them on onnxruntime). Core's
// own float64 kernels are the WebAssembly ones of ./kernels.ts and need no backend.

export interface MatrixBackend {
  name: string;
  /** Optional float32 product Y (m×n) = A (m×k) · B (k×n), row-major, on a fast (multi-threaded
   *  SGEMM) implementation; the batched PCG solver (pcgBatched.ts) needs it. */
  matmulF32?(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Promise<Float32Array>;
}

/** No fast products: the default (pcg-batched then reports that it needs matmulF32). */
export const jsBackend: MatrixBackend = { name: 'js' };
