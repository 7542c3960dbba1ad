// Which malloc setting a pipeline process is started with (src/runtime/mallocTunables.ts), for the
// OS, C library and transparent-huge-page mode of a machine.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { currentMallocHost, missingMallocTunables, withMallocTunables, type MallocHost } from '../../../src/runtime/mallocTunables';

const debian: MallocHost = { platform: 'linux', glibc: '2.36', hugePages: 'madvise' };

test('glibc ≥ 2.35 with THP in madvise mode: GLIBC_TUNABLES gets glibc.malloc.hugetlb=1', () => {
  assert.deepEqual(missingMallocTunables({ PATH: '/bin' }, debian), { GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1' });
  assert.deepEqual(missingMallocTunables({}, { ...debian, glibc: '2.35' }), { GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1' });
  assert.deepEqual(missingMallocTunables({}, { ...debian, glibc: '3.0' }), { GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1' });
  const env = withMallocTunables({ PATH: '/bin' }, debian);
  assert.equal(env.PATH, '/bin');
  assert.equal(env.GLIBC_TUNABLES, 'glibc.malloc.hugetlb=1');
});

test('nothing where it cannot help or is not wanted', () => {
  const cases: Array<[string, NodeJS.ProcessEnv, MallocHost]> = [
    ['macOS', {}, { platform: 'darwin', glibc: undefined, hugePages: 'unknown' }],
    ['Windows', {}, { platform: 'win32', glibc: undefined, hugePages: 'unknown' }],
    ['musl', {}, { ...debian, glibc: undefined }],
    ['glibc 2.34 (no hugetlb tunable)', {}, { ...debian, glibc: '2.34' }],
    ['THP always (every process has huge pages)', {}, { ...debian, hugePages: 'always' }],
    ['THP never', {}, { ...debian, hugePages: 'never' }],
    ['no THP in the kernel', {}, { ...debian, hugePages: 'unknown' }],
    ['opted out', { OBR_MALLOC_TUNING: '0' }, debian],
    ['opted out (off)', { OBR_MALLOC_TUNING: 'OFF' }, debian],
    ["the user's own hugetlb value", { GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }, debian],
  ];
  for (const [why, env, machine] of cases) {
    assert.deepEqual(missingMallocTunables(env, machine), {}, why);
    assert.equal(withMallocTunables(env, machine), env, `${why}: the same environment`);
  }
  assert.deepEqual(missingMallocTunables({ OBR_MALLOC_TUNING: '1' }, debian), { GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1' });
});

test("a user's other tunables are kept, ours appended", () => {
  assert.deepEqual(missingMallocTunables({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }, debian), { GLIBC_TUNABLES: 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1' });
});

test('this machine is read from the process report and sysfs', () => {
  const here = currentMallocHost();
  assert.equal(here.platform, process.platform);
  if (process.platform === 'linux') assert.ok(['always', 'madvise', 'never', 'unknown'].includes(here.hugePages));
});
