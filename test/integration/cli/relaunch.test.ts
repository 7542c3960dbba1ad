// The CLI's relaunch with glibc's malloc setting (src/cli/relaunch.ts, src/runtime/mallocTunables.ts),
// watched from outside on a stand-in entry that starts exactly as src/cli/main.ts does: the process
// that runs the command has the setting and glibc honours it (a 256 MiB buffer is backed by
// transparent huge pages); exit codes, stdin and signals pass through the wrapper; a Ctrl-C (SIGINT
// to the whole process group) reaches the command's cancel handler once. On a machine where the
// setting doesn't apply (not glibc ≥ 2.35, THP not in madvise mode) the command runs unwrapped.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { mallocTuningSkipReason } from '../../../src/runtime/mallocTunables';

const fixture = join(__dirname, 'fixtures', 'relaunchProbe.ts');

/** The test's environment without any malloc setting of its own. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of ['MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'GLIBC_TUNABLES', 'OBR_MALLOC_TUNING', 'OBR_MALLOC_RELAUNCHED']) delete env[k];
  return { ...env, ...extra };
}

const notHere = mallocTuningSkipReason(cleanEnv());
const applies = { skip: notHere ? `the malloc setting doesn't apply here: ${notHere}` : false, timeout: 60_000 } as const;

function run(args: string[], env = cleanEnv(), input?: string) {
  return spawnSync(process.execPath, ['--import', 'tsx', fixture, ...args], { env, input, encoding: 'utf8', timeout: 30_000 });
}

interface HeapReport {
  pid: number;
  ppid: number;
  hugeMiB: number;
  env: Record<string, string | null>;
}

function report(env = cleanEnv()): { started: number; report: HeapReport } {
  const r = run(['report'], env);
  assert.equal(r.status, 0, r.stderr);
  return { started: r.pid!, report: JSON.parse(r.stdout) as HeapReport };
}

test('the command runs in a relaunched child that has glibc.malloc.hugetlb=1, and glibc honours it', applies, () => {
  const { started, report: r } = report();
  assert.equal(r.ppid, started, 'the command ran in a child of the started process');
  assert.deepEqual(r.env, { GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1', OBR_MALLOC_RELAUNCHED: '1' });
  assert.ok(r.hugeMiB > 128, `a 256 MiB buffer is backed by huge pages (${r.hugeMiB} MiB of them)`);
});

test('where the setting does not apply, the command runs in the started process, unchanged', { skip: notHere ? false : 'it applies here', timeout: 60_000 }, () => {
  const { started, report: r } = report();
  assert.equal(r.pid, started);
  assert.deepEqual(r.env, { GLIBC_TUNABLES: null, OBR_MALLOC_RELAUNCHED: null });
});

test('OBR_MALLOC_TUNING=0: no relaunch, glibc defaults (4 KiB pages)', applies, () => {
  const { started, report: r } = report(cleanEnv({ OBR_MALLOC_TUNING: '0' }));
  assert.equal(r.pid, started, 'the command ran in the started process itself');
  assert.deepEqual(r.env, { GLIBC_TUNABLES: null, OBR_MALLOC_RELAUNCHED: null });
  assert.ok(r.hugeMiB < 32, `${r.hugeMiB} MiB of huge pages`);
});

test("a user's GLIBC_TUNABLES is kept: other tunables get ours appended, their own hugetlb value wins", applies, () => {
  const other = report(cleanEnv({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' })).report;
  assert.equal(other.env.GLIBC_TUNABLES, 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1');
  assert.ok(other.hugeMiB > 128, `${other.hugeMiB} MiB of huge pages`);
  const own = report(cleanEnv({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }));
  assert.equal(own.report.pid, own.started, 'nothing to add: no relaunch');
  assert.equal(own.report.env.GLIBC_TUNABLES, 'glibc.malloc.hugetlb=0');
  assert.ok(own.report.hugeMiB < 32, `${own.report.hugeMiB} MiB of huge pages`);
});

test('the real CLI (dist/cli.js): `obr providers` runs with the setting, or says why not', { timeout: 60_000 }, () => {
  const cli = (env: NodeJS.ProcessEnv) => spawnSync(process.execPath, ['dist/cli.js', 'providers', '--ep', 'cpu'], { env, encoding: 'utf8', timeout: 30_000 });
  const tuned = cli(cleanEnv());
  assert.equal(tuned.status, 0, tuned.stderr);
  assert.match(tuned.stderr, notHere ? /malloc: glibc defaults/ : /malloc: GLIBC_TUNABLES=glibc\.malloc\.hugetlb=1\n/);
  const off = cli(cleanEnv({ OBR_MALLOC_TUNING: '0' }));
  assert.equal(off.status, 0, off.stderr);
  assert.match(off.stderr, notHere ? /malloc: glibc defaults/ : /malloc: glibc defaults \(OBR_MALLOC_TUNING=0\)/);
});

test("the child's exit code and stdin pass through the wrapper", applies, () => {
  assert.equal(run(['exit', '7']).status, 7);
  assert.equal(run(['exit', '0']).status, 0);
  const r = run(['stdin'], cleanEnv(), 'through the wrapper\n');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'THROUGH THE WRAPPER\n');
});

test('a child killed by a signal makes the wrapper die by the same signal', applies, () => {
  const r = run(['kill', 'SIGTERM']);
  assert.equal(r.status, null);
  assert.equal(r.signal, 'SIGTERM');
});

/** Starts the fixture in a process group of its own; resolves with the child's pid once it is ready. */
function startWaiting(mode: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, mode], { env: cleanEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += String(d)));
  const ready = new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += String(d);
      const m = /ready (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', () => reject(new Error(`exited before ready: ${err}`)));
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, ready, exited, output: () => out };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('SIGTERM sent to the wrapper alone reaches the command, and both end by it', applies, async () => {
  const w = startWaiting('wait');
  const inner = await w.ready;
  assert.notEqual(inner, w.child.pid, 'the command runs in a relaunched child');
  process.kill(w.child.pid!, 'SIGTERM');
  const { signal } = await w.exited;
  assert.equal(signal, 'SIGTERM');
  assert.equal(alive(inner), false, 'the relaunched child is gone too');
});

test("Ctrl-C (SIGINT to the process group) reaches the command's cancel handler once; its exit code comes back", applies, async () => {
  const w = startWaiting('cancel');
  await w.ready;
  process.kill(-w.child.pid!, 'SIGINT'); // what a terminal does: the wrapper and the child both get it
  const { code, signal } = await w.exited;
  assert.equal(signal, null);
  assert.equal(code, 130);
  assert.equal(w.output().match(/cancelling/g)?.length, 1, w.output());
  assert.match(w.output(), /cancelled/);
});
