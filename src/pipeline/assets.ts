// Files shipped with OBR Studio (media/): calibration and evaluation texts, the demo models.
// Found by walking up from this module, which works for the sources (src/pipeline), the esbuild
// bundles (dist/) and the packaged extension alike.
import { existsSync } from 'node:fs';
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

export function bundledText(name: string): string {
  const p = mediaPath('text', name);
  if (!p) throw new Error(`bundled text media/text/${name} is missing from this installation`);
  return p;
}
