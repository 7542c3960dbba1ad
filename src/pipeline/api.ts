// The pipeline's public entry points, used by the CLI and by the extension's worker. The
// implementation lives beside this file; these signatures are the contract between them.
import type { ProgressEvent } from '../protocol/worker';
import type { LayerReport } from '../protocol/report';

export interface PipelineHooks {
  /** Checked between layers and batches; an aborted job removes its temp files and throws AbortError. */
  signal?: AbortSignal;
  onProgress?(event: ProgressEvent): void;
  /** Called as each layer finishes, for live inspector updates. */
  onLayer?(layer: LayerReport): void;
  /** `debug`: details for the log / output channel only (the CLI shows them with OBR_DEBUG=1). */
  log?(level: 'debug' | 'info' | 'warn' | 'error', message: string): void;
}
