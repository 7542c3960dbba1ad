// Progress events with an overall ETA. Each stage carries a share of the whole job (from the
// pre-flight estimate); ETA = elapsed · (1 − f) / f with f the finished fraction.
import type { ProgressEvent, Stage } from '../protocol/worker';

export type StageShares = Partial<Record<Stage, number>>;

export const DEFAULT_SHARES: StageShares = { load: 0.02, rotate: 0.03, calibrate: 0.3, compress: 0.4, write: 0.05, evaluate: 0.2 };

export class ProgressTracker {
  private readonly started = performance.now();
  private readonly order: Stage[];
  private readonly shares: StageShares;
  private lastEmit = 0;

  constructor(
    private readonly emit: ((e: ProgressEvent) => void) | undefined,
    shares: StageShares = DEFAULT_SHARES,
  ) {
    const total = Object.values(shares).reduce((s, v) => s + (v ?? 0), 0) || 1;
    this.shares = Object.fromEntries(Object.entries(shares).map(([k, v]) => [k, (v ?? 0) / total])) as StageShares;
    this.order = Object.keys(shares) as Stage[];
  }

  /** Fraction of the job finished when `stage` has done/total units. */
  fraction(stage: Stage, done: number, total: number): number {
    let f = 0;
    for (const s of this.order) {
      if (s === stage) break;
      f += this.shares[s] ?? 0;
    }
    return f + (this.shares[stage] ?? 0) * (total > 0 ? Math.min(1, done / total) : 0);
  }

  /**
   * Emits a progress event. `overall` (0…1) overrides the stage-share estimate of the finished
   * fraction, for stages that interleave (layer-sequential calibrate ↔ compress). `force` sends
   * the event even inside the throttle window (the start of a phase inside a stage).
   */
  report(stage: Stage, done: number, total: number, message?: string, overall?: number, force = false): void {
    if (!this.emit) return;
    const now = performance.now();
    // Throttle chatty batch-level updates to ~5/s; stage boundaries always go out.
    if (!force && done !== 0 && done !== total && now - this.lastEmit < 200) return;
    this.lastEmit = now;
    const f = overall ?? this.fraction(stage, done, total);
    const elapsed = (now - this.started) / 1000;
    const event: ProgressEvent = { stage, done, total };
    if (message) event.message = message;
    event.fraction = Math.round(Math.min(1, Math.max(0, f)) * 1e4) / 1e4;
    if (f > 0.01 && elapsed > 0.5) event.etaSeconds = Math.max(0, (elapsed * (1 - f)) / f);
    this.emit(event);
  }
}
