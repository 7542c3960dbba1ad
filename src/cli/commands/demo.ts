// `obr demo`: compresses the bundled small model with the default recipe and prints the
// perplexity table and output paths. Outputs go to .cache/demo/ (git-ignored), never into media/.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { mediaPath, packageRoot } from '../../pipeline/assets';
import type { CliCommand } from '../command';
import { COMPRESS_FLAGS, compressOptionsFromFlags, runCompressCli } from './compress';

/** The model the demo compresses: the bundled small model, else the tiny test model. */
export function demoModel(): { model: string; note?: string } | undefined {
  const small = mediaPath('models', 'small', 'model.onnx');
  if (small) return { model: small };
  const root = packageRoot();
  const tiny = root && path.join(root, 'test', 'fixtures', 'models', 'tiny', 'model.onnx');
  if (tiny && existsSync(tiny)) {
    return { model: tiny, note: 'note: the bundled small model (media/models/small) is not in this build; the demo uses the tiny test model instead.' };
  }
  return undefined;
}

export const demoCommand: CliCommand = {
  name: 'demo',
  summary: 'compress the bundled small model with the default recipe and show the perplexities',
  usage:
    'obr demo [any `obr compress` flag, e.g. --recipe obr-rtn --samples 32]\n\n' +
    '  Defaults for a quick run: --samples 32 --eval-windows 128; outputs in .cache/demo/.',
  async run(argv) {
    const { values } = parseArgs({ args: argv, allowPositionals: false, options: COMPRESS_FLAGS });
    const found = demoModel();
    if (!found) {
      console.error('obr demo: no bundled model found (media/models/small/model.onnx or test/fixtures/models/tiny/model.onnx)');
      return 1;
    }
    const root = packageRoot() ?? process.cwd();
    const flags = { samples: '32', 'eval-windows': '128', out: path.join(root, '.cache', 'demo'), ...values };
    const { options, extra } = compressOptionsFromFlags(flags);
    console.error(`demo: compressing ${path.relative(process.cwd(), found.model) || found.model} with ${options.recipe} → ${options.outDir}`);
    if (found.note) console.error(found.note);
    return runCompressCli(found.model, options, extra, { yes: !!values.yes, json: !!values.json, note: found.note });
  },
};
