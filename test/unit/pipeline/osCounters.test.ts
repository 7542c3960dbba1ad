// The operating system's counters the debug log and the probe trace print (src/pipeline/osCounters.ts):
// minor page faults grow when the process touches fresh memory, and on Linux the storage write
// counter grows by what a synced write put on the disk.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { countersSince, osCounters } from '../../../src/pipeline/osCounters';

test('touching 64 MiB of fresh memory counts page faults', () => {
  const before = osCounters();
  const buf = new Uint8Array(64 * 2 ** 20);
  for (let i = 0; i < buf.length; i += 4096) buf[i] = 1;
  const after = osCounters();
  // 16384 pages of 4 KiB, or 32 transparent huge pages of 2 MiB: at least the latter.
  assert.ok(after.minorFaults - before.minorFaults >= 32, `faults ${after.minorFaults - before.minorFaults}`);
  assert.equal(buf[4096], 1);
});

test('CPU seconds grow with work on this thread', () => {
  const before = osCounters();
  const t0 = performance.now();
  let x = 0;
  while (performance.now() - t0 < 200) for (let i = 0; i < 1e5; i++) x += Math.sqrt(i);
  const used = osCounters().cpuSeconds - before.cpuSeconds;
  // 200 ms of busy wall time on the main thread; a loaded machine may give it less of a core.
  assert.ok(used >= 0.05 && used < 5, `cpu ${used} s`);
  assert.ok(x > 0);
});

/** tmpfs and ramfs keep files in memory: nothing reaches storage there. */
const IN_MEMORY_FS = new Set([0x01021994, 0x858458f6]);

test('a synced 16 MB write is counted as written to storage (Linux)', { skip: !existsSync('/proc/self/io') && 'no /proc/self/io here (Linux only)' }, (t) => {
  // In the checkout (not the temp folder, which may be in memory).
  const dir = mkdtempSync(path.join(process.cwd(), '.obr-os-test-'));
  try {
    if (IN_MEMORY_FS.has(statfsSync(dir).type)) return t.skip('the checkout is on an in-memory file system');
    const before = osCounters();
    writeFileSync(path.join(dir, 'x.bin'), new Uint8Array(16e6).fill(3), { flush: true });
    const after = osCounters();
    assert.ok(after.storageWriteBytes - before.storageWriteBytes >= 16e6, `written ${after.storageWriteBytes - before.storageWriteBytes}`);
    assert.match(countersSince(before), /^\d+ page faults, \d+ MB read from storage, (1[6-9]|[2-9]\d|\d{3,}) MB written, \d+\.\d\d CPU s, \d+ involuntary switches$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
