// The extension's worker process is started with glibc's malloc setting (src/runtime/mallocTunables.ts)
// and glibc honours it there: a 256 MiB buffer in the worker is backed by transparent huge pages.
// With OBR_MALLOC_TUNING=0 in the extension host's environment the worker keeps glibc's defaults.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { WorkerClient } from '../../../src/extension/workerClient';
import { mallocTuningSkipReason } from '../../../src/runtime/mallocTunables';

const worker = join(__dirname, '..', '..', 'fixtures', 'process', 'heapWorker.cjs');
const none = { GLIBC_TUNABLES: undefined, OBR_MALLOC_TUNING: undefined };
const notHere = mallocTuningSkipReason({});
const applies = { skip: notHere ? `the malloc setting doesn't apply here: ${notHere}` : false, timeout: 30_000 } as const;
const quiet = { info: () => {}, warn: () => {}, error: () => {} };

interface HeapReport {
  hugeMiB: number;
  env: Record<string, string | null>;
}

async function workerHeap(env: Record<string, string | undefined>): Promise<HeapReport> {
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(env)) {
    saved[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  const client = new WorkerClient(worker, quiet);
  try {
    const probe = (await client.probeProviders(['cpu'])) as unknown as { heap: HeapReport };
    return probe.heap;
  } finally {
    client.dispose();
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

test('the worker process gets glibc.malloc.hugetlb=1 and glibc honours it', applies, async () => {
  const heap = await workerHeap(none);
  assert.equal(heap.env.GLIBC_TUNABLES, 'glibc.malloc.hugetlb=1');
  assert.ok(heap.hugeMiB > 128, `a 256 MiB buffer is backed by huge pages (${heap.hugeMiB} MiB of them)`);
});

test('OBR_MALLOC_TUNING=0: the worker keeps glibc defaults', applies, async () => {
  const heap = await workerHeap({ ...none, OBR_MALLOC_TUNING: '0' });
  assert.equal(heap.env.GLIBC_TUNABLES, null);
  assert.ok(heap.hugeMiB < 32, `${heap.hugeMiB} MiB of huge pages`);
});
