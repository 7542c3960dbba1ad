// The registry of CLI commands, in the order `obr --help` lists them.
import type { CliCommand } from '../command';
import { benchCommand } from './bench';
import { layerCommand } from './layer';
import { compressCommand } from './compress';
import { demoCommand } from './demo';
import { evalCommand } from './eval';
import { inspectCommand } from './inspect';
import { probeCommand } from './probe';

export const commands: readonly CliCommand[] = [
  compressCommand,
  evalCommand,
  demoCommand,
  layerCommand,
  inspectCommand,
  benchCommand,
  probeCommand,
];
