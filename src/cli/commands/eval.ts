// `obr eval MODEL.onnx --text FILE`: perplexity on the WikiText-2 protocol (§1.11).
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { evaluateModel } from '../../pipeline/evaluate';
import { describeProviders } from '../../runtime/providers';
import { type CliCommand, UsageError } from '../command';
import { parseEpList, parsePositiveInt } from './compress';

export const evalCommand: CliCommand = {
  name: 'eval',
  summary: 'perplexity of a model on a text (WikiText-2 protocol)',
  usage:
    'obr eval MODEL.onnx --text FILE.txt [--seqlen N] [--max-windows K] [--batch B] [--ep cpu|cuda|…] [--json]\n\n' +
    '  Perplexity = exp(mean token NLL) over numel // seqlen non-overlapping windows of the tokenized text.\n' +
    '  --seqlen defaults to the context length in config.json beside the model.',
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        text: { type: 'string' },
        seqlen: { type: 'string' },
        'max-windows': { type: 'string' },
        batch: { type: 'string' },
        ep: { type: 'string' },
        json: { type: 'boolean' },
      },
    });
    const [model, ...extra] = positionals;
    if (!model || extra.length) throw new UsageError('give exactly one MODEL.onnx');
    if (!existsSync(model)) throw new UsageError(`model not found: ${model}`);
    if (!values.text) throw new UsageError('--text FILE.txt is required');
    const result = await evaluateModel(model, {
      text: values.text,
      seqlen: values.seqlen !== undefined ? parsePositiveInt('--seqlen', values.seqlen, 2) : undefined,
      maxWindows: values['max-windows'] !== undefined ? parsePositiveInt('--max-windows', values['max-windows']) : undefined,
      batch: values.batch !== undefined ? parsePositiveInt('--batch', values.batch) : undefined,
      executionProviders: parseEpList(values.ep),
      onWindow: (done, total) => {
        if (process.stderr.isTTY) process.stderr.write(`\revaluating ${done}/${total} windows`);
      },
    });
    if (process.stderr.isTTY) process.stderr.write('\n');
    console.error(describeProviders(result.executionProvider));
    if (values.json) {
      console.log(JSON.stringify(result, null, 2));
    } else {
      console.log(
        `perplexity ${result.perplexity.toFixed(4)} (mean NLL ${result.nll.toFixed(6)} nats, ${result.windows} windows × ${result.seqlen} tokens, ${result.seconds.toFixed(1)} s)`,
      );
    }
    return 0;
  },
};

