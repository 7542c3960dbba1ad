// Owns the worker child process: spawns it lazily, matches replies to requests by id, and turns
// a crash or exit into a failed request (never a silent spinner). The next request gets a fresh
// worker. Only `import type` of vscode here, so the class runs (and is tested) in plain Node.
import { type ChildProcess, fork } from 'node:child_process';
import type { BenchResult, BenchSpec } from '../protocol/bench';
import { withMallocTunables } from '../runtime/mallocTunables';
import type { CompressOptions } from '../protocol/recipes';
import type { CompressionReport, LayerReport } from '../protocol/report';
import type { LayerDetail, ModelInspection } from '../protocol/webview';
import type {
  CompressionEstimate,
  HostToWorker,
  JobSettings,
  LayerDetailRequest,
  ProgressEvent,
  ProviderProbe,
  WorkerResult,
  WorkerToHost,
} from '../protocol/worker';

/** The part of vscode.LogOutputChannel the client writes to. */
export interface WorkerLog {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** The worker process died (crash, kill, out of memory) while a request was pending. */
export class WorkerCrashError extends Error {
  override name = 'WorkerCrashError';
}

/** A request failed inside the worker; `code` is the error class name there (ModelFormatError, AbortError, …). */
export class WorkerRequestError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly workerStack?: string,
  ) {
    super(message);
    this.name = code;
  }
}

export interface JobEvents {
  onProgress?(event: ProgressEvent): void;
  onLayer?(layer: LayerReport): void;
}

/** A running request that can be cancelled (cancel message; kill as last resort). */
export interface RunningJob<T> {
  readonly id: number;
  readonly done: Promise<T>;
  cancel(): void;
}

type Pending = { resolve: (r: WorkerResult) => void; reject: (e: Error) => void; events?: JobEvents; child: ChildProcess };

type KindOf<K extends WorkerResult['kind']> = Extract<WorkerResult, { kind: K }>;

/** Without a reply this long after `cancel`, the worker is killed (the job then fails as cancelled). */
const CANCEL_GRACE_MS = 15_000;

export class WorkerClient {
  private child: ChildProcess | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private disposed = false;

  constructor(
    private readonly workerPath: string,
    private readonly log: WorkerLog,
    private readonly execArgv: string[] = [],
  ) {}

