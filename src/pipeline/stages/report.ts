// Stage 6, report: the report JSON staged beside the outputs, then every staged file renamed into
// place (the report last, so a report on disk always points at complete models).
import { REPORT_SCHEMA_VERSION, type CompressionReport } from '../../protocol/report';
import { throwIfAborted } from '../cancel';
import { atomicWrite } from '../checkpoint';
import { numericOptions, TOOL_VERSION, type Job } from '../job';
import { commitStaged, staged } from '../outputs';
import type { CompressedJob } from './calibrate';
import type { EvaluatedJob } from './evaluate';
import type { LoadedJob } from './load';
import type { RotatedJob } from './rotate';
import type { WrittenJob } from './write';

export async function reportStage(
  job: Job,
  input: LoadedJob,
  rot: RotatedJob,
  compressed: CompressedJob,
  written: WrittenJob,
  evaluated: EvaluatedJob,
  resumedBlocks: string[],
): Promise<CompressionReport> {
  const { options, extra, paths, baselines, timings } = job;
  const { calib, calibText, evalText, seqlen } = input;
  const { layers, states } = compressed;
  timings.total = (performance.now() - job.started) / 1000;
  const report: CompressionReport = {
    schemaVersion: REPORT_SCHEMA_VERSION,
    tool: { name: 'obr-studio', version: TOOL_VERSION },
    createdAt: new Date().toISOString(),
    source: { path: job.source, bytes: input.sourceBytes, sha256: input.sourceSha },
    outputs: {
      simulated: paths.simulated,
      packed: written.packedWritten ? paths.packed : undefined,
      report: paths.report,
      ...(paths.folder ? { folder: { path: paths.folder.dir, kind: paths.folder.kind } } : {}),
    },
    recipe: options.recipe,
    options: {
      ...numericOptions(options, seqlen),
      onlyBlocks: extra.onlyBlocks ?? null,
      executionProviders: options.executionProviders,
      calibText: calibText.path,
      evalText: evalText?.path ?? null,
      evalWindows: extra.evalWindows ?? null,
      baselines,
      rotated: rot.rotated,
      resumedBlocks,
      jobKey: input.jobKey,
    },
    calibration: { text: calibText.path, sha256: calibText.sha256, samples: calib.count, seqlen, tokens: calib.count * seqlen, mode: options.calibrationMode },
    executionProvider: job.executionProvider ?? { used: 'none', tried: [] },
    ...(written.packedSize ? { packedSize: written.packedSize } : {}),
    layers: layers.map((l) => states.get(l.name)!.report),
    perplexity: evaluated.perplexity,
    ...(baselines.length
      ? {
          baselines: baselines.map((recipe, k) => ({
            recipe,
            ...(evaluated.baselinePerplexity.has(recipe) ? { perplexity: evaluated.baselinePerplexity.get(recipe)! } : {}),
            layers: layers.map((l) => ({ name: l.name, loss: states.get(l.name)!.baselines![k]!.loss })),
          })),
        }
      : {}),
    sensitivity: evaluated.sensitivity,
    timings,
    ...(extra.estimate ? { estimate: extra.estimate } : {}),
    warnings: job.warnings,
  };
  await atomicWrite(staged(paths, paths.report), JSON.stringify(report, null, 1) + '\n');
  throwIfAborted(job.signal);
  await input.loaded.close();
  await commitStaged(paths);
  job.progress.report('evaluate', 1, 1, 'done', 1);
  return report;
}
