// One job of the scale benchmark (scripts/bench/scale.ts), in its own process so that its peak RSS
// (/usr/bin/time) is the job's: the pre-flight estimate (probes on this machine), then the job with
// the estimate stored beside the actual timings, on the blocks given (the pipeline's onlyBlocks).
// Prints one line of JSON: the report's path and what the pre-flight said.
//
// Usage: node --import tsx scripts/bench/scaleJob.ts MODEL OUTDIR --recipe obr-gptq --samples 8
//          --seqlen 512 --eval-windows 2 [--only 0,1] [--threads N] [--abits 16 --kvbits 16] [--no-eval]
//          [--ep webgpu,cpu (execution providers in order of preference; default cpu)]
import { parseArgs } from 'node:util';
import { runCompression } from '../../src/pipeline/compress';
import { estimateCompression, stageEstimate } from '../../src/pipeline/preflight';
import { DEFAULT_OPTIONS, type CompressOptions, type RecipeName } from '../../src/protocol/recipes';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    recipe: { type: 'string', default: 'obr-gptq' },
    samples: { type: 'string', default: '8' },
    seqlen: { type: 'string', default: '512' },
    'eval-windows': { type: 'string', default: '2' },
    only: { type: 'string' },
    abits: { type: 'string' },
    kvbits: { type: 'string' },
    /** Skip perplexity (the job's evalText null). */
    'no-eval': { type: 'boolean' },
    threads: { type: 'string' },
    ep: { type: 'string', default: 'cpu' },
  },
});

async function main(): Promise<void> {
  const [model, outDir] = positionals as [string, string];
  const options: CompressOptions = {
    ...DEFAULT_OPTIONS,
    recipe: values.recipe as RecipeName,
    samples: Number(values.samples),
    seqlen: Number(values.seqlen),
    ...(values.abits ? { abits: Number(values.abits) } : {}),
    ...(values.kvbits ? { kvbits: Number(values.kvbits) } : {}),
    executionProviders: values.ep!.split(',') as CompressOptions['executionProviders'],
    outDir,
  };
  const onlyBlocks = values.only ? values.only.split(',').map(Number) : undefined;
  const evalWindows = Number(values['eval-windows']);
  const threads = values.threads ? Number(values.threads) : undefined;
  const started = performance.now();
  const noEval = !!values['no-eval'];
  const pre = await estimateCompression(model, options, { evalWindows, onlyBlocks, threads, ...(noEval ? { evaluate: false } : {}) });
  const preflightSeconds = (performance.now() - started) / 1000;
  for (const n of pre.notes) console.error(`pre-flight: ${n}`);
  console.error(`pre-flight estimate (${preflightSeconds.toFixed(0)} s of probes): ${JSON.stringify(stageEstimate(pre))}`);
  // The probe measurements the estimate was computed from (recorded for the estimate's unit test).
  console.error(`pre-flight inputs: ${JSON.stringify(pre.inputs ?? null)}`);
  console.error(`pre-flight peak memory estimate: ${pre.peakBytes} bytes`);
  const t0 = performance.now();
  const at = () => ((performance.now() - t0) / 1000).toFixed(2);
  let last = 0;
  let lastStage = '';
  const report = await runCompression(
    model,
    options,
    {
      log: (level, m) => console.error(`${level}: ${m}`),
      // Every layer's end and every batch-level progress event, with the job's clock: where the
      // time of each stage goes (per forward, per layer), for checking the estimate's formulas.
      onLayer: (l) => console.error(`trace t=${at()} layer ${l.name} ${l.rows}x${l.cols} core ${l.seconds.toFixed(2)} s`),
      onProgress: (e) => {
        if (e.stage !== lastStage || /windows|perplexity|block|layer/.test(e.message ?? '')) console.error(`trace t=${at()} ${e.stage} ${e.done}/${e.total} ${e.message ?? ''}`);
        lastStage = e.stage;
        const now = performance.now();
        if (now - last < 15_000) return;
        last = now;
        console.error(`${new Date().toISOString().slice(11, 19)} ${e.stage} ${e.done}/${e.total} ${e.message ?? ''}`);
      },
    },
    { evalWindows, onlyBlocks, threads, estimate: stageEstimate(pre), ...(noEval ? { evalText: null } : {}) },
  );
  console.log(JSON.stringify({ report: report.outputs.report, preflightSeconds, preflight: { seconds: pre.seconds, peakBytes: pre.peakBytes, outputBytes: pre.outputBytes, notes: pre.notes, inputs: pre.inputs } }));
}

void main().catch((e) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exitCode = 1;
});
