// Memory-trace points inside the core (diagnostics): the core must not import the pipeline, so the
// pipeline's memory trace (src/pipeline/memlog.ts, OBR_MEMLOG) installs its mark here; without it
// coreMark is a no-op. Used at the batched solver's big moments (factorization, inverse, right
// sides, steps), where a job's peak is reached on its widest layer (issue #12).

let hook: ((label: string) => void) | null = null;

/** Installs (or removes, with null) the function coreMark calls. */
export function setCoreMark(mark: ((label: string) => void) | null): void {
  hook = mark;
}

/** Records `label` in the memory trace when one is installed. */
export function coreMark(label: string): void {
  hook?.(label);
}
