// Stage 5, evaluate: perplexity of the dense and the compressed (simulated) model on the same
// held-out windows, of each baseline's model, and optionally per-layer sensitivity. Perplexity
// streams through the blocks like calibration (one block subgraph per session, cached hidden
// states, spilled beyond the activation budget).
import path from 'node:path';
import type { TensorReader } from '../../onnx/load';
import type { ModelProto } from '../../onnx/proto';
import type { RecipeName } from '../../protocol/recipes';
import type { CompressionReport, PerplexityResult } from '../../protocol/report';
import { evaluationWindows } from '../../runtime/text';
import { throwIfAborted } from '../cancel';
import { defaultBatch, openForPerplexity, perplexityOf, streamedPerplexity } from '../evaluate';
import { DEFAULT_ACTIVATION_CACHE_MIB, noteExecutionProvider, type Job } from '../job';
import { DEFAULT_SENSITIVITY_WINDOWS, layerSensitivity } from '../sensitivity';
import { withFakeQuant } from '../transforms';
import { memMark } from '../memlog';
import type { CompressedJob } from './calibrate';
import type { LoadedJob } from './load';
import type { RotatedJob } from './rotate';
import type { WrittenJob } from './write';

export interface EvaluatedJob {
  perplexity: CompressionReport['perplexity'];
  baselinePerplexity: Map<RecipeName, PerplexityResult>;
  sensitivity?: CompressionReport['sensitivity'];
}

export async function evaluateStage(job: Job, input: LoadedJob, rot: RotatedJob, compressed: CompressedJob, written: WrittenJob): Promise<EvaluatedJob> {
  const { options, extra, signal, baselines } = job;
  const { evalWindows: evalWin, evalText, seqlen, working, tokenizer } = input;
  const { layers, blocks, checkpoint } = compressed;
  const perplexity: CompressionReport['perplexity'] = {};
  const baselinePerplexity = new Map<RecipeName, PerplexityResult>();
  if (!evalWin || !evalText) return { perplexity, baselinePerplexity };
  const batch = extra.batch ?? defaultBatch(seqlen);
  const eps = options.executionProviders;
  const streamed = (extra.calibrationForwards ?? 'stream') === 'stream';
  let t = performance.now();
  const total = evalWin.count * (2 + baselines.length);
  /** `source`: where the graph's weights are read from per block (the source file as opened, or the working store). */
  const evaluate = async (model: ModelProto, offset: number, label: string, stage: 'evaluate' | 'baseline' = 'evaluate', source?: TensorReader & { readonly path?: string }): Promise<PerplexityResult> => {
    const t0 = performance.now();
    job.progress.report(stage, offset, total, `perplexity ${label} 0/${evalWin.count}`, 0.78 + 0.2 * (offset / total), true);
    const onWindow = (done: number) => job.progress.report(stage, offset + done, total, `perplexity ${label} ${done}/${evalWin.count}`, 0.78 + 0.2 * ((offset + done) / total));
    let r: { nll: number; perplexity: number; tokens: number };
    if (streamed) {
      // Block by block on cached hidden states: one block's weights in a session at a time.
      r = await streamedPerplexity(model, evalWin, {
        executionProviders: eps,
        batch,
        signal,
        spill: { budgetBytes: (extra.activationCacheMiB ?? DEFAULT_ACTIVATION_CACHE_MIB) * 2 ** 20, spillDir: path.join(job.paths.partialDir, 'activations-eval') },
        onProgress: (f) => onWindow(Math.floor(f * evalWin.count)),
        onExecutionProvider: (ep) => noteExecutionProvider(job, ep),
        log: (m) => job.log('info', m),
        source,
      });
    } else {
      const lm = await openForPerplexity(source?.path ?? (await working.inlined(model)).model, eps);
      noteExecutionProvider(job, lm.executionProvider);
      try {
        r = await perplexityOf(lm, evalWin, { batch, signal, onWindow });
      } finally {
        await lm.release();
      }
    }
    memMark(`perplexity ${label}`);
    return { ...r, windows: evalWin.count, seqlen, text: evalText.path, seconds: (performance.now() - t0) / 1000 };
  };
  // The dense reference is the source model itself: its weights are read from the file per block.
  perplexity.dense = await evaluate(input.loaded.model, 0, 'dense', 'evaluate', input.loaded);
  perplexity.compressed = await evaluate(written.simulated, evalWin.count, 'compressed', 'evaluate', working.store);
  job.log('info', `perplexity dense ${perplexity.dense.perplexity.toFixed(3)} → compressed ${perplexity.compressed.perplexity.toFixed(3)}`);
  if (!Number.isFinite(perplexity.compressed.perplexity)) job.warnings.push('the compressed model\'s perplexity is not finite');
  else if (perplexity.compressed.perplexity < perplexity.dense.perplexity * (1 - 1e-3)) {
    // Compression can't add knowledge: a better score means the text is far from what the model knows.
    job.warnings.push(`the compressed model scores better than the dense one on ${path.basename(perplexity.dense.text)} (${perplexity.compressed.perplexity.toFixed(2)} < ${perplexity.dense.perplexity.toFixed(2)}): the evaluation text may not match the model's domain — pass an evaluation text like the model's training data`);
  }
  job.timings.evaluate = (performance.now() - t) / 1000;

  // Each baseline: the rotated dense model with every compressed layer replaced by the
  // baseline's weights, the same activation/KV quantization, the same windows. Built like the
  // simulated model, block by block from the checkpoint (weights to the working store), not written.
  const tb = performance.now();
  for (let k = 0; k < baselines.length; k++) {
    throwIfAborted(signal);
    const recipe = baselines[k]!;
    let model = rot.baseProto;
    for (const block of blocks) {
      const saved = await checkpoint.loadBlock(block.id);
      model = await working.withWeights(model, new Map(saved.map((st) => [st.report.name, st.baselines![k]!.weight])));
    }
    const sim = options.abits < 16 || options.kvbits < 16 ? withFakeQuant(model, { abits: options.abits, kvbits: options.kvbits }).model : model;
    const r = await evaluate(sim, evalWin.count * (2 + k), recipe, 'baseline', working.store);
    baselinePerplexity.set(recipe, r);
    job.log('info', `baseline ${recipe}: perplexity ${r.perplexity.toFixed(3)}`);
  }
  if (baselines.length) job.timings.baselines = (job.timings.baselines ?? 0) + (performance.now() - tb) / 1000;

  let sensitivity: CompressionReport['sensitivity'];
  if (extra.sensitivity) {
    t = performance.now();
    const sw = evaluationWindows(tokenizer.encode(evalText.text), seqlen, { maxWindows: extra.sensitivityWindows ?? DEFAULT_SENSITIVITY_WINDOWS, spread: true });
    // Sensitivity runs whole-model sessions: the dense graph inline and every compressed weight in memory.
    const weights = new Map<string, Float64Array>();
    for (const block of blocks) for (const st of await checkpoint.loadBlock(block.id)) weights.set(st.report.name, st.weight);
    const dense = await working.inlined(rot.baseProto);
    sensitivity = await layerSensitivity(
      dense.model,
      working.layers,
      layers.map((l) => ({ name: l.name, weight: weights.get(l.name)! })),
      sw,
      { executionProviders: eps, batch, signal, onLayer: (done, n, name) => job.progress.report('evaluate', done, n, `sensitivity ${name}`, 0.98) },
    ).finally(() => working.releaseInline(dense.bytes));
    job.timings.sensitivity = (performance.now() - t) / 1000;
  }
  throwIfAborted(signal);
  return { perplexity, baselinePerplexity, sensitivity };
}
