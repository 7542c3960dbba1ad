// Output layouts (src/pipeline/layouts.ts, outputs.ts): which folder a source model sits in, where
// the drop-in folder goes, which files it takes, the atomic replacement of an earlier folder, and
// the --layout flag.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { UsageError } from '../../../src/cli/command';
import { compressOptionsFromFlags } from '../../../src/cli/commands/compress';
import { checkFolderOutput, companionFiles, detectFolderKind, resolveLayout } from '../../../src/pipeline/layouts';
import { commitStaged, outputPaths, staged } from '../../../src/pipeline/outputs';
import { DEFAULT_OPTIONS, OptionError } from '../../../src/protocol/recipes';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const TINY = path.join(ROOT, 'test', 'fixtures', 'models', 'tiny', 'model.onnx');

function folder(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-layout-'));
  for (const [n, text] of Object.entries(files)) writeFileSync(path.join(dir, n), text);
  return dir;
}

test('detectFolderKind: genai_config.json naming the model → genai; config.json + an Optimum file name → optimum; our bundled models → none', () => {
  const genai = folder({ 'genai_config.json': JSON.stringify({ model: { decoder: { filename: 'model.onnx' } } }), 'model.onnx': '' });
  assert.equal(detectFolderKind(path.join(genai, 'model.onnx')), 'genai');
  // a genai_config.json that names another file is not this model's folder
  assert.equal(detectFolderKind(path.join(genai, 'other.onnx')), undefined);
  const optimum = folder({ 'config.json': JSON.stringify({ model_type: 'llama' }), 'decoder_model.onnx': '' });
  for (const f of ['model.onnx', 'decoder_model.onnx', 'decoder_model_merged.onnx', 'decoder_with_past_model.onnx']) assert.equal(detectFolderKind(path.join(optimum, f)), 'optimum', f);
  assert.equal(detectFolderKind(path.join(optimum, 'llama.onnx')), undefined, 'not an Optimum file name');
  assert.equal(detectFolderKind(path.join(folder({ 'config.json': '{ broken' }), 'model.onnx')), undefined, 'unreadable config.json');
  assert.equal(detectFolderKind(TINY), undefined, "the bundled tiny model's config.json carries obr_studio");
  assert.equal(detectFolderKind(path.join(ROOT, 'media', 'models', 'small', 'model.onnx')), undefined);
});

test('resolveLayout: file → none, auto → detected, folder → detected else optimum-style; a bad value is an OptionError', () => {
  const genai = folder({ 'genai_config.json': JSON.stringify({ model: { decoder: { filename: 'model.onnx' } } }) });
  assert.equal(resolveLayout(path.join(genai, 'model.onnx'), 'auto'), 'genai');
  assert.equal(resolveLayout(path.join(genai, 'model.onnx')), 'genai', 'auto is the default');
  assert.equal(resolveLayout(path.join(genai, 'model.onnx'), 'file'), undefined);
  assert.equal(resolveLayout(TINY, 'auto'), undefined);
  assert.equal(resolveLayout(TINY, 'folder'), 'optimum');
  assert.throws(() => resolveLayout(TINY, 'dir' as never), OptionError);
});

test('outputPaths with a folder: SOURCEFOLDER.<recipe>-w4-s50/ in the output folder, the model under its own name; simulated and report stay loose', () => {
  const p = outputPaths('/m/llama-genai/model.onnx', DEFAULT_OPTIONS, 'genai');
  assert.deepEqual(p.folder, { kind: 'genai', dir: '/m/llama-genai/llama-genai.obr-gptq-w4-s50', sourceDir: '/m/llama-genai', modelFile: 'model.onnx' });
  assert.equal(p.packed, '/m/llama-genai/llama-genai.obr-gptq-w4-s50/model.onnx');
  assert.equal(p.simulated, '/m/llama-genai/model.obr-gptq-w4a4kv4-s50.onnx');
  assert.equal(p.report, '/m/llama-genai/model.obr-gptq-w4a4kv4-s50.report.json');
  const q = outputPaths('/m/opt/decoder_model.onnx', { ...DEFAULT_OPTIONS, outDir: '/out', groupSize: 128 }, 'optimum');
  assert.equal(q.packed, '/out/opt.obr-gptq-w4-s50-g128/decoder_model.onnx');
  // staged paths keep the folder: the write stage writes the packed model straight into it
  assert.equal(staged(q, q.packed), path.join(q.stagingDir, 'opt.obr-gptq-w4-s50-g128', 'decoder_model.onnx'));
  assert.equal(staged(q, q.report), path.join(q.stagingDir, path.basename(q.report)));
  assert.equal(outputPaths('/m/x.onnx', DEFAULT_OPTIONS).folder, undefined);
});