  /** Process id of the current worker, if one runs (tests kill it to simulate a crash). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  get busy(): boolean {
    return this.pending.size > 0;
  }

  async probeProviders(preference: string[]): Promise<ProviderProbe> {
    return (await this.call('probeProviders', (id) => ({ type: 'probeProviders', id, preference }))).probe;
  }

  async estimate(modelPath: string, options: CompressOptions, job: JobSettings = {}): Promise<CompressionEstimate> {
    return (await this.call('estimate', (id) => ({ type: 'estimate', id, modelPath, options, job }))).estimate;
  }

  async inspectModel(modelPath: string): Promise<ModelInspection> {
    return (await this.call('inspectModel', (id) => ({ type: 'inspectModel', id, modelPath }))).model;
  }

  async layerDetail(request: Omit<LayerDetailRequest, 'type' | 'id'>): Promise<LayerDetail> {
    return (await this.call('layerDetail', (id) => ({ ...request, type: 'layerDetail', id }))).detail;
  }

  compress(modelPath: string, options: CompressOptions, events: JobEvents, settings: JobSettings = {}): RunningJob<CompressionReport> {
    const job = this.start('compress', (id) => ({ type: 'compressJob', id, modelPath, options, job: settings }), events);
    return { id: job.id, cancel: job.cancel, done: job.done.then((r) => r.report) };
  }

  sensitivity(reportPath: string, events: JobEvents): RunningJob<Array<{ name: string; perplexity: number }>> {
    const job = this.start('sensitivity', (id) => ({ type: 'sensitivity', id, reportPath }), events);
    return { id: job.id, cancel: job.cancel, done: job.done.then((r) => r.sensitivity) };
  }

  bench(spec: BenchSpec, events: JobEvents): RunningJob<BenchResult> {
    const job = this.start('bench', (id) => ({ type: 'bench', id, spec }), events);
    return { id: job.id, cancel: job.cancel, done: job.done.then((r) => r.bench) };
  }

  private async call<K extends WorkerResult['kind']>(kind: K, make: (id: number) => HostToWorker): Promise<KindOf<K>> {
    return this.start(kind, make).done;
  }

  private start<K extends WorkerResult['kind']>(kind: K, make: (id: number) => HostToWorker, events?: JobEvents): RunningJob<KindOf<K>> {
    if (this.disposed) throw new Error('OBR Studio is shutting down');
    const child = this.ensureWorker();
    const id = this.nextId++;
    const done = new Promise<WorkerResult>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, events, child });
      child.send(make(id));
    }).then((r) => {
      if (r.kind !== kind) throw new Error(`the worker answered ${r.kind} to a ${kind} request`);
      return r as KindOf<K>;
    });
    const cancel = (): void => {
      if (!this.pending.has(id)) return;
      if (child.connected) child.send({ type: 'cancel', id } satisfies HostToWorker);
      const timer = setTimeout(() => {
        const p = this.pending.get(id);
        if (!p) return;
        this.log.warn(`the worker did not stop within ${CANCEL_GRACE_MS / 1000} s of cancel; terminating it`);
        this.pending.delete(id);
        p.reject(new WorkerRequestError('AbortError', 'cancelled (the worker was terminated)'));
        child.kill('SIGKILL');
      }, CANCEL_GRACE_MS);
      timer.unref?.();
      void done.then(
        () => clearTimeout(timer),
        () => clearTimeout(timer),
      );
    };
    return { id, done, cancel };
  }

  private ensureWorker(): ChildProcess {
    if (this.child && this.child.connected && this.child.exitCode === null && this.child.signalCode === null) return this.child;
    const child = fork(this.workerPath, [], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      serialization: 'advanced',
      execArgv: this.execArgv,
      // glibc's malloc settings are read at process start: the worker gets them in its environment
      // (cheap onnxruntime session opening, src/runtime/mallocTunables.ts; OBR_MALLOC_TUNING=0 opts out).
      env: withMallocTunables(process.env),
    });
    this.log.info(`started worker pid ${child.pid}`);
    child.stdout?.on('data', (d: Buffer) => this.log.info(d.toString().trimEnd()));
    child.stderr?.on('data', (d: Buffer) => this.log.warn(d.toString().trimEnd()));
    child.on('message', (m) => this.onMessage(m as WorkerToHost));
    child.on('error', (e) => this.log.error(`worker process error: ${e.message}`));
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      const why = signal
        ? `was killed (${signal}${signal === 'SIGKILL' ? ', possibly out of memory' : ''})`
        : `exited with code ${code}${code === 134 ? ' (out of memory?)' : ''}`;
      if (!this.disposed) this.log[code === 0 && !signal ? 'info' : 'error'](`worker pid ${child.pid} ${why}`);
      for (const [id, p] of this.pending) {
        if (p.child !== child) continue;
        this.pending.delete(id);
        p.reject(new WorkerCrashError(`the OBR worker ${why}; the next job starts a fresh worker. See the OBR Studio log.`));
      }
    });
    this.child = child;
    return child;
  }

  private onMessage(message: WorkerToHost): void {
    switch (message.type) {
      case 'log':
        this.log[message.level](message.message);
        return;
      case 'progress':
        this.pending.get(message.id)?.events?.onProgress?.(message.event);
        return;
      case 'layer':
        this.pending.get(message.id)?.events?.onLayer?.(message.layer);
        return;
      case 'result': {
        const p = this.pending.get(message.id);
        if (!p) return;
        this.pending.delete(message.id);
        if ('ok' in message) p.resolve(message.ok);
        else p.reject(new WorkerRequestError(message.err.code, message.err.message, message.err.stack));
        return;
      }
      default: {
        const never: never = message;
        this.log.error(`unknown worker message ${JSON.stringify(never)}`);
      }
    }
  }

  dispose(): void {
    this.disposed = true;
    const child = this.child;
    this.child = undefined;
    child?.kill();
  }
}
