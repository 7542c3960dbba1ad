// Execution-provider choice with fallback: try each preferred provider in order, keep the first
// one whose session actually loads, and record why the others failed (shown in logs and reports).
import * as ort from 'onnxruntime-node';

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

export interface SessionChoice {
  session: ort.InferenceSession;
  used: string;
  tried: Array<{ name: string; error?: string }>;
}

export class ProviderError extends Error {
  override name = 'ProviderError';
}

/**
 * Providers that failed to initialise in this process (e.g. CUDA without its libraries), with the
 * error. They are not tried again: onnxruntime prints a native error on every attempt, and a
 * pipeline opens dozens of sessions. CPU is never cached as failed.
 */
const unavailable = new Map<string, string>();

function isInitFailure(message: string): boolean {
  return /Failed to load (shared )?library|not (compiled|built)|not supported|unavailable|cannot open shared object|WebGPU adapter|Vulkan/i.test(message);
}

/**
 * Creates a session on the first provider of `preference` that loads. CPU is always tried last,
 * even when not named, because every build has it.
 */
export async function createSessionWithFallback(
  model: string | Uint8Array,
  preference: readonly string[],
  options: ort.InferenceSession.SessionOptions = {},
): Promise<SessionChoice> {
  const order = platformProviders(preference);
  if (!order.includes('cpu')) order.push('cpu');
  const tried: SessionChoice['tried'] = [];
  for (const name of order) {
    const known = unavailable.get(name);
    if (known !== undefined) {
      tried.push({ name, error: known });
      continue;
    }
    try {
      const opts = { ...options, executionProviders: [name] };
      const session =
        typeof model === 'string' ? await ort.InferenceSession.create(model, opts) : await ort.InferenceSession.create(model, opts);
      tried.push({ name });
      return { session, used: name, tried };
    } catch (e) {
      const error = firstLine(e);
      tried.push({ name, error });
      if (name !== 'cpu' && isInitFailure(error)) unavailable.set(name, error);
    }
  }
  throw new ProviderError(
    `no execution provider could load the model: ${tried.map((t) => `${t.name}: ${t.error}`).join('; ')}`,
  );
}

function firstLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.split('\n')[0]!.slice(0, 300);
}
