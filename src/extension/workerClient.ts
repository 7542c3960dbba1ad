// Owns the worker child process: spawns it lazily, matches replies to requests by id, and turns
// a crash or exit into a failed request (never a silent spinner). The next request gets a fresh
// worker.
import { type ChildProcess, fork } from 'node:child_process';
import type * as vscode from 'vscode';
import type { HostToWorker, ProviderProbe, WorkerResult, WorkerToHost } from '../protocol/worker';

type Pending = { resolve: (r: WorkerResult) => void; reject: (e: Error) => void };

export class WorkerCrashError extends Error {
  override name = 'WorkerCrashError';
}

export class WorkerClient implements vscode.Disposable {
  private child: ChildProcess | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  constructor(
    private readonly workerPath: string,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  async probeProviders(preference: string[]): Promise<ProviderProbe> {
    const result = await this.request((id) => ({ type: 'probeProviders', id, preference }));
    if (result.kind !== 'probeProviders') throw new Error(`unexpected reply ${result.kind}`);
    return result.probe;
  }

  private request(make: (id: number) => HostToWorker): Promise<WorkerResult> {
    const child = this.ensureWorker();
    const id = this.nextId++;
    return new Promise<WorkerResult>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      child.send(make(id));
    });
  }

  private ensureWorker(): ChildProcess {
    if (this.child && this.child.connected) return this.child;
    const child = fork(this.workerPath, [], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], serialization: 'advanced' });
    child.stdout?.on('data', (d: Buffer) => this.log.info(d.toString().trimEnd()));
    child.stderr?.on('data', (d: Buffer) => this.log.warn(d.toString().trimEnd()));
    child.on('message', (m) => this.onMessage(m as WorkerToHost));
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      const why = signal ? `was killed (${signal}${signal === 'SIGKILL' ? ', possibly out of memory' : ''})` : `exited with code ${code}`;
      for (const [id, p] of this.pending) {
        p.reject(new WorkerCrashError(`the OBR worker ${why}; see the OBR Studio log`));
        this.pending.delete(id);
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
      case 'layer':
        return;
      case 'result': {
        const p = this.pending.get(message.id);
        if (!p) return;
        this.pending.delete(message.id);
        if ('ok' in message) p.resolve(message.ok);
        else p.reject(Object.assign(new Error(message.err.message), { name: message.err.code }));
        return;
      }
      default: {
        const never: never = message;
        this.log.error(`unknown worker message ${JSON.stringify(never)}`);
      }
    }
  }

  dispose(): void {
    this.child?.kill();
    this.child = undefined;
  }
}
