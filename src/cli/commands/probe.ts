import { parseArgs } from 'node:util';
import { DEFAULT_EXECUTION_PROVIDERS } from '../../protocol/recipes';
import { describeMallocTuning } from '../../runtime/mallocTunables';
import { probeProviders } from '../../runtime/probe';
import type { CliCommand } from '../command';

export const probeCommand: CliCommand = {
  name: 'providers',
  summary: 'show which execution provider this machine can use (GPU providers fall back to CPU)',
  usage: 'obr providers [--ep cuda,dml,coreml,webgpu,cpu]',
  async run(argv) {
    const { values } = parseArgs({ args: argv, options: { ep: { type: 'string' } } });
    const preference = values.ep ? values.ep.split(',').map((s) => s.trim()) : [...DEFAULT_EXECUTION_PROVIDERS];
    const probe = await probeProviders(preference);
    console.log(JSON.stringify(probe, null, 2));
    console.error(describeMallocTuning());
    return 0;
  },
};
