// Runtime measurements in a fresh child process, one per model variant, so that session load time
// is not helped by an earlier session and peak memory (the child's maxRSS) belongs to that variant
// alone — inside the benchmarking process, memory freed by earlier compressions is reused by the
// allocator and the peak says nothing. The child is `node -e PROBE_SOURCE CONFIG_JSON`: plain
// CommonJS that needs only onnxruntime-node (resolved by the parent and passed as a path), so it
// works the same from the sources (tsx), the CLI bundle and the worker bundle.
import { spawn } from 'node:child_process';
import { AbortError } from '../cancel';

export interface ProbeConfig {
  /** Absolute path of onnxruntime-node's entry (require.resolve in the parent). */
  ortPath: string;
  modelPath: string;
  pastModelPath?: string;
  /** Execution providers to try in order (already filtered for the platform; CPU last). */
  providers: string[];
  threads?: number;
  prompt: number[];
  decodeTokens: number;
  warmup: number;
  reps: number;
}

export interface ProbeOutput {
  used: string;
  tried: Array<{ name: string; error?: string }>;
  loadMs: number[];
  prefillMs: number[];
  /** Per rep: milliseconds per decoded token. */
  decodeMsPerToken: number[];
  generated: number;
  finalPastLength: number;
  cacheConsistencyMaxAbs?: number;
  /** RSS of the child before loading anything, and its peak (process.resourceUsage().maxRSS). */
  baseRssBytes: number;
  peakRssBytes: number;
}

