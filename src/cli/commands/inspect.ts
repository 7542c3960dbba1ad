// `obr inspect MODEL.onnx`: prints JSON of the model (opset, inputs, outputs, size), its linear
// layers (name, shape, dtype, orientation, block, role) and the groups of layers sharing an input.
import { parseArgs } from 'node:util';
import { inspectModel } from '../../onnx/inspect';
import { type CliCommand, UsageError } from '../command';

const USAGE = 'obr inspect MODEL.onnx [--check-weights] [--compact]';

export const inspectCommand: CliCommand = {
  name: 'inspect',
  summary: 'list the linear layers of a model as JSON',
  usage: USAGE,
  async run(argv) {
    let parsed;
    try {
      parsed = parseArgs({
        args: argv,
        allowPositionals: true,
        options: { 'check-weights': { type: 'boolean' }, compact: { type: 'boolean' } },
      });
    } catch (e) {
      throw new UsageError(`${(e as Error).message}\nUsage: ${USAGE}`, { cause: e });
    }
    const [path, ...extra] = parsed.positionals;
    if (!path || extra.length > 0) throw new UsageError(`give exactly one model file\nUsage: ${USAGE}`);
    const report = await inspectModel(path, { checkWeights: parsed.values['check-weights'] === true });
    console.log(JSON.stringify(report, null, parsed.values.compact ? undefined : 2));
    return 0;
  },
};
