// The few dense kernels a compression step may hand to a faster implementation (a WebAssembly
// SIMD kernel, or a runtime backend outside core). Core ships the plain-JS one.
import { gemmAccumulate } from './matrix';

export interface MatrixBackend {
  name: string;
  /** C (m×n) += A (m×k) · B (k×n), row-major; zero entries of A may be skipped. */
  gemmAccumulate(a: Float64Array, b: Float64Array, c: Float64Array, m: number, k: number, n: number): void;
  /** Optional float32 product Y (m×n) = A (m×k) · B (k×n), row-major, on a fast (multi-threaded
   *  SGEMM) implementation; the batched PCG solver (pcgBatched.ts) needs it. */
  matmulF32?(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Promise<Float32Array>;
}

export const jsBackend: MatrixBackend = {
  name: 'js',
  gemmAccumulate: (a, b, c, m, k, n) => gemmAccumulate(a, b, c, m, k, n),
};
