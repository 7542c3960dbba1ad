// A MatrixBackend whose float32 products run on onnxruntime's MatMul, on the first execution
// provider of the job's preference that loads (CUDA, DirectML, CoreML, WebGPU; CPU otherwise:
// multi-threaded blocked SGEMM), for the batched OBR compensation (src/core/admm.ts; also the
// older src/core/pcgBatched.ts). src/core never imports onnxruntime; this backend is injected
// through compressLayer(..., { backend }).
import * as ort from 'onnxruntime-node';
import type { MatrixBackend } from '../core/backend';
import { DataType, encodeModel, onnx } from '../onnx/proto';
import { createSessionWithFallback } from './providers';

function matmulModel(elemType: number = DataType.FLOAT): Uint8Array {
  const vi = (name: string, dims: string[]): onnx.IValueInfoProto => ({
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => ({ dimParam: d })) } } },
  });
  return encodeModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    producerName: 'obr-studio',
    graph: {
      name: 'matmul',
      node: [{ opType: 'MatMul', input: ['A', 'B'], output: ['Y'], name: 'mm' }],
      input: [vi('A', ['m', 'k']), vi('B', ['k', 'n'])],
      output: [vi('Y', ['m', 'n'])],
    },
  });
}

export interface OrtBackendOptions {
  /** intra-op threads (default 2). */
  threads?: number;
  /** Execution providers in order of preference (default CPU); CPU is always the last resort. */
  executionProviders?: readonly string[];
}

export interface OrtMatrixBackend extends MatrixBackend {
  /** The execution provider the products run on, and why the preferred ones did not load. */
  provider: { used: string; tried: Array<{ name: string; error?: string }> };
  release(): Promise<void>;
}

/** A MatrixBackend with float32 MatMul on onnxruntime. Call release() when done. */
export async function createOrtBackend(options: OrtBackendOptions = {}): Promise<OrtMatrixBackend> {
  // The intra-op threads do not spin-wait after a product: between two products the solver's own
  // pass runs on the main thread, and on a busy machine spinning threads took the cores from it
  // and stalled the next product's barrier (2048³ at load average 18: 1.1–1.5 s without
  // spinning against 1.3–2.4 s with it, in turn in one process); one product is tens of ms or more,
  // so the wake-up costs nothing measurable.
  // No CPU memory arena: the arena keeps the high-water mark of the products' outputs (the n×n
  // float32 inverse, 127 MB at 5632 columns, and the factorization's float64 blocks) for the
  // session's life, while each output is copied into JavaScript memory anyway; without it the
  // output's buffer is freed once copied (issue #12, the solver's memory).
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    intraOpNumThreads: options.threads ?? 2,
    interOpNumThreads: 1,
    enableCpuMemArena: false,
    graphOptimizationLevel: 'all',
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
  const { session, used, tried } = await createSessionWithFallback(matmulModel(), options.executionProviders ?? ['cpu'], sessionOptions);
  // Float64 products (the factorization's blocks) on the CPU provider: GPU providers have no
  // double MatMul, and these are a few n³ per layer.
  const session64 = await ort.InferenceSession.create(matmulModel(DataType.DOUBLE), sessionOptions);
  let chain: Promise<unknown> = Promise.resolve();
  const product = <T extends Float32Array | Float64Array>(s: ort.InferenceSession, type: 'float32' | 'float64', a: T, b: T, m: number, k: number, n: number): Promise<T> => {
    if (a.length < m * k || b.length < k * n) throw new Error(`matmul (${type}): operands too short for ${m}×${k}·${k}×${n}`);
    // One run at a time: the session's thread pool is the parallelism.
    const run = chain.then(async () => {
      if (m === 0 || n === 0) return (type === 'float32' ? new Float32Array(m * n) : new Float64Array(m * n)) as T;
      if (k === 0) return (type === 'float32' ? new Float32Array(m * n) : new Float64Array(m * n)) as T;
      const out = await s.run({
        A: new ort.Tensor(type, a.length === m * k ? a : a.subarray(0, m * k), [m, k]),
        B: new ort.Tensor(type, b.length === k * n ? b : b.subarray(0, k * n), [k, n]),
      });
      const y = out.Y.data as T;
      out.Y.dispose?.();
      return y;
    });
    // The chain waits for this run but does not hold its result: the caller may drop the product
    // (an n×n inverse, 127 MB at 5632 columns) long before the next product settles the chain.
    chain = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  };
  return {
    name: `ort-${used}`,
    provider: { used, tried },
    matmulF32: (a, b, m, k, n) => product(session, 'float32', a, b, m, k, n),
    matmulF64: (a, b, m, k, n) => product(session64, 'float64', a, b, m, k, n),
    release: async () => {
      await session.release();
      await session64.release();
    },
  };
}
