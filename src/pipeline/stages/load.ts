// Stage 1, load: the model (its working copy: weights stay on disk, src/pipeline/working.ts), its tokenizer, the
// calibration and evaluation windows, and the job key that identifies a resumable checkpoint.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { stat } from 'node:fs/promises';
import { loadModel, type LoadedModel } from '../../onnx/load';
import { modelVocabulary } from '../../onnx/vocab';
import { decoderView } from '../../onnx/merged';
import { refuseQuantized } from '../../onnx/quantized';
import { OptionError } from '../../protocol/recipes';
import { REPORT_SCHEMA_VERSION } from '../../protocol/report';
import { calibrationWindows, evaluationWindows, readText, type LoadedText, type TokenWindows } from '../../runtime/text';
import { checkTokenizerFits, encodePrefix, loadTokenizer, type TextTokenizer } from '../../runtime/tokenizer';
import { BUNDLED_CALIBRATION_TEXT, bundledText, defaultEvaluationText } from '../assets';
import { checkSeqlen, contextLength } from '../evaluate';
import { checkGroupSizeFits, numericOptions, TOOL_VERSION, type Job } from '../job';
import { WorkingModel, WORKING_DATA_FILE } from '../working';

export interface LoadedJob {
  loaded: LoadedModel;
  working: WorkingModel;
  tokenizer: TextTokenizer;
  seqlen: number;
  calibText: LoadedText;
  calib: TokenWindows;
  /** Absent when the job skips perplexity. */
  evalText?: LoadedText;
  evalWindows?: TokenWindows;
  sourceSha: string;
  sourceBytes: number;
  jobKey: string;
}

/** sha256 of a file, streamed. */
export function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (d) => h.update(d))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

export async function loadStage(job: Job): Promise<LoadedJob> {
  const { options, extra, source } = job;
  const t = performance.now();
  job.progress.report('load', 0, 3, 'reading the model');
  // A merged decoder is compressed through its no-past branch; the write stage merges again.
  const loaded = decoderView(await loadModel(source));
  try {
    refuseQuantized(loaded.model);
    const tokenizer = await loadTokenizer(source);
    const calibFile = options.calibText ?? bundledText(BUNDLED_CALIBRATION_TEXT);
    const calibText = await readText(calibFile);
    const seqlen = options.seqlen ?? contextLength(source);
    checkSeqlen(loaded.model, source, seqlen);
    const calibIds = tokenizer.encode(calibText.text);
    checkTokenizerFits(tokenizer, modelVocabulary(loaded.model), calibIds);
    const calib = calibrationWindows(calibIds, options.samples, seqlen, options.seed, calibFile);
    job.progress.report('load', 1, 3, 'tokenized the calibration text');
    let evalText: LoadedText | undefined;
    let evalWin: TokenWindows | undefined;
    if (extra.evalText !== null) {
      const evalFile = extra.evalText ?? defaultEvaluationText(source);
      evalText = await readText(evalFile);
      const evalIds = encodePrefix(tokenizer, evalText.text, extra.evalWindows !== undefined ? extra.evalWindows * seqlen : undefined);
      checkTokenizerFits(tokenizer, modelVocabulary(loaded.model), evalIds);
      evalWin = evaluationWindows(evalIds, seqlen, { maxWindows: extra.evalWindows, source: evalFile });
    }
    const sourceSha = await sha256File(source);
    const sourceBytes = (await stat(source)).size;
    // Weights stay on disk: changed ones go to the working data file in the job's working folder.
    const working = WorkingModel.open(loaded, path.join(job.paths.partialDir, WORKING_DATA_FILE));
    const { layers: compressible, skipped } = working.compressible();
    for (const s of skipped) job.warnings.push(`${s.layer.name} is left dense: ${s.why}`);
    if (compressible.length === 0) {
      throw new OptionError('found no decoder-block projections (q/k/v/o/gate/up/down) to compress in this model; run `obr inspect` to see what was found');
    }
    checkGroupSizeFits(options.groupSize, compressible.filter((l) => !extra.onlyBlocks || extra.onlyBlocks.includes(l.block ?? -1)));
    const externalSizes = loaded.initializerNames().flatMap((n) => {
      const e = loaded.initializerInfo(n)?.external;
      return e ? [`${e.location}:${e.offset}:${e.length}`] : [];
    });
    const { baselines } = job;
    const jobKey = createHash('sha256')
      .update(JSON.stringify({ schema: REPORT_SCHEMA_VERSION, tool: TOOL_VERSION, sourceSha, externalSizes, tokenizer: tokenizer.sha256, calib: calibText.sha256, options: numericOptions(options, seqlen), onlyBlocks: extra.onlyBlocks ?? null, ...(baselines.length ? { baselines } : {}) }))
      .digest('hex');
    job.timings.load = (performance.now() - t) / 1000;
    job.progress.report('load', 3, 3, `${compressible.length} layers to compress`);
    return { loaded, working, tokenizer, seqlen, calibText, calib, evalText, evalWindows: evalWin, sourceSha, sourceBytes, jobKey };
  } catch (e) {
    await loaded.close();
    throw e;
  }
}
