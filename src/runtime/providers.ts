// Execution-provider choice with fallback: try each preferred provider in order, keep the first
// one whose session actually loads, and record why the others failed (shown in logs and reports).
//
// Probing is quiet: providers whose native libraries are plainly missing (CUDA/TensorRT without
// onnxruntime's provider libraries, WebGPU on Linux without a Vulkan loader) are skipped without
// being tried, and onnxruntime's own logger is raised to `fatal` before the first session, so a
// failed attempt doesn't print red `[E:onnxruntime…]` lines that look like a crash. Each skipped
// provider gets a short reason (`error`) and the raw text (`detail`) for the log.
import { existsSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { runtimeRejectedError } from '../onnx/runtimeError';

/** Providers that can exist on this platform, in the order given. */
export function platformProviders(preference: readonly string[], platform = process.platform): string[] {
  const possible: Record<string, readonly string[]> = {
    cuda: ['linux', 'win32'],
    tensorrt: ['linux', 'win32'],
    dml: ['win32'],
    coreml: ['darwin'],
    webgpu: ['linux', 'win32', 'darwin'],
    cpu: ['linux', 'win32', 'darwin'],
  };
  return preference.filter((p) => possible[p]?.includes(platform) ?? false);
}

export interface ProviderAttempt {
  name: string;
  /** Why it was skipped, in a few words; absent for the provider used. */
  error?: string;
  /** onnxruntime's own message, for the log. */
  detail?: string;
}

export interface SessionChoice {
  session: ort.InferenceSession;
  used: string;
  tried: ProviderAttempt[];
}

export class ProviderError extends Error {
  override name = 'ProviderError';
}

/**
 * Providers that failed to initialise in this process (e.g. CUDA without its libraries), with the
 * error. They are not tried again: onnxruntime prints a native error on every attempt, and a
 * pipeline opens dozens of sessions. CPU is never cached as failed.
 */
const unavailable = new Map<string, ProviderAttempt>();

/** onnxruntime's log level for the whole process: OBR_ORT_LOG_LEVEL, else fatal (see the header). */
function quietOnnxruntime(): void {
  if (quieted) return;
  quieted = true;
  const wanted = process.env.OBR_ORT_LOG_LEVEL;
  const levels = ['verbose', 'info', 'warning', 'error', 'fatal'] as const;
  ort.env.logLevel = levels.find((l) => l === wanted) ?? 'fatal';
}
let quieted = false;

/** Folders where the dynamic loader looks for shared libraries on Linux. */
function linuxLibraryDirs(): string[] {
  const fromEnv = (process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean);
  const arch = process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu';
  return [...fromEnv, `/usr/lib/${arch}`, `/lib/${arch}`, '/usr/lib64', '/lib64', '/usr/lib', '/usr/local/lib'];
}

/** onnxruntime-node's native folder (where its provider libraries would be), if found. */
function ortNativeDir(): string | undefined {
  try {
    const pkg = require.resolve('onnxruntime-node/package.json');
    return path.join(path.dirname(pkg), 'bin', 'napi-v6', process.platform, process.arch);
  } catch {
    return undefined;
  }
}

/**
 * Why `name` can't work on this machine without trying it, or undefined when it is worth a try.
 * Only checks that are certain: a missing library file means the session would fail to load.
 */
export function skipReason(name: string, platform = process.platform): ProviderAttempt | undefined {
  if ((name === 'cuda' || name === 'tensorrt') && platform === 'linux') {
    const dir = ortNativeDir();
    const lib = dir && path.join(dir, 'libonnxruntime_providers_shared.so');
    if (lib && !existsSync(lib)) {
      return { name, error: `this onnxruntime-node install has no ${name === 'cuda' ? 'CUDA' : 'TensorRT'} provider libraries`, detail: `${lib} not found (install onnxruntime-node with its CUDA binaries, e.g. ONNXRUNTIME_NODE_INSTALL_CUDA=v12)` };
    }
  }
  if (name === 'webgpu' && platform === 'linux') {
    const dirs = linuxLibraryDirs();
    if (!dirs.some((d) => existsSync(path.join(d, 'libvulkan.so.1')))) {
      return { name, error: 'no Vulkan driver (libvulkan.so.1) for WebGPU', detail: `libvulkan.so.1 not found in ${dirs.join(', ')}` };
    }
  }
  return undefined;
}

/** A provider's failure in a few words (the raw text goes to `detail`). */
export function shortReason(message: string): string {
  if (/Failed to load (shared )?library|cannot open shared object/i.test(message)) return 'its libraries failed to load';
  if (/adapter/i.test(message)) return 'no GPU adapter';
  if (/not (compiled|built)|not supported|unavailable/i.test(message)) return 'not available in this onnxruntime build';
  if (/out of memory|OOM|cudaErrorMemoryAllocation/i.test(message)) return 'out of GPU memory';
  return 'the session failed to load the model on it';
}

/** One line for the user: the provider used and why each earlier one was skipped. */
export function describeProviders(choice: { used: string; tried: readonly ProviderAttempt[] }): string {
  const skipped = choice.tried.filter((t) => t.error && t.name !== choice.used);
  return `execution provider: ${choice.used}${skipped.length ? ` (skipped ${skipped.map((t) => `${t.name}: ${t.error}`).join('; ')})` : ''}`;
}

function isInitFailure(message: string): boolean {
  return /Failed to load (shared )?library|not (compiled|built)|not supported|unavailable|cannot open shared object|WebGPU adapter|Vulkan/i.test(message);
}

/** OBR_SESSION_TRACE=1: the seconds of every session creation to stderr (docs/pipeline.md, process memory settings). */
const SESSION_TRACE = process.env.OBR_SESSION_TRACE === '1';

/**
 * Creates a session on the first provider of `preference` that loads. CPU is always tried last,
 * even when not named, because every build has it.
 */
export async function createSessionWithFallback(
  model: string | Uint8Array,
  preference: readonly string[],
  options: ort.InferenceSession.SessionOptions = {},
): Promise<SessionChoice> {
  quietOnnxruntime();
  const order = platformProviders(preference);
  if (!order.includes('cpu')) order.push('cpu');
  const tried: SessionChoice['tried'] = [];
  for (const name of order) {
    const known = unavailable.get(name) ?? skipReason(name);
    if (known !== undefined) {
      unavailable.set(name, known);
      tried.push(known);
      continue;
    }
    try {
      // Sessions log nothing below fatal: a failure comes back as an exception (a skip reason, or
      // the translated error below), never as red native lines on the console.
      const opts = { ...options, executionProviders: [name], logSeverityLevel: 4 as const };
      const started = performance.now();
      const session =
        typeof model === 'string' ? await ort.InferenceSession.create(model, opts) : await ort.InferenceSession.create(model, opts);
      if (SESSION_TRACE) process.stderr.write(`session-open ${((performance.now() - started) / 1000).toFixed(3)} s ${typeof model === 'string' ? model : `${(model.length / 2 ** 20).toFixed(1)} MiB`}\n`);
      tried.push({ name });
      return { session, used: name, tried };
    } catch (e) {
      const detail = firstLine(e);
      const attempt = { name, error: name === 'cpu' ? detail : shortReason(detail), detail };
      tried.push(attempt);
      if (name !== 'cpu' && isInitFailure(detail)) unavailable.set(name, attempt);
    }
  }
  // Every provider, CPU included, rejected the graph: that is the graph's fault — say so in words.
  const cpu = tried.find((t) => t.name === 'cpu');
  throw runtimeRejectedError(cpu?.detail ?? tried.map((t) => `${t.name}: ${t.detail ?? t.error}`).join('; '), typeof model === 'string' ? model : 'the model');
}

function firstLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.split('\n')[0]!.slice(0, 300);
}
