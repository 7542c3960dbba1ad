// Worker entry: a child process forked by the extension host (never the host thread itself).
// It receives HostToWorker messages on the IPC channel, runs the job and posts WorkerToHost
// messages. A crash or out-of-memory kills only this process; the host reports it.
import { dirname, isAbsolute, resolve } from 'node:path';
import type { LayerDetailRequest, CompressionEstimate, HostToWorker, JobSettings, WorkerError, WorkerResult, WorkerToHost } from '../protocol/worker';
import type { CompressOptions } from '../protocol/recipes';
import { parseSparsity } from '../protocol/recipes';
import type { ModelInspection } from '../protocol/webview';
import { probeProviders } from '../runtime/probe';
import { handleBenchRequest } from './bench';
import { summarizeLayer, weightStats } from './layerDetail';
import { computeSensitivity, estimateCompression, findLinearLayers, loadModel, packedQuantization, runCompression } from './pipelineBridge';

function post(message: WorkerToHost): void {
  process.send?.(message);
}

function toWorkerError(e: unknown): WorkerError {
  if (e instanceof Error) {
    // DOMException('AbortError') and errors thrown after signal.abort() both read as cancellation.
    const code = e.name === 'AbortError' || (e as { code?: string }).code === 'ABORT_ERR' ? 'AbortError' : e.name;
    return { code, message: e.message, stack: e.stack };
  }
  return { code: 'Error', message: String(e) };
}

const running = new Map<number, AbortController>();

async function reply(id: number, work: () => Promise<WorkerResult>): Promise<void> {
  try {
    post({ type: 'result', id, ok: await work() });
  } catch (e) {
    post({ type: 'result', id, err: toWorkerError(e) });
  }
}

async function handle(message: HostToWorker): Promise<void> {
  switch (message.type) {
    case 'probeProviders':
      return reply(message.id, async () => ({ kind: 'probeProviders', probe: await probeProviders(message.preference) }));
    case 'compress':
    case 'compressJob': {
      const abort = new AbortController();
      running.set(message.id, abort);
      const id = message.id;
      const job = message.type === 'compressJob' ? message.job : {};
      try {
        await reply(id, async () => {
          const report = await runCompression(
            message.modelPath,
            message.options,
            {
              signal: abort.signal,
              onProgress: (event) => post({ type: 'progress', id, event }),
              onLayer: (layer) => post({ type: 'layer', id, layer }),
              log: (level, text) => post({ type: 'log', level: level === 'debug' ? 'info' : level, message: text }),
            },
            job,
          );
          return { kind: 'compress', report };
        });
      } finally {
        running.delete(id);
      }
      return;
    }
    case 'cancel':
      running.get(message.id)?.abort();
      return;
    case 'estimate':
      return reply(message.id, async () => ({ kind: 'estimate', estimate: await estimate(message.modelPath, message.options, message.job) }));
    case 'inspectModel':
      return reply(message.id, async () => ({ kind: 'inspectModel', model: await inspectModel(message.modelPath) }));
    case 'layerDetail':
      return reply(message.id, async () => ({ kind: 'layerDetail', detail: await layerDetail(message) }));
    case 'sensitivity': {
      const abort = new AbortController();
      running.set(message.id, abort);
      const id = message.id;
      try {
        await reply(id, async () => ({
          kind: 'sensitivity',
          sensitivity: await computeSensitivity(message.reportPath, {
            signal: abort.signal,
            onProgress: (event) => post({ type: 'progress', id, event }),
            log: (level, text) => post({ type: 'log', level: level === 'debug' ? 'info' : level, message: text }),
          }),
        }));
      } finally {
        running.delete(id);
      }
      return;
    }
    case 'bench':
      return handleBenchRequest(message, { post, running, reply });
    default: {
      const never: never = message;
      post({ type: 'log', level: 'error', message: `unknown message ${JSON.stringify(never)}` });
    }
  }
}

