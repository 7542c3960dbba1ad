// Files shipped with OBR Studio (media/): calibration and evaluation texts, the demo models.
// Found by walking up from this module, which works for the sources (src/pipeline), the esbuild
// bundles (dist/) and the packaged extension alike.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

export function mediaPath(...parts: string[]): string | undefined {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    const p = path.join(dir, 'media', ...parts);
    if (existsSync(p)) return p;
    dir = path.dirname(dir);
  }
  return undefined;
}

/** The repository / extension root (the folder holding media/), when found. */
export function packageRoot(): string | undefined {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'media'))) return dir;
    dir = path.dirname(dir);
  }
  return undefined;
}

export const BUNDLED_CALIBRATION_TEXT = 'sotu-calib.txt';
export const BUNDLED_EVALUATION_TEXT = 'sotu-test.txt';

/** WikiText-2 (raw) test split, the paper's evaluation text (CC BY-SA 3.0, see media/text/README.md). */
export const WIKITEXT2_TEST_TEXT = 'wikitext-2-test.raw';

/** Whether a model is one of ours (media/models, test fixtures): its config.json carries "obr_studio". */
export function isBundledModel(modelPath: string): boolean {
  const config = path.join(path.dirname(path.resolve(modelPath)), 'config.json');
  if (!existsSync(config)) return false;
  try {
    return typeof (JSON.parse(readFileSync(config, 'utf8')) as Record<string, unknown>).obr_studio === 'object';
  } catch {
    return false;
  }
}

/**
 * The evaluation text when none is given: our bundled models are trained on State of the Union
 * addresses and evaluated on the held-out SOTU split; any other model on the WikiText-2 test split
 * (the paper's protocol) — a SOTU score says little about a model trained on something else.
 */
export function defaultEvaluationText(modelPath: string): string {
  return bundledText(isBundledModel(modelPath) ? BUNDLED_EVALUATION_TEXT : WIKITEXT2_TEST_TEXT);
}

export function bundledText(name: string): string {
  const p = mediaPath('text', name);
  if (!p) throw new Error(`bundled text media/text/${name} is missing from this installation`);
  return p;
}
