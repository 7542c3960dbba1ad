// A hand-made BenchResult covering every suite (no measurements), for renderer and chart tests.
import { BENCH_SCHEMA_VERSION, DEFAULT_BENCH_SPEC, type BenchResult, type Stat } from '../../../src/protocol/bench';

export function stat(median: number): Stat {
  return { median, mean: median, min: median * 0.9, max: median * 1.1, stdev: median * 0.05, iqr: median * 0.1, n: 3, samples: [median * 0.9, median, median * 1.1] };
}

export function sampleResult(): BenchResult {
  const run = (recipe: 'obr-gptq' | 'sparsegpt-gptq', ppl: number) => ({
    recipe,
    wbits: 4,
    sparsity: '0.5',
    abits: 16,
    kvbits: 16,
    measuredSparsity: 0.5,
    meanRelativeLoss: 0.01,
    perplexity: { perplexity: ppl, nll: Math.log(ppl), windows: 4, seqlen: 64 },
    seconds: { endToEnd: stat(10), calibrate: 2, compress: 7, write: 0.5, perLayer: stat(0.3), perRole: { q: 0.2, down: 0.5 } },
    memory: { peakRssBytes: 3e8, baseRssBytes: 2e8, method: 'vmhwm' as const },
    executionProvider: 'cpu',
    layers: 28,
    warnings: [],
  });
  const variant = (label: 'dense' | 'packed', bytes: number, ms: number) => ({
    label,
    modelPath: `/m/${label}.onnx`,
    pastModelPath: `/m/${label}_with_past.onnx`,
    fileBytes: bytes,
    pastFileBytes: bytes + 100,
    ops: (label === 'dense' ? { MatMul: 37 } : { MatMul: 9, MatMulNBits: 28 }) as Record<string, number>,
    loadMs: stat(100),
    prefillMs: stat(ms),
    prefillTokensPerSecond: 1000,
    decodeMsPerToken: stat(ms / 10),
    decodeTokensPerSecond: 10000 / ms,
    decodeCheck: { generated: 8, finalPastLength: 24 },
    cacheConsistencyMaxAbs: 1e-6,
    memory: { peakRssBytes: 3e8, baseRssBytes: 2e8, method: 'vmhwm' as const },
    executionProvider: 'cpu',
  });
  return {
    schemaVersion: BENCH_SCHEMA_VERSION,
    tool: { name: 'obr-studio', version: '0.1.0' },
    createdAt: '2026-11-24T05:00:00.000Z',
    spec: { ...DEFAULT_BENCH_SPEC, modelPath: '/m/model.onnx', command: 'obr bench /m/model.onnx' },
    model: { path: '/m/model.onnx', bytes: 5_000_000, sha256: 'ab'.repeat(32), config: { hidden_size: 128, num_hidden_layers: 4, vocab_size: 2048 }, label: 'tiny' },
    machine: {
      cpuModel: 'Test CPU',
      cores: 2,
      memoryBytes: 8 * 2 ** 30,
      platform: 'linux',
      arch: 'x64',
      osRelease: '6',
      node: 'v20',
      onnxruntime: '1.30.0',
      executionProvider: 'cpu',
      loadAverageStart: [1, 1, 1],
      loadAverageEnd: [1, 1, 1],
    },
    quality: { dense: { perplexity: 20, nll: Math.log(20), windows: 4, seqlen: 64 }, runs: [run('obr-gptq', 24), run('sparsegpt-gptq', 26)], obrVsSparseGpt: [{ wbits: 4, ratio: 24 / 26 }], evalText: 't.txt', calibText: 'c.txt' },
    speed: { runs: [run('obr-gptq', 24), run('sparsegpt-gptq', 26)], compressReps: 1 },
    runtime: {
      recipe: 'obr-gptq',
      wbits: 4,
      sparsity: '0.5',
      promptTokens: 16,
      decodeTokens: 8,
      dense: variant('dense', 5_000_000, 20),
      packed: variant('packed', 2_500_000, 25),
      ratios: { size: 0.5, load: 1, prefill: 0.8, decode: 0.8 },
      sparseStorage: {
        params: 1000,
        nonzeros: 500,
        wbits: 4,
        denseFp32Bytes: 4000,
        denseIntBytes: 500,
        bitmapBytes: 375,
        twoFourBytes: 375,
        csrBytes: 1250,
        restBytes: 1000,
        modelBytesBitmap: 1375,
        modelBytesTwoFour: 1375,
      },
      packedVsSimulatedMaxAbs: 1e-5,
      sparsityNote: 'dense kernels',
    },
    core: { sizes: [64], points: [{ method: 'obr-gptq', rows: 64, cols: 64, seconds: stat(0.1), gflops: 0.5, relativeLoss: 0.01 }], flopModel: 'nominal' },
    seconds: { total: 60 },
    warnings: ['a warning'],
    notes: ['a note'],
    outputs: { dir: '/m/benchmarks', json: '/m/benchmarks/b.json', markdown: '/m/benchmarks/b.md', history: '/m/benchmarks/history.jsonl' },
  };
}