/** The pipeline's own estimate when it has one; otherwise a rough one from the layer shapes. */
async function estimate(modelPath: string, options: CompressOptions, job: JobSettings = {}): Promise<CompressionEstimate> {
  const fromPipeline = await estimateCompression(modelPath, options, job);
  if (fromPipeline) return fromPipeline;
  const model = await loadModel(modelPath);
  try {
    const layers = findLinearLayers(model);
    let params = 0;
    let cubic = 0;
    for (const l of layers) {
      params += l.inFeatures * l.outFeatures;
      cubic += l.inFeatures ** 3 + l.outFeatures * l.inFeatures ** 2;
    }
    // ~1 GFLOP/s for the JavaScript solves (docs/environment.md) plus calibration forward passes.
    const seconds = cubic / 1e9 + (params * 2 * options.samples * (options.seqlen ?? 128)) / 30e9;
    return {
      layers: layers.length,
      params,
      seconds,
      peakBytes: model.weightBytes * 2 + Math.max(0, ...layers.map((l) => l.inFeatures ** 2 * 8 * 2)),
      outputBytes: model.fileBytes + params / 2,
      notes: ['rough estimate from the layer shapes'],
    };
  } finally {
    await model.close();
  }
}

async function inspectModel(modelPath: string): Promise<ModelInspection> {
  const model = await loadModel(modelPath);
  try {
    const layers = findLinearLayers(model);
    const out: ModelInspection = { path: model.path, fileBytes: model.fileBytes, weightBytes: model.weightBytes, linearParams: 0, layers: [] };
    for (const l of layers) {
      const stats = weightStats(await model.readWeight(l.weightName, { allowNonFinite: true }));
      out.linearParams += l.inFeatures * l.outFeatures;
      out.layers.push({ name: l.name, block: l.block, role: l.role, rows: l.outFeatures, cols: l.inFeatures, dtype: l.dtype, ...stats });
    }
    return out;
  } finally {
    await model.close();
  }
}

async function layerDetail(request: LayerDetailRequest) {
  const path = isAbsolute(request.modelPath) ? request.modelPath : resolve(dirname(request.modelPath), request.modelPath);
  const model = await loadModel(path);
  try {
    const layers = findLinearLayers(model);
    const layer = layers.find((l) => l.name === request.layer) ?? layers.find((l) => l.nodeName === request.layer || l.weightName === request.layer);
    if (!layer) throw Object.assign(new Error(`layer "${request.layer}" is not a linear layer of ${path}`), { name: 'LayerNotFoundError' });
    const values = await model.readWeight(layer.weightName, { allowNonFinite: true });
    let nm: { n: number; m: number } | undefined;
    try {
      const s = request.sparsity ? parseSparsity(request.sparsity) : undefined;
      if (s?.kind === 'nm') nm = { n: s.n, m: s.m };
    } catch {
      nm = undefined;
    }
    // With groups the scales live in the packed model only (the report keeps per-row scales).
    const groupSize = request.groupSize ?? 0;
    let quantization: Awaited<ReturnType<typeof packedQuantization>>;
    if (groupSize > 0 && request.packedPath) {
      const packedPath = isAbsolute(request.packedPath) ? request.packedPath : resolve(dirname(path), request.packedPath);
      quantization = await packedQuantization(packedPath, layer.name, request.asymmetric ?? false).catch(() => undefined);
    }
    return summarizeLayer(
      { values, rows: layer.outFeatures, cols: layer.inFeatures, orientation: layer.orientation },
      {
        name: layer.name,
        gridRows: request.gridRows,
        gridCols: request.gridCols,
        wbits: request.wbits,
        row: request.row,
        rowScales: request.rowScales,
        rowZeros: request.rowZeros,
        groupSize,
        asymmetric: request.asymmetric,
        quantization,
        nm,
      },
    );
  } finally {
    await model.close();
  }
}

if (!process.send) {
  console.error('dist/worker.js is started by OBR Studio over an IPC channel; use dist/cli.js from a shell.');
  process.exit(2);
}
process.on('message', (m) => void handle(m as HostToWorker));
process.on('disconnect', () => process.exit(0));
