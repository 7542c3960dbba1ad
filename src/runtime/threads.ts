// How many intra-op threads the pipeline's onnxruntime sessions use.
//
// onnxruntime's own default on Linux is half the logical processors (std::thread::hardware_
// concurrency() / 2), a guess at the physical cores that assumes two hardware threads per core.
// On a machine without SMT (most cloud VMs' vCPUs, CI runners) that leaves half the cores idle:
// on this project's 2-core machine every block session ran on ONE thread (CPU seconds = wall
// seconds per forward). So the physical cores are counted here from the kernel's CPU topology and
// handed to the sessions; where that can't be read (not Linux), onnxruntime keeps its default.
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/** Physical cores this process may run on, or undefined where the topology can't be read. */
export function physicalCores(sysfs = '/sys/devices/system/cpu'): number | undefined {
  let entries: string[];
  try {
    entries = readdirSync(sysfs).filter((e) => /^cpu\d+$/.test(e));
  } catch {
    return undefined;
  }
  const cores = new Set<string>();
  for (const cpu of entries) {
    try {
      const online = readOptional(`${sysfs}/${cpu}/online`);
      if (online !== undefined && online.trim() === '0') continue;
      const pkg = readFileSync(`${sysfs}/${cpu}/topology/physical_package_id`, 'utf8').trim();
      const core = readFileSync(`${sysfs}/${cpu}/topology/core_id`, 'utf8').trim();
      cores.add(`${pkg}:${core}`);
    } catch {
      return undefined;
    }
  }
  if (cores.size === 0) return undefined;
  // A process limited to fewer processors (taskset, a container's cpuset) gets no more threads.
  return Math.max(1, Math.min(cores.size, availableParallelism()));
}

function readOptional(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

let cached: number | undefined | null = null;

/** intraOpNumThreads for the pipeline's sessions: the physical cores, or undefined (onnxruntime's default). */
export function sessionThreads(): number | undefined {
  if (cached === null) cached = physicalCores();
  return cached;
}
