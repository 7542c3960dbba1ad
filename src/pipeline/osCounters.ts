// What the operating system counts for this process (diagnostics in the debug log and the probe
// trace): minor page faults — memory pages touched for the first time, all threads — the bytes
// its reads and writes moved to or from storage (Linux's /proc/self/io; 0 elsewhere), the CPU
// seconds of all its threads and how often the kernel took the CPU from it (involuntary context
// switches: other processes or threads wanting the cores). On a virtual machine whose fresh memory
// pages cost tens of microseconds each, these explain time that the arithmetic does not
// (docs/bench-scale.md, estimates).
import { readFileSync } from 'node:fs';

export interface OsCounters {
  minorFaults: number;
  /** Bytes read from storage (not from the page cache). */
  storageReadBytes: number;
  /** Bytes this process caused to be written to storage. */
  storageWriteBytes: number;
  /** User + system CPU seconds of all threads. */
  cpuSeconds: number;
  involuntarySwitches: number;
}

export function osCounters(): OsCounters {
  const usage = process.resourceUsage();
  const minorFaults = usage.minorPageFault;
  const cpuSeconds = (usage.userCPUTime + usage.systemCPUTime) / 1e6;
  let storageReadBytes = 0;
  let storageWriteBytes = 0;
  try {
    const io = readFileSync('/proc/self/io', 'utf8');
    storageReadBytes = Number(/^read_bytes: (\d+)$/m.exec(io)?.[1] ?? 0);
    storageWriteBytes = Number(/^write_bytes: (\d+)$/m.exec(io)?.[1] ?? 0);
  } catch {
    // Not Linux, or not readable: the fault count alone.
  }
  return { minorFaults, storageReadBytes, storageWriteBytes, cpuSeconds, involuntarySwitches: usage.involuntaryContextSwitches };
}

/** The counters' growth since `from`, in a short text for a log line. */
export function countersSince(from: OsCounters): string {
  const now = osCounters();
  const mb = (b: number) => Math.round(b / 1e6);
  return `${now.minorFaults - from.minorFaults} page faults, ${mb(now.storageReadBytes - from.storageReadBytes)} MB read from storage, ${mb(now.storageWriteBytes - from.storageWriteBytes)} MB written, ${(now.cpuSeconds - from.cpuSeconds).toFixed(2)} CPU s, ${now.involuntarySwitches - from.involuntarySwitches} involuntary switches`;
}
