// The machine a benchmark ran on, and peak memory per measured phase.
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import type { MachineInfo, PeakMemory } from '../../protocol/bench';

/** onnxruntime-node's version, read from its package.json (the package stays external to the bundles). */
export function onnxruntimeVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(require.resolve('onnxruntime-node/package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export function machineInfo(executionProvider: string, loadAverageStart: number[]): MachineInfo {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model?.trim() || 'unknown',
    cores: cpus.length,
    memoryBytes: os.totalmem(),
    platform: os.platform(),
    arch: os.arch(),
    osRelease: os.release(),
    node: process.version,
    onnxruntime: onnxruntimeVersion(),
    executionProvider,
    loadAverageStart: loadAverageStart.map((x) => Number(x.toFixed(2))),
    loadAverageEnd: os.loadavg().map((x) => Number(x.toFixed(2))),
  };
}

function procStatusKb(field: 'VmHWM' | 'VmRSS'): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Peak RSS of one phase. On Linux the kernel's high-water mark (VmHWM) is reset at the start
 * (`echo 5 > /proc/self/clear_refs`, Linux ≥ 4.0), so the peak includes native allocations of
 * onnxruntime and moments when the JS thread is blocked. Elsewhere RSS is sampled every 25 ms,
 * which misses peaks inside long synchronous calls (the result says which method was used).
 */
export class PeakMemoryTracker {
  private timer: NodeJS.Timeout | undefined;
  private peak = 0;
  private readonly base: number;
  private readonly method: PeakMemory['method'];

  private constructor() {
    let reset = false;
    if (process.platform === 'linux') {
      try {
        writeFileSync('/proc/self/clear_refs', '5');
        reset = procStatusKb('VmHWM') !== undefined;
      } catch {
        reset = false;
      }
    }
    this.method = reset ? 'vmhwm' : 'sampled';
    this.base = process.memoryUsage.rss();
    this.peak = this.base;
    if (!reset) {
      this.timer = setInterval(() => {
        this.peak = Math.max(this.peak, process.memoryUsage.rss());
      }, 25);
      this.timer.unref();
    }
  }

  static start(): PeakMemoryTracker {
    return new PeakMemoryTracker();
  }

  stop(): PeakMemory {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const now = process.memoryUsage.rss();
    const peak = this.method === 'vmhwm' ? (procStatusKb('VmHWM') ?? now) : Math.max(this.peak, now);
    return { peakRssBytes: peak, baseRssBytes: this.base, method: this.method };
  }
}
