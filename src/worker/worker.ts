// Worker entry: a child process forked by the extension host (never the host thread itself).
// It receives HostToWorker messages on the IPC channel, runs the job and posts WorkerToHost
// messages. A crash or out-of-memory kills only this process; the host reports it.
import type { HostToWorker, WorkerError, WorkerToHost } from '../protocol/worker';
import { probeProviders } from '../runtime/probe';

function post(message: WorkerToHost): void {
  process.send?.(message);
}

function toWorkerError(e: unknown): WorkerError {
  if (e instanceof Error) return { code: e.name, message: e.message, stack: e.stack };
  return { code: 'Error', message: String(e) };
}

const running = new Map<number, AbortController>();

async function handle(message: HostToWorker): Promise<void> {
  switch (message.type) {
    case 'probeProviders': {
      try {
        const probe = await probeProviders(message.preference);
        post({ type: 'result', id: message.id, ok: { kind: 'probeProviders', probe } });
      } catch (e) {
        post({ type: 'result', id: message.id, err: toWorkerError(e) });
      }
      return;
    }
    case 'compress': {
      const abort = new AbortController();
      running.set(message.id, abort);
      try {
        post({
          type: 'result',
          id: message.id,
          err: { code: 'NotAvailable', message: 'compression is not available in this build yet' },
        });
      } finally {
        running.delete(message.id);
      }
      return;
    }
    case 'cancel':
      running.get(message.id)?.abort();
      return;
    default: {
      const never: never = message;
      post({ type: 'log', level: 'error', message: `unknown message ${JSON.stringify(never)}` });
    }
  }
}

if (!process.send) {
  console.error('dist/worker.js is started by OBR Studio over an IPC channel; use dist/cli.js from a shell.');
  process.exit(2);
}
process.on('message', (m) => void handle(m as HostToWorker));
process.on('disconnect', () => process.exit(0));
