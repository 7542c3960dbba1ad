// `obr`: the headless CLI over the same pipeline the extension's worker runs.
import { type CliCommand, UsageError } from './command';
import { commands } from './commands';
import { flagProblem } from './flags';
import { runWithMallocTunables } from './relaunch';

const VERSION = '0.1.0';

function help(list: readonly CliCommand[]): string {
  const width = Math.max(...list.map((c) => c.name.length));
  return [
    `obr ${VERSION} — compress ONNX language models with Optimal Brain Restoration`,
    '',
    'Usage: obr <command> [options]',
    '',
    'Commands:',
    ...list.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Run `obr <command> --help` for the options of one command.',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(help(commands));
    return name ? 0 : 2;
  }
  if (name === '--version' || name === '-v') {
    console.log(VERSION);
    return 0;
  }
  const command = commands.find((c) => c.name === name);
  if (!command) {
    console.error(`obr: unknown command "${name}"\n\n${help(commands)}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(`${command.summary}\n\nUsage: ${command.usage}`);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (e) {
    const flag = flagProblem(e, command.usage);
    if (flag) {
      console.error(`obr ${name}: ${flag}\n\nUsage: ${command.usage}`);
      return 2;
    }
    if (e instanceof UsageError || isUserFacing(e)) {
      console.error(`obr ${name}: ${(e as Error).message}`);
      // Translated onnxruntime failures keep onnxruntime's own text in the stack (the log).
      if (process.env.OBR_DEBUG) console.error((e as Error).stack, (e as Error).cause instanceof Error ? `\ncaused by ${((e as Error).cause as Error).stack}` : '');
      return 2;
    }
    console.error(`obr ${name}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 1;
  }
}

/** Typed errors whose message tells the user what to fix (ModelFormatError, OptionError, …). */
function isUserFacing(e: unknown): boolean {
  return e instanceof Error && /(Format|Option|Input|Calibration|Tokenizer|Npy|Lock)Error$/.test(e.name);
}

// glibc's malloc settings for the pipeline need a process started with them (src/cli/relaunch.ts).
void runWithMallocTunables(() => main(process.argv.slice(2))).then((code) => {
  process.exitCode = code;
});
