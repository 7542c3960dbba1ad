// The model's tokenizer: a Hugging Face `tokenizer.json` beside the .onnx file, run with
// @huggingface/tokenizers (pure JS). Text is encoded without special tokens, as the calibration
// and evaluation protocols of §1.4/§1.11 tokenize one long joined string.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

export type TokenizerErrorCode = 'missing' | 'unreadable' | 'unsupported' | 'vocab-mismatch';

/** The tokenizer beside a model is missing or can't be used. */
export class TokenizerError extends Error {
  override name = 'TokenizerError';
  constructor(
    readonly code: TokenizerErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface TextTokenizer {
  /** The tokenizer.json that was loaded. */
  path: string;
  /** sha256 of tokenizer.json, part of a job's identity (resume) and of the report. */
  sha256: string;
  /** Size of the vocabulary including added tokens. */
  vocabSize: number;
  encode(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
}

/** Model types of tokenizer.json that @huggingface/tokenizers 0.2 implements. */
const SUPPORTED_MODELS = new Set(['BPE', 'WordPiece', 'Unigram']);

/**
 * Folders searched for tokenizer.json: the model's folder, then (for outputs such as
 * `model.obr-gptq-….onnx` written with --out elsewhere) nothing else — callers pass the source
 * model's folder explicitly when they know it.
 */
export function tokenizerPathFor(modelPath: string): string {
  return path.join(path.dirname(path.resolve(modelPath)), 'tokenizer.json');
}

/** Loads the tokenizer beside `modelPath` (or the tokenizer.json given directly). */
/**
 * Refuses a tokenizer whose ids don't fit the model: an id ≥ the model's vocabulary would index
 * past its embedding table (onnxruntime fails deep inside, or silently reads garbage).
 */
export function checkTokenizerFits(tokenizer: TextTokenizer, modelVocabulary: number | undefined, ...tokens: Int32Array[]): void {
  if (!modelVocabulary) return;
  let maxId = -1;
  for (const t of tokens) for (let i = 0; i < t.length; i++) if (t[i]! > maxId) maxId = t[i]!;
  if (maxId < modelVocabulary) return;
  throw new TokenizerError(
    'vocab-mismatch',
    `the tokenizer ${path.basename(tokenizer.path)} has ${tokenizer.vocabSize} tokens (this text uses ids up to ${maxId}) but the model's vocabulary has ${modelVocabulary} entries: the tokenizer does not belong to this model — put the model's own tokenizer.json beside it`,
  );
}

/**
 * The first tokens of `text` — at least `needed` of them when the text has that many — without
 * tokenizing all of it: growing prefixes cut at a line break, until the prefix yields `needed`
 * tokens plus a margin. Tokenizers split words at whitespace, so the tokens well before the cut
 * equal those of the whole text; the margin keeps the cut's neighbourhood out of what is used.
 * (A large tokenizer in JavaScript encodes a few KB per second; evaluation on K windows needs only
 * K·seqlen tokens of a 1.3 MB WikiText-2 split.) Returns all tokens when `needed` is undefined.
 */
export function encodePrefix(tokenizer: TextTokenizer, text: string, needed: number | undefined): Int32Array {
  if (needed === undefined) return tokenizer.encode(text);
  const margin = 256;
  let chars = Math.max(4096, (needed + margin) * 8);
  for (;;) {
    if (chars >= text.length) return tokenizer.encode(text);
    const cut = text.lastIndexOf('\n', chars);
    const prefix = text.slice(0, cut > chars / 2 ? cut : chars);
    const ids = tokenizer.encode(prefix);
    if (ids.length >= needed + margin) return ids.subarray(0, ids.length - margin);
    chars *= 2;
  }
}

export async function loadTokenizer(modelOrTokenizerPath: string): Promise<TextTokenizer> {
  const file = modelOrTokenizerPath.endsWith('.json') ? path.resolve(modelOrTokenizerPath) : tokenizerPathFor(modelOrTokenizerPath);
  if (!existsSync(file)) {
    throw new TokenizerError(
      'missing',
      `no tokenizer.json beside the model (looked for ${file}). Copy the model's Hugging Face tokenizer.json into that folder.`,
    );
  }
  let bytes: Buffer;
  let json: { model?: { type?: string; vocab?: unknown }; added_tokens?: Array<{ id: number }> };
  try {
    bytes = await readFile(file);
    json = JSON.parse(bytes.toString('utf8')) as typeof json;
  } catch (e) {
    throw new TokenizerError('unreadable', `${file} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  const type = json.model?.type ?? (json.model?.vocab && typeof json.model.vocab === 'object' ? 'BPE' : undefined);
  if (!type || !SUPPORTED_MODELS.has(type)) {
    throw new TokenizerError(
      'unsupported',
      `${file}: tokenizer model type "${type ?? 'unknown'}" is not supported (supported: ${[...SUPPORTED_MODELS].join(', ')}). ` +
        'Export the tokenizer in Hugging Face tokenizers format (tokenizer.json).',
    );
  }
  let config: object = {};
  const configPath = path.join(path.dirname(file), 'tokenizer_config.json');
  if (existsSync(configPath)) {
    try {
      config = JSON.parse(readFileSync(configPath, 'utf8')) as object;
    } catch {
      config = {};
    }
  }
  // The package is ESM-first; a dynamic import keeps this CommonJS module loadable by tsx,
  // node and the esbuild bundles alike.
  const { Tokenizer } = await import('@huggingface/tokenizers');
  let tok: InstanceType<typeof Tokenizer>;
  try {
    tok = new Tokenizer(json, config);
  } catch (e) {
    throw new TokenizerError('unsupported', `${file} could not be loaded: ${(e as Error).message}`, { cause: e });
  }
  const vocab = json.model?.vocab;
  let vocabSize = Array.isArray(vocab) ? vocab.length : vocab && typeof vocab === 'object' ? Object.keys(vocab).length : 0;
  for (const t of json.added_tokens ?? []) vocabSize = Math.max(vocabSize, t.id + 1);
  return {
    path: file,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    vocabSize,
    encode(text: string): Int32Array {
      return Int32Array.from(tok.encode(text, { add_special_tokens: false }).ids);
    },
    decode(ids: ArrayLike<number>): string {
      return tok.decode(Array.from(ids));
    },
  };
}
