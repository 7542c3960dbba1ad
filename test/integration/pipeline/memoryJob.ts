// One compression job in its own process, for memory.test.ts: prints the process's peak RSS
// (getrusage maxRSS) as JSON once the job is done. Arguments: MODEL OPTIONS_JSON EXTRA_JSON.
import { runCompression } from '../../../src/pipeline/compress';

const [model, options, extra] = process.argv.slice(2);
runCompression(model!, JSON.parse(options!), {}, JSON.parse(extra!)).then(
  () => {
    console.log(JSON.stringify({ peakRssBytes: process.resourceUsage().maxRSS * 1024 }));
    process.exit(0);
  },
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
