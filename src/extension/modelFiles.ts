// Which workspace files are source models and which are outputs derived from them. Outputs are
// recognised by name: NAME.<recipe>-….onnx and NAME.<recipe>-….report.json (docs/architecture.md,
// "Outputs beside the source model"). Pure: no vscode import, tested in plain Node.
import * as path from 'node:path';
import { RECIPES } from '../protocol/recipes';

const OUTPUT_RE = new RegExp(`\\.(${RECIPES.map((r) => r.replace(/-/g, '\\-')).join('|')})-[^/\\\\]*$`);

/** Splits files into source models and the outputs derived from them. Exported for tests. */
export function groupModels(files: readonly string[]): Array<{ model: string; outputs: string[]; reports: string[] }> {
  const sources = files.filter((f) => f.endsWith('.onnx') && !OUTPUT_RE.test(path.basename(f)));
  const groups = sources.map((model) => ({ model, outputs: [] as string[], reports: [] as string[] }));
  for (const f of files) {
    const base = path.basename(f);
    if (!OUTPUT_RE.test(base)) continue;
    const stem = base.replace(OUTPUT_RE, '');
    const owner = groups.find((g) => path.dirname(g.model) === path.dirname(f) && path.basename(g.model, '.onnx') === stem);
    if (!owner) {
      if (f.endsWith('.report.json')) groups.push({ model: f, outputs: [], reports: [] });
      continue;
    }
    if (f.endsWith('.report.json')) owner.reports.push(f);
    else if (f.endsWith('.onnx')) owner.outputs.push(f);
  }
  for (const g of groups) {
    g.outputs.sort();
    g.reports.sort();
  }
  return groups.sort((a, b) => a.model.localeCompare(b.model));
}