// Plain JavaScript (no TypeScript syntax): it runs as `node -e`.
export const PROBE_SOURCE = String.raw`
const cfg = JSON.parse(process.argv[process.argv.length - 1]);
const ort = require(cfg.ortPath);
const baseRssBytes = process.memoryUsage.rss();
const tried = [];
async function open(p) {
  for (const name of cfg.providers) {
    try {
      const o = { executionProviders: [name], logSeverityLevel: 3, graphOptimizationLevel: 'all' };
      if (cfg.threads) o.intraOpNumThreads = cfg.threads;
      const s = await ort.InferenceSession.create(p, o);
      if (!tried.some((t) => t.name === name)) tried.push({ name });
      return { s, used: name };
    } catch (e) {
      if (!tried.some((t) => t.name === name)) tried.push({ name, error: String((e && e.message) || e).split('\n')[0].slice(0, 300) });
    }
  }
  throw new Error('no execution provider could load ' + p + ': ' + tried.map((t) => t.name + ': ' + t.error).join('; '));
}
function intTensor(meta, values, dims) {
  if (meta && meta.type === 'int32') return new ort.Tensor('int32', Int32Array.from(values), dims);
  const a = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) a[i] = BigInt(values[i]);
  return new ort.Tensor('int64', a, dims);
}
function feeds(s, ids, past, cache) {
  const meta = new Map((s.inputMetadata || []).map((m) => [m.name, m]));
  const n = ids.length, f = {};
  for (const name of s.inputNames) {
    if (name === 'input_ids') f[name] = intTensor(meta.get(name), ids, [1, n]);
    else if (name === 'attention_mask') f[name] = intTensor(meta.get(name), new Array(past + n).fill(1), [1, past + n]);
    else if (name === 'position_ids') f[name] = intTensor(meta.get(name), Array.from({ length: n }, (_, i) => past + i), [1, n]);
    else if (name === 'use_cache_branch') f[name] = new ort.Tensor('bool', Uint8Array.from([past > 0 ? 1 : 0]), [1]);
    else if (cache && cache.has(name)) f[name] = cache.get(name);
    else {
      const m = meta.get(name), shape = (m && m.shape) || [];
      if (shape.length !== 4 || typeof shape[1] !== 'number' || typeof shape[3] !== 'number') throw new Error('cannot feed "' + name + '" (shape [' + shape.join(', ') + '])');
      const half = m && m.type === 'float16';
      f[name] = new ort.Tensor(half ? 'float16' : 'float32', half ? new Uint16Array(0) : new Float32Array(0), [1, shape[1], 0, shape[3]]);
    }
  }
  return f;
}
function halfToFloat(h) {
  const e = (h >> 10) & 0x1f, m = h & 0x3ff, sign = h & 0x8000 ? -1 : 1;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}
// The last position's logits as numbers (fp16 models give raw 16-bit patterns in t.data).
function lastRow(t) {
  const vocab = t.dims[t.dims.length - 1], d = t.data;
  const row = d.subarray(d.length - vocab);
  return t.type === 'float16' ? Float32Array.from(row, halfToFloat) : Float32Array.from(row);
}
function argmax(row) { let b = 0; for (let v = 1; v < row.length; v++) if (row[v] > row[b]) b = v; return b; }
const present = (n) => n.replace(/^past_key_values\./, 'present.').replace(/^past\./, 'present.');
(async () => {
  const out = { tried, loadMs: [], prefillMs: [], decodeMsPerToken: [], generated: 0, finalPastLength: 0, baseRssBytes };
  for (let i = 0; i < cfg.warmup + cfg.reps; i++) {
    const t = performance.now();
    const o = await open(cfg.modelPath);
    const ms = performance.now() - t;
    out.used = o.used;
    await o.s.release();
    if (i >= cfg.warmup) out.loadMs.push(ms);
  }
  const plain = (await open(cfg.modelPath)).s;
  for (let i = 0; i < cfg.warmup + cfg.reps; i++) {
    const t = performance.now();
    const r = await plain.run(feeds(plain, cfg.prompt, 0), ['logits']);
    const ms = performance.now() - t;
    r.logits.dispose && r.logits.dispose();
    if (i >= cfg.warmup) out.prefillMs.push(ms);
  }
  if (cfg.pastModelPath) {
    const s = (await open(cfg.pastModelPath)).s;
    const pastInputs = s.inputNames.filter((n) => !['input_ids', 'attention_mask', 'position_ids', 'use_cache_branch'].includes(n));
    const outputs = ['logits', ...pastInputs.map(present)];
    for (const o of outputs) if (!s.outputNames.includes(o)) throw new Error('the KV-cache model has no output "' + o + '"');
    let tokens = [], last;
    for (let i = 0; i < cfg.warmup + cfg.reps; i++) {
      let r = await s.run(feeds(s, cfg.prompt, 0), outputs);
      let past = cfg.prompt.length, next = argmax(lastRow(r.logits));
      tokens = [];
      const t = performance.now();
      for (let step = 0; step < cfg.decodeTokens; step++) {
        tokens.push(next);
        const cache = new Map(pastInputs.map((n) => [n, r[present(n)]]));
        r = await s.run(feeds(s, [next], past, cache), outputs);
        past += 1;
        last = lastRow(r.logits);
        next = argmax(last);
      }
      const ms = performance.now() - t;
      if (i >= cfg.warmup) out.decodeMsPerToken.push(ms / Math.max(1, cfg.decodeTokens));
      out.generated = tokens.length;
      out.finalPastLength = past;
    }
    if (last && tokens.length) {
      // The cached last step must give the logits a full forward over the same tokens gives.
      const full = await plain.run(feeds(plain, [...cfg.prompt, ...tokens], 0), ['logits']);
      const ref = lastRow(full.logits);
      let m = 0;
      for (let v = 0; v < ref.length; v++) m = Math.max(m, Math.abs(ref[v] - last[v]));
      out.cacheConsistencyMaxAbs = m;
    }
    await s.release();
  }
  await plain.release();
  out.peakRssBytes = process.resourceUsage().maxRSS * 1024;
  process.stdout.write('\n' + JSON.stringify(out) + '\n');
})().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + '\n');
  process.exit(1);
});
`;

/** Runs the probe in a child process; rejects with its stderr on failure, AbortError on abort. */
export function runRuntimeProbe(config: ProbeConfig, signal?: AbortSignal): Promise<ProbeOutput> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new AbortError());
    const child = spawn(process.execPath, ['-e', PROBE_SOURCE, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const onAbort = () => child.kill('SIGKILL');
    signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, sig) => {
      signal?.removeEventListener('abort', onAbort);
      if (signal?.aborted) return reject(new AbortError());
      const line = stdout.trim().split('\n').pop() ?? '';
      if (code !== 0 || !line.startsWith('{')) {
        return reject(new Error(`runtime measurement of ${config.modelPath} failed (${sig ?? `exit ${code}`}): ${stderr.trim().split('\n').slice(-3).join(' | ') || 'no output'}`));
      }
      resolve(JSON.parse(line) as ProbeOutput);
    });
  });
}