test('checkFolderOutput refuses an output folder that would hold the source (a rerun replaces the folder whole)', () => {
  const inside = outputPaths('/o/a.obr-gptq-w4-s50/sub/a/model.onnx', { ...DEFAULT_OPTIONS, outDir: '/o' }, 'genai');
  assert.equal(inside.folder!.dir, '/o/a.obr-gptq-w4-s50');
  assert.throws(() => checkFolderOutput(inside, '/o/a.obr-gptq-w4-s50/sub/a/model.onnx'), (e: unknown) => e instanceof OptionError && /would hold the source model/.test((e as Error).message));
  assert.doesNotThrow(() => checkFolderOutput(outputPaths('/m/a/model.onnx', DEFAULT_OPTIONS, 'genai'), '/m/a/model.onnx'));
  assert.doesNotThrow(() => checkFolderOutput(outputPaths('/m/a/model.onnx', DEFAULT_OPTIONS), '/m/a/model.onnx'));
});

test('companionFiles: config and tokenizer files; never models, weights, hidden files, our outputs or genai_config.json', () => {
  const dir = folder({
    'config.json': '{}',
    'generation_config.json': '{}',
    'genai_config.json': '{}',
    'tokenizer.json': '{}',
    'tokenizer.model': '',
    'merges.txt': '',
    'chat_template.jinja': '',
    'decoder_model.onnx': '',
    'decoder_model.onnx_data': '',
    'decoder_with_past_model.onnx': '',
    'model.safetensors': '',
    'decoder_model.obr-gptq-w4a4kv4-s50.report.json': '{}',
    '.hidden.json': '{}',
  });
  mkdirSync(path.join(dir, 'sub.json'));
  assert.deepEqual(companionFiles(dir, 'decoder_model.onnx'), {
    files: ['chat_template.jinja', 'config.json', 'generation_config.json', 'merges.txt', 'tokenizer.json', 'tokenizer.model'],
    otherModels: ['decoder_with_past_model.onnx'],
  });
});

test('commitStaged replaces an output folder from an earlier run whole, and leaves no staging or old folder behind', async () => {
  const root = mkdtempSync(path.join(tmpdir(), 'obr-commit-'));
  const paths = outputPaths(path.join(root, 'src', 'model.onnx'), { ...DEFAULT_OPTIONS, outDir: path.join(root, 'out') }, 'genai');
  const put = (p: string, text: string) => {
    mkdirSync(path.dirname(p), { recursive: true });
    writeFileSync(p, text);
  };
  put(path.join(paths.folder!.dir, 'model.onnx'), 'old');
  put(path.join(paths.folder!.dir, 'stale.json'), 'old');
  put(staged(paths, paths.packed), 'new');
  put(staged(paths, path.join(paths.folder!.dir, 'genai_config.json')), '{}');
  put(staged(paths, paths.report), '{}');
  const moved = await commitStaged(paths);
  assert.deepEqual(moved.map((m) => path.basename(m)).sort(), [path.basename(paths.folder!.dir), path.basename(paths.report)].sort());
  assert.equal(readFileSync(paths.packed, 'utf8'), 'new');
  assert.deepEqual(readdirSync(paths.folder!.dir).sort(), ['genai_config.json', 'model.onnx'], 'the old folder is gone, not merged');
  assert.deepEqual(readdirSync(paths.dir).filter((n) => n.includes('obr-old')), [], 'no moved-aside folder left');
  assert.ok(!existsSync(paths.stagingDir));
});

test('--layout auto|file|folder reaches the pipeline options; anything else is a usage error', () => {
  assert.equal(compressOptionsFromFlags({}).extra.layout, undefined);
  for (const l of ['auto', 'file', 'folder']) assert.equal(compressOptionsFromFlags({ layout: l }).extra.layout, l);
  assert.throws(() => compressOptionsFromFlags({ layout: 'genai' }), (e: unknown) => e instanceof UsageError && /--layout: expected auto, file, folder/.test((e as Error).message));
});
