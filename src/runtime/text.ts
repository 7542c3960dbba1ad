// Text files and the token windows cut from them.
// - Calibration (§1.4): N windows of `seqlen` tokens at seeded random offsets into the whole
//   tokenized text (the official code: random.seed(0); i = randint(0, numel − seqlen − 1)).
// - Evaluation (§1.11, WikiText-2 protocol): numel // seqlen non-overlapping windows, the
//   remainder dropped; perplexity = exp(mean NLL over the seqlen − 1 shifted targets of each).
// Documents are used as the file joins them (our bundled texts join documents with "\n\n").
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { seededRandom } from '../core/random';

export type TextInputErrorCode = 'missing' | 'empty' | 'too-short' | 'bad-option';

/** A text file can't be used for calibration or evaluation. */
export class TextInputError extends Error {
  override name = 'TextInputError';
  constructor(
    readonly code: TextInputErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface LoadedText {
  path: string;
  text: string;
  sha256: string;
  bytes: number;
}

export async function readText(file: string): Promise<LoadedText> {
  let buf: Buffer;
  try {
    const s = await stat(file);
    if (!s.isFile()) throw new Error('not a file');
    buf = await readFile(file);
  } catch {
    throw new TextInputError('missing', `text file not found: ${file}`);
  }
  const text = buf.toString('utf8');
  if (text.trim().length === 0) throw new TextInputError('empty', `text file is empty: ${file}`);
  return { path: file, text, sha256: createHash('sha256').update(buf).digest('hex'), bytes: buf.length };
}

/** Windows of token ids, flat row-major [count, seqlen]. */
export interface TokenWindows {
  ids: Int32Array;
  count: number;
  seqlen: number;
  /** Start offset of each window in the token stream. */
  offsets: number[];
}

export function window(w: TokenWindows, i: number): Int32Array {
  return w.ids.subarray(i * w.seqlen, (i + 1) * w.seqlen);
}

function checkSeqlen(seqlen: number): void {
  if (!Number.isInteger(seqlen) || seqlen < 2) throw new TextInputError('bad-option', `sequence length must be an integer ≥ 2 (got ${seqlen})`);
}

/** Calibration windows at offsets drawn with seededRandom(seed) (mulberry32), as §1.4 (with its own PRNG). */
export function calibrationWindows(tokens: Int32Array, samples: number, seqlen: number, seed = 0, source = 'calibration text'): TokenWindows {
  checkSeqlen(seqlen);
  if (!Number.isInteger(samples) || samples < 1) throw new TextInputError('bad-option', `samples must be a positive integer (got ${samples})`);
  if (tokens.length < seqlen) {
    throw new TextInputError(
      'too-short',
      `${source} has ${tokens.length} tokens, shorter than one window of ${seqlen}; use a longer text or a smaller --seqlen`,
    );
  }
  const rand = seededRandom(seed);
  const span = tokens.length - seqlen + 1; // possible start offsets 0 … numel − seqlen
  const ids = new Int32Array(samples * seqlen);
  const offsets: number[] = [];
  for (let i = 0; i < samples; i++) {
    const start = Math.floor(rand() * span);
    offsets.push(start);
    ids.set(tokens.subarray(start, start + seqlen), i * seqlen);
  }
  return { ids, count: samples, seqlen, offsets };
}

/**
 * Evaluation windows (WikiText-2 protocol): numel // seqlen non-overlapping windows. With
 * `maxWindows`, the first K (deterministic, comparable between runs); with `spread`, K windows
 * evenly spaced over the text (used for per-layer sensitivity).
 */
export function evaluationWindows(
  tokens: Int32Array,
  seqlen: number,
  opts: { maxWindows?: number; spread?: boolean; source?: string } = {},
): TokenWindows {
  checkSeqlen(seqlen);
  const total = Math.floor(tokens.length / seqlen);
  if (total === 0) {
    throw new TextInputError(
      'too-short',
      `${opts.source ?? 'evaluation text'} has ${tokens.length} tokens, shorter than one window of ${seqlen}; use a longer text or a smaller --seqlen`,
    );
  }
  const k = opts.maxWindows !== undefined && opts.maxWindows > 0 ? Math.min(total, Math.floor(opts.maxWindows)) : total;
  const picks: number[] = [];
  for (let i = 0; i < k; i++) picks.push(opts.spread && k < total ? Math.floor((i * total) / k) : i);
  const ids = new Int32Array(k * seqlen);
  const offsets: number[] = [];
  picks.forEach((w, i) => {
    offsets.push(w * seqlen);
    ids.set(tokens.subarray(w * seqlen, (w + 1) * seqlen), i * seqlen);
  });
  return { ids, count: k, seqlen, offsets };
}
