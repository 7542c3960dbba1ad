// Markdown rendering of a benchmark result (pure: the same text from the CLI and the worker).
import type { BenchResult, RecipeRun, Stat } from '../../protocol/bench';

function mb(bytes: number | undefined): string {
  return bytes === undefined ? '–' : `${(bytes / 2 ** 20).toFixed(2)} MiB`;
}

function f(x: number | undefined, digits = 3): string {
  return x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits);
}

/** "median (min–max, n=5)" in the unit given. */
function stat(s: Stat | undefined, digits = 2, unit = ''): string {
  if (!s || s.n === 0) return '–';
  return `${s.median.toFixed(digits)}${unit} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)}, n=${s.n})`;
}

function ratio(x: number | undefined, digits = 2): string {
  return x === undefined || !Number.isFinite(x) || x === 0 ? '–' : `${x.toFixed(digits)}×`;
}

function runLabel(r: RecipeRun): string {
  return `${r.recipe} W${r.wbits}${r.abits < 16 ? `A${r.abits}` : ''}${r.kvbits < 16 ? `KV${r.kvbits}` : ''} s=${r.sparsity}`;
}

export function renderMarkdown(r: BenchResult, opts: { title?: string; command?: string } = {}): string {
  const m = r.machine;
  const L: string[] = [];
  L.push(`# ${opts.title ?? 'OBR Studio benchmarks'}`, '');
  const command = opts.command ?? r.spec.command;
  if (command) L.push(`Produced by \`${command}\` on ${r.createdAt}.`, '');
  else L.push(`Run on ${r.createdAt}.`, '');
  const cfg = r.model.config ?? {};
  L.push(
    `- **Model**: \`${r.model.path}\` (${mb(r.model.bytes)}${r.model.label ? `, bundled ${r.model.label}` : ''}${cfg.hidden_size ? `, hidden ${String(cfg.hidden_size)}, ${String(cfg.num_hidden_layers)} layers, vocab ${String(cfg.vocab_size)}` : ''}), sha256 ${r.model.sha256.slice(0, 12)}…`,
    `- **Machine**: ${m.cpuModel}, ${m.cores} cores, ${(m.memoryBytes / 2 ** 30).toFixed(1)} GiB, ${m.platform}/${m.arch}; Node ${m.node}, onnxruntime-node ${m.onnxruntime}; execution provider **${m.executionProvider}**`,
    `- **Load average** (1/5/15 min): ${m.loadAverageStart.join(' / ')} at the start, ${m.loadAverageEnd.join(' / ')} at the end`,
    `- **Spec**: suites ${r.spec.suites.join(', ')}; sparsity ${r.spec.sparsity}; W${r.spec.wbits.join('/')}${r.spec.abits < 16 ? ` A${r.spec.abits}` : ''}${r.spec.kvbits < 16 ? ` KV${r.spec.kvbits}` : ''}; ${r.spec.samples} calibration windows; ${r.spec.evalWindows} evaluation windows; warm-up ${r.spec.warmup}, ${r.spec.reps} reps (runtime), ${r.spec.compressReps} rep(s) per compression; seed ${r.spec.seed}`,
    `- **Wall time**: ${Object.entries(r.seconds).map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(', ')}`,
    '',
  );
  for (const n of r.notes) L.push(`> ${n}`, '');

  if (r.quality) {
    const q = r.quality;
    L.push('## Quality (perplexity)', '');
    L.push(`Perplexity on the first ${q.dense.windows} windows × ${q.dense.seqlen} tokens of \`${q.evalText}\` (WikiText-2 protocol); lower is better.`, '');
    L.push('| recipe | perplexity | × dense | measured sparsity | mean relative layer loss |', '|---|---|---|---|---|');
    L.push(`| dense | ${f(q.dense.perplexity)} | 1.00× | 0 | – |`);
    for (const run of q.runs) {
      const p = run.perplexity?.perplexity;
      L.push(`| ${runLabel(run)} | ${f(p)} | ${ratio(p !== undefined ? p / q.dense.perplexity : undefined)} | ${f(run.measuredSparsity, 3)} | ${run.meanRelativeLoss.toExponential(3)} |`);
    }
    const bits = `${r.spec.abits < 16 ? `A${r.spec.abits}` : ''}${r.spec.kvbits < 16 ? `KV${r.spec.kvbits}` : ''}`;
    for (const x of q.obrVsSparseGpt ?? []) L.push('', `**OBR vs SparseGPT+GPTQ** (W${x.wbits}${bits}, sparsity ${r.spec.sparsity}): perplexity ratio obr-gptq / sparsegpt-gptq = ${x.ratio.toFixed(4)} (${x.ratio < 1 ? 'OBR better' : 'OBR not better'}).`);
    L.push('');
  }

  if (r.speed) {
    L.push('## Compression speed', '');
    L.push(`End to end = load + (rotate) + calibrate + compress + write of \`runCompression\`, without perplexity. Per layer = the core's compressLayer time. Execution provider for calibration: ${r.speed.runs[0]?.executionProvider ?? '–'}.`, '');
    L.push('Peak RSS: of the benchmarking process while that compression ran (Linux high-water mark reset before each); memory freed by earlier compressions is reused, so compare peaks, not growth.', '');
    L.push('| recipe | end to end s | calibrate s | compress s | per layer s (median, min–max) | layers | peak RSS |', '|---|---|---|---|---|---|---|');
    for (const run of r.speed.runs) {
      const s = run.seconds;
      L.push(
        `| ${runLabel(run)} | ${stat(s?.endToEnd)} | ${f(s?.calibrate, 2)} | ${f(s?.compress, 2)} | ${stat(s?.perLayer, 3)} | ${run.layers} | ${mb(run.memory?.peakRssBytes)} |`,
      );
    }
    const roles = [...new Set(r.speed.runs.flatMap((x) => Object.keys(x.seconds?.perRole ?? {})))];
    if (roles.length) {
      L.push('', `Median seconds per layer by role:`, '', `| recipe | ${roles.join(' | ')} |`, `|---|${roles.map(() => '---').join('|')}|`);
      for (const run of r.speed.runs) L.push(`| ${run.recipe} W${run.wbits} | ${roles.map((role) => f(run.seconds?.perRole[role], 3)).join(' | ')} |`);
    }
    L.push('');
  }

  if (r.runtime) {
    const rt = r.runtime;
    L.push('## Runtime: dense vs packed (MatMulNBits) in onnxruntime-node', '');
    L.push(`Packed weights: ${rt.recipe} W${rt.wbits} s=${rt.sparsity}${rt.groupSize ? ` g${rt.groupSize}` : ''}${rt.asymmetric ? ' asymmetric' : ''} (weight-only). Prefill = one forward over a ${rt.promptTokens}-token prompt without cache; decode = greedy generation of ${rt.decodeTokens} tokens with the KV-cache model after that prompt. Times: median (min–max, n).`, '');
    L.push('| | dense | packed | dense / packed |', '|---|---|---|---|');
    const d = rt.dense;
    const p = rt.packed;
    L.push(`| file size (model) | ${mb(d.fileBytes)} | ${mb(p?.fileBytes)} | ${ratio(p ? d.fileBytes / p.fileBytes : undefined)} |`);
    L.push(`| file size (KV-cache model) | ${mb(d.pastFileBytes)} | ${mb(p?.pastFileBytes)} | ${ratio(p?.pastFileBytes && d.pastFileBytes ? d.pastFileBytes / p.pastFileBytes : undefined)} |`);
    L.push(`| ops | ${JSON.stringify(d.ops)} | ${p ? JSON.stringify(p.ops) : '–'} | |`);
    L.push(`| session load ms | ${stat(d.loadMs, 1)} | ${stat(p?.loadMs, 1)} | ${ratio(rt.ratios?.load)} |`);
    L.push(`| prefill ms (${rt.promptTokens} tokens) | ${stat(d.prefillMs, 1)} | ${stat(p?.prefillMs, 1)} | ${ratio(rt.ratios?.prefill)} |`);
    L.push(`| prefill tokens/s | ${f(d.prefillTokensPerSecond, 0)} | ${f(p?.prefillTokensPerSecond, 0)} | |`);
    L.push(`| decode ms/token | ${stat(d.decodeMsPerToken, 2)} | ${stat(p?.decodeMsPerToken, 2)} | ${ratio(rt.ratios?.decode)} |`);
    L.push(`| decode tokens/s | ${f(d.decodeTokensPerSecond, 1)} | ${f(p?.decodeTokensPerSecond, 1)} | |`);
    L.push(`| KV cache check: tokens, final cache length | ${d.decodeCheck ? `${d.decodeCheck.generated}, ${d.decodeCheck.finalPastLength}` : '–'} | ${p?.decodeCheck ? `${p.decodeCheck.generated}, ${p.decodeCheck.finalPastLength}` : '–'} | |`);
    L.push(`| cached vs full forward, max abs logit diff | ${d.cacheConsistencyMaxAbs ?? '–'} | ${p?.cacheConsistencyMaxAbs ?? '–'} | |`);
    L.push(`| packed vs simulated model, max abs logit diff | | ${rt.packedVsSimulatedMaxAbs ?? '–'} | |`);
    L.push(`| peak RSS of the measuring process (above its start) | ${mb(d.memory.peakRssBytes)} (${mb(d.memory.peakRssBytes - d.memory.baseRssBytes)}) | ${p ? `${mb(p.memory.peakRssBytes)} (${mb(p.memory.peakRssBytes - p.memory.baseRssBytes)})` : '–'} | ${ratio(p ? (d.memory.peakRssBytes - d.memory.baseRssBytes) / (p.memory.peakRssBytes - p.memory.baseRssBytes) : undefined)} |`);
    L.push('');
    L.push(`**Sparsity and speed.** ${rt.sparsityNote}`, '');
    const s = rt.sparseStorage;
    if (s) {
      L.push(
        `Compressed linear layers: ${s.params.toLocaleString('en-US')} weights, ${s.nonzeros.toLocaleString('en-US')} non-zero (${((1 - s.nonzeros / s.params) * 100).toFixed(1)}% zeros); rest of the model ${mb(s.restBytes)}.`,
        '',
        '| storage of the linear weights | bytes | whole model |',
        '|---|---|---|',
        `| fp32 dense | ${mb(s.denseFp32Bytes)} | ${mb(s.restBytes + s.denseFp32Bytes)} |`,
        `| ${s.wbits}-bit dense codes + row scales (what packing stores) | ${mb(s.denseIntBytes)} | ${mb(s.restBytes + s.denseIntBytes)} |`,
        `| bitmap (1 bit/weight) + ${s.wbits}-bit non-zeros | ${mb(s.bitmapBytes)} | ${mb(s.modelBytesBitmap)} |`,
        `| 2:4 semi-structured (${s.wbits}-bit values + 2-bit index per kept value) | ${mb(s.twoFourBytes)} | ${mb(s.modelBytesTwoFour)} |`,
        `| CSR (${s.wbits}-bit values + 16-bit column index) | ${mb(s.csrBytes)} | ${mb(s.restBytes + s.csrBytes)} |`,
        '',
      );
    }
  }

  if (r.core) {
    L.push('## Core kernels', '');
    L.push(`compressLayer on seeded synthetic layers (rows = cols), ${r.spec.threads ?? 'default'} compensation threads. GFLOP/s from the ${r.core.flopModel}.`, '');
    L.push('| method | rows × cols | seconds (median, min–max) | GFLOP/s | relative loss |', '|---|---|---|---|---|');
    for (const p of r.core.points) L.push(`| ${p.method} | ${p.rows} × ${p.cols} | ${stat(p.seconds, 3)} | ${f(p.gflops, 2)} | ${Number.isFinite(p.relativeLoss) ? p.relativeLoss.toExponential(3) : '–'} |`);
    L.push('');
  }

  if (r.warnings.length) {
    L.push('## Warnings', '');
    for (const w of [...new Set(r.warnings)]) L.push(`- ${w}`);
    L.push('');
  }
  L.push(`Full results: \`${r.outputs.json}\`; history: \`${r.outputs.history}\`.`, '');
  return L.join('\n');
}
