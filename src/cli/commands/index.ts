// The registry of CLI commands, in the order `obr --help` lists them.
import type { CliCommand } from '../command';
import { probeCommand } from './probe';

function pending(name: string, summary: string, usage: string): CliCommand {
  return {
    name,
    summary,
    usage,
    async run() {
      console.error(`obr ${name}: not available in this build yet`);
      return 1;
    },
  };
}

export const commands: readonly CliCommand[] = [
  pending('compress', 'compress a model (prune + quantize + compensate) and write it beside the source', 'obr compress MODEL.onnx [--recipe obr-gptq] [--sparsity 0.5|2:4|4:8] [--wbits 4] [--abits 4|16] [--kvbits 4|16] [--calib FILE.txt] [--samples 128] [--seqlen N] [--out DIR] [--ep cpu|cuda|…]'),
  pending('eval', 'perplexity of a model on a text (WikiText-2 protocol)', 'obr eval MODEL.onnx --text FILE.txt [--seqlen N]'),
  pending('layer', 'compress one linear layer from NumPy .npy arrays', 'obr layer --weight W.npy --hessian H.npy [--act A.npy] --method M [--sparsity …] [--alpha 0.5] [--wbits 4] [--damp 0.01] --out Q.npy'),
  pending('inspect', 'list the linear layers of a model as JSON', 'obr inspect MODEL.onnx'),
  pending('bench', 'run the benchmark suites and write JSON + Markdown results', 'obr bench [MODEL.onnx] [--suite quality,speed,runtime,core] [--out DIR]'),
  probeCommand,
];
