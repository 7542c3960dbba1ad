// Cancellation: an AbortSignal checked between layers and batches (docs/architecture.md).

/** Thrown when a job's AbortSignal fires; the job has removed its temporary files. */
export class AbortError extends Error {
  override name = 'AbortError';
  constructor(message = 'the job was cancelled') {
    super(message);
  }
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortError();
}

export function isAbort(e: unknown): boolean {
  return e instanceof Error && (e.name === 'AbortError' || e instanceof AbortError);
}
