// The worker client: a killed or crashed worker fails the pending job with a clear error, and
// the next job gets a fresh worker process. Uses a fake worker speaking the same IPC protocol.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEFAULT_OPTIONS } from '../../../src/protocol/recipes';
import { WorkerClient, WorkerCrashError, WorkerRequestError } from '../../../src/extension/workerClient';

const fake = join(__dirname, 'fixtures', 'fakeWorker.cjs');

function collectingLog() {
  const lines: string[] = [];
  return { lines, info: (m: string) => lines.push(`info ${m}`), warn: (m: string) => lines.push(`warn ${m}`), error: (m: string) => lines.push(`error ${m}`) };
}

function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = () => (cond() ? resolve() : Date.now() > until ? reject(new Error('timed out')) : setTimeout(tick, 10));
    tick();
  });
}

test('a killed worker fails the running job with WorkerCrashError and the next job gets a fresh worker', { timeout: 30_000 }, async () => {
  const log = collectingLog();
  const client = new WorkerClient(fake, log);
  try {
    await client.probeProviders(['cpu']);
    const first = client.pid;
    assert.ok(first);
    let progress = 0;
    const job = client.compress('/nowhere/model.onnx', DEFAULT_OPTIONS, { onProgress: () => progress++ });
    await waitFor(() => progress >= 3);
    process.kill(first!, 'SIGKILL'); // what the kernel's OOM killer does
    await assert.rejects(job.done, (e: Error) => {
      assert.ok(e instanceof WorkerCrashError, String(e));
      assert.match(e.message, /killed \(SIGKILL, possibly out of memory\)/);
      assert.match(e.message, /next job starts a fresh worker/);
      return true;
    });
    const probe = await client.probeProviders(['cpu']);
    assert.deepEqual(probe.output, [4, 5]);
    assert.ok(client.pid && client.pid !== first, 'a new worker process answered');
    assert.ok(log.lines.some((l) => /error worker pid \d+ was killed/.test(l)), log.lines.join('\n'));
  } finally {
    client.dispose();
  }
});

test('a worker that exits on its own (native crash) fails the request, not a silent spinner', { timeout: 30_000 }, async () => {
  const client = new WorkerClient(fake, collectingLog());
  try {
    await assert.rejects(client.estimate('/nowhere/model.onnx', DEFAULT_OPTIONS), (e: Error) => e instanceof WorkerCrashError && /exited with code 134/.test(e.message));
    assert.deepEqual((await client.probeProviders(['cpu'])).output, [4, 5]);
  } finally {
    client.dispose();
  }
});

test('cancel sends `cancel` and the job fails with AbortError; layers and progress arrive while it runs', { timeout: 30_000 }, async () => {
  const client = new WorkerClient(fake, collectingLog());
  try {
    const layers: string[] = [];
    const job = client.compress('/nowhere/model.onnx', DEFAULT_OPTIONS, { onLayer: (l) => layers.push(l.name) });
    await waitFor(() => layers.length >= 2);
    job.cancel();
    await assert.rejects(job.done, (e: Error) => e instanceof WorkerRequestError && e.code === 'AbortError');
    const pid = client.pid;
    assert.deepEqual((await client.probeProviders(['cpu'])).output, [4, 5]);
    assert.equal(client.pid, pid, 'a cancelled job keeps the worker alive');
  } finally {
    client.dispose();
  }
});

test('the real worker (dist/worker.js): killed mid-request, then a fresh one answers', { timeout: 60_000, skip: existsSync('dist/worker.js') ? false : 'run npm run build first' }, async () => {
  const client = new WorkerClient('dist/worker.js', collectingLog());
  try {
    const first = await client.probeProviders(['cpu']);
    assert.deepEqual(first.output, [4, 5]);
    const pid = client.pid!;
    const pending = client.inspectModel('/nonexistent/model.onnx').catch((e: Error) => e);
    process.kill(pid, 'SIGKILL');
    const err = await pending;
    // Either the kill won the race (crash) or the worker answered first (typed error): never a hang.
    assert.ok(err instanceof WorkerCrashError || (err instanceof WorkerRequestError && err.code === 'ModelFormatError'), String(err));
    assert.deepEqual((await client.probeProviders(['cpu'])).output, [4, 5]);
    assert.notEqual(client.pid, pid);
  } finally {
    client.dispose();
  }
});
