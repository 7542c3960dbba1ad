// glibc malloc settings for the processes that run the pipeline (the CLI, the extension's worker).
//
// Why: every onnxruntime session the block stream opens (one per block region and forward,
// src/pipeline/blockStream.ts) copies that block's weights — tens of MB per tensor, ~88 MB for a
// 1B-class block — into freshly allocated buffers. glibc serves buffers above 32 MiB with a new
// mmap and unmaps them on free, and returns the heap top to the system, so each opening pays the
// kernel's page faults on 4 KiB pages again, about 20 000 per block. On a virtual machine those
// faults are slow: opening an 84 MiB block session took 1.5–3.7 s on this machine (5.5–8.6 s in
// the scale run, docs/bench-scale.md), its forward a fraction of that.
//
// The setting: glibc.malloc.hugetlb=1 (glibc ≥ 2.35) makes malloc ask for transparent huge pages
// (madvise(MADV_HUGEPAGE)) on the memory it maps, so the same buffers fault in 2 MiB at a time:
// 0.24 s per block session (median; was 2.4 s), the job's peak RSS not higher, memory still given back on free
// (measurements in docs/pipeline.md, "Process memory settings"). It matters only where the
// kernel's transparent huge pages are in `madvise` mode (the usual default); in `always` mode
// every process has them already, in `never` mode the setting can't help — no change is made then.
// (Keeping freed memory instead — MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=
// 68719476736 — was as fast on block sessions but raised the peak RSS by 20–45 %; a user can
// still set those, and any malloc setting of the user's is kept.)
//
// glibc reads tunables only when a process starts (mallopt() is out of reach from JavaScript), so
// the setting is put in the environment of a process about to be started: the worker forked by the
// extension, or the CLI re-executing itself once (src/cli/relaunch.ts). Opt out with
// OBR_MALLOC_TUNING=0.
import { readFileSync } from 'node:fs';

/** The environment that switches the tuning off ("0", "off", "false", "no"). */
export const MALLOC_TUNING_OPT_OUT = 'OBR_MALLOC_TUNING';

/** Set in the environment of a process the CLI re-executed, so it never re-executes again. */
export const MALLOC_RELAUNCHED = 'OBR_MALLOC_RELAUNCHED';

/** The tunable added to GLIBC_TUNABLES. */
export const HUGE_PAGE_TUNABLE = 'glibc.malloc.hugetlb=1';

/** The kernel's transparent huge page mode (/sys/kernel/mm/transparent_hugepage/enabled). */
export type HugePageMode = 'always' | 'madvise' | 'never' | 'unknown';

/** What decides whether the setting applies: the OS, the C library and the kernel's THP mode. */
export interface MallocHost {
  platform: NodeJS.Platform;
  /** glibc's version at run time ("2.36"); undefined for another C library (musl) or OS. */
  glibc: string | undefined;
  hugePages: HugePageMode;
}

let host: MallocHost | undefined;

/** This machine (read once per process). */
export function currentMallocHost(): MallocHost {
  if (host) return host;
  let glibc: string | undefined;
  let hugePages: HugePageMode = 'unknown';
  if (process.platform === 'linux') {
    try {
      // (The extension host may be Electron's node: no report there means no tuning, never a failed fork.)
      const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
      glibc = header?.glibcVersionRuntime;
    } catch {
      glibc = undefined;
    }
    try {
      const m = /\[(always|madvise|never)\]/.exec(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'));
      if (m) hugePages = m[1] as HugePageMode;
    } catch {
      // no sysfs entry: a kernel without transparent huge pages
    }
  }
  host = { platform: process.platform, glibc, hugePages };
  return host;
}

export function mallocTuningDisabled(env: NodeJS.ProcessEnv): boolean {
  const v = env[MALLOC_TUNING_OPT_OUT]?.trim().toLowerCase();
  return v === '0' || v === 'off' || v === 'false' || v === 'no';
}

/** glibc.malloc.hugetlb exists from glibc 2.35 on. */
function hasHugetlbTunable(glibc: string | undefined): boolean {
  const m = /^(\d+)\.(\d+)/.exec(glibc ?? '');
  return !!m && (Number(m[1]) > 2 || (Number(m[1]) === 2 && Number(m[2]) >= 35));
}

/**
 * Why no setting is added for `env` on `machine`, or undefined when GLIBC_TUNABLES should get
 * HUGE_PAGE_TUNABLE. (For `obr`'s log and the tests.)
 */
export function mallocTuningSkipReason(env: NodeJS.ProcessEnv, machine: MallocHost = currentMallocHost()): string | undefined {
  if (machine.platform !== 'linux') return 'not Linux';
  if (mallocTuningDisabled(env)) return `${MALLOC_TUNING_OPT_OUT}=${env[MALLOC_TUNING_OPT_OUT]}`;
  if (!hasHugetlbTunable(machine.glibc)) return machine.glibc ? `glibc ${machine.glibc} < 2.35` : 'not glibc';
  if (machine.hugePages !== 'madvise') return `transparent huge pages are "${machine.hugePages}"`;
  if ((env.GLIBC_TUNABLES ?? '').includes('glibc.malloc.hugetlb=')) return 'GLIBC_TUNABLES sets glibc.malloc.hugetlb already';
  return undefined;
}

/** The variables to set in the environment of a pipeline process started from `env` (empty when none). */
export function missingMallocTunables(env: NodeJS.ProcessEnv, machine: MallocHost = currentMallocHost()): Record<string, string> {
  if (mallocTuningSkipReason(env, machine) !== undefined) return {};
  const given = env.GLIBC_TUNABLES;
  return { GLIBC_TUNABLES: given ? `${given}:${HUGE_PAGE_TUNABLE}` : HUGE_PAGE_TUNABLE };
}

/** `env` with the malloc setting added (a copy; `env` itself when nothing is added). */
export function withMallocTunables(env: NodeJS.ProcessEnv, machine: MallocHost = currentMallocHost()): NodeJS.ProcessEnv {
  const missing = missingMallocTunables(env, machine);
  return Object.keys(missing).length ? { ...env, ...missing } : env;
}

/** One line for `obr providers`: the malloc setting this process runs with, or why none. */
export function describeMallocTuning(env: NodeJS.ProcessEnv = process.env, machine: MallocHost = currentMallocHost()): string {
  const tunables = env.GLIBC_TUNABLES;
  if (tunables?.includes('glibc.malloc.hugetlb=')) return `malloc: GLIBC_TUNABLES=${tunables}`;
  return `malloc: glibc defaults (${mallocTuningSkipReason(env, machine) ?? 'started without the setting'})`;
}
