// The CLI's command contract. Each command parses its own flags with node:util parseArgs and
// returns an exit code: 0 success, 1 failure while running, 2 bad input (usage, files, values).

export interface CliCommand {
  name: string;
  summary: string;
  usage: string;
  run(argv: string[]): Promise<number>;
}

/** Bad input the user can fix; printed without a stack trace, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}
