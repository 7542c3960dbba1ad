// End-to-end harness: a real VS Code workbench (code-server, installed by scripts/e2e/setup.sh
// into .cache/code-server) with the extension loaded unpacked — or installed from the packaged
// .vsix (`start(…, { vsix })`) — driven by Debian's chromium through playwright-core. Every wait
// is bounded; `close()` always kills code-server and chromium.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, readFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync, createWriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { chromium, type Browser, type Frame, type Page } from 'playwright-core';
import assert from 'node:assert/strict';

export const ROOT = resolve(dirname(__filename), '..', '..');
export const RESULTS = join(ROOT, 'test-results', 'e2e');
const CODE_SERVER = join(ROOT, '.cache', 'code-server', 'node_modules', '.bin', 'code-server');
const CHROMIUM = process.env['OBR_E2E_CHROMIUM'] ?? '/usr/bin/chromium';
const MODEL_DIR = join(ROOT, 'test', 'fixtures', 'models', 'tiny');
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { publisher: string; name: string; version: string };

export function prerequisites(): string | undefined {
  if (!existsSync(CODE_SERVER)) return `code-server missing (${CODE_SERVER}); run bash scripts/e2e/setup.sh`;
  if (!existsSync(CHROMIUM)) return `chromium missing (${CHROMIUM}); run bash scripts/e2e/setup.sh`;
  if (!existsSync(join(ROOT, 'dist', 'extension.js'))) return 'dist/ missing; run npm run build';
  if (!existsSync(join(MODEL_DIR, 'model.onnx'))) return `the bundled tiny model is missing (${MODEL_DIR})`;
  return undefined;
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolvePort(addr.port) : reject(new Error('no port'))));
    });
  });
}

export async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined | false> | T | undefined | false, everyMs = 250): Promise<T> {
  const end = Date.now() + ms;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface Session {
  page: Page;
  browser: Browser;
  workspace: string;
  userData: string;
  /** The extension's folder inside the session's extensions folder. */
  extensionDir: string;
  close(): Promise<void>;
  shot(name: string): Promise<string>;
}

export interface StartOptions {
  /** More files of the tiny model's folder to copy into the workspace. */
  extraModelFiles?: string[];
  /**
   * Install this packaged extension with `code-server --install-extension FILE.vsix
   * --extensions-dir <fresh folder>` instead of copying dist/ and media/ unpacked; code-server
   * then runs with only that extensions folder.
   */
  vsix?: string;
  /** code-server's log: test-results/e2e/<logName>.log (default code-server). */
  logName?: string;
  /** Puts more files into the workspace folder before the workbench opens it. */
  prepare?: (workspace: string) => void | Promise<void>;
}

/**
 * Installs a .vsix into `extensions` with code-server's own CLI (as a user's "Install from
 * VSIX…" does) and returns the installed extension's folder.
 */
export function installVsix(vsix: string, extensions: string, userData: string): { dir: string; output: string; seconds: number } {
  const t0 = performance.now();
  const r = spawnSync(CODE_SERVER, ['--install-extension', vsix, '--extensions-dir', extensions, '--user-data-dir', userData, '--force'], {
    encoding: 'utf8',
    timeout: 180_000,
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (r.status !== 0) throw new Error(`code-server --install-extension ${vsix} failed (exit ${r.status}${r.error ? `, ${r.error.message}` : ''}):\n${output.slice(-3000)}`);
  const id = `${PKG.publisher}.${PKG.name}-${PKG.version}`.toLowerCase();
  const dirs = readdirSync(extensions).filter((d) => d.toLowerCase().startsWith(id));
  if (dirs.length !== 1) throw new Error(`expected one installed ${id}* in ${extensions}, found [${readdirSync(extensions).join(', ')}]:\n${output.slice(-3000)}`);
  return { dir: join(extensions, dirs[0]!), output, seconds: (performance.now() - t0) / 1000 };
}

/**
 * The .vsix the e2e tests install: OBR_E2E_VSIX when set (`npm run test:e2e` packages once, before
 * the tests), else `npm run package`'s script run now into a temp folder, after which the dev
 * build of dist/ is restored (packaging builds dist/ for production).
 */
export function packagedVsix(): { file: string; bytes: number; packagedNow: boolean; seconds: number; dispose(): void } {
  const given = process.env['OBR_E2E_VSIX'];
  if (given) {
    const file = resolve(ROOT, given);
    if (!existsSync(file)) throw new Error(`OBR_E2E_VSIX=${given}: no such file (npm run test:e2e packages it first)`);
    return { file, bytes: statSync(file).size, packagedNow: false, seconds: 0, dispose: () => undefined };
  }
  const t0 = performance.now();
  const file = join(mkdtempSync(join(tmpdir(), 'obr-vsix-')), `${PKG.name}-linux-x64-${PKG.version}.vsix`);
  const run = (args: string[], env: Record<string, string> = {}) => {
    const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout: 300_000, env: { ...process.env, ...env } });
    if (r.status !== 0) throw new Error(`node ${args.join(' ')} failed (exit ${r.status}):\n${(r.stdout + r.stderr).slice(-3000)}`);
  };
  try {
    run(['scripts/package.mjs'], { OBR_VSIX_OUT: file });
  } finally {
    run(['scripts/build.mjs']);
  }
  const dispose = () => {
    if (!process.env['OBR_E2E_KEEP']) rmSync(dirname(file), { recursive: true, force: true });
  };
  return { file, bytes: statSync(file).size, packagedNow: true, seconds: (performance.now() - t0) / 1000, dispose };
}

/** Starts code-server with a temp workspace holding a copy of the tiny model, and opens it in chromium. */
export async function start(settings: Record<string, unknown>, options: StartOptions = {}): Promise<Session> {
  mkdirSync(RESULTS, { recursive: true });
  const root = mkdtempSync(join(tmpdir(), 'obr-e2e-'));
  const workspace = join(root, 'workspace');
  const userData = join(root, 'data');
  const extensions = join(root, 'extensions');
  mkdirSync(workspace, { recursive: true });
  mkdirSync(extensions, { recursive: true });
  for (const f of ['model.onnx', 'tokenizer.json', 'tokenizer_config.json', 'config.json', ...(options.extraModelFiles ?? [])]) {
    if (existsSync(join(MODEL_DIR, f))) copyFileSync(join(MODEL_DIR, f), join(workspace, f));
  }
  try {
    await options.prepare?.(workspace);
  } catch (e) {
    if (!process.env['OBR_E2E_KEEP']) rmSync(root, { recursive: true, force: true });
    throw e;
  }
  let ext: string;
  if (options.vsix) {
    try {
      ext = installVsix(options.vsix, extensions, userData).dir;
    } catch (e) {
      if (!process.env['OBR_E2E_KEEP']) rmSync(root, { recursive: true, force: true });
      throw e;
    }
  } else {
    // The extension, unpacked as VS Code installs it: manifest, bundles, media, and the runtime
    // node_modules (onnxruntime-node + onnxruntime-common) — the same set the .vsix ships.
    ext = join(extensions, `${PKG.publisher}.${PKG.name}-${PKG.version}`);
    mkdirSync(join(ext, 'node_modules'), { recursive: true });
    // Copies, not symlinks: VS Code maps API calls to an extension by the real path of the calling
    // module, so a symlinked dist/ would make the extension anonymous (and its webview messages JSON).
    for (const f of ['package.json', 'dist', 'media', 'LICENSE', 'README.md']) {
      if (existsSync(join(ROOT, f))) cpSync(join(ROOT, f), join(ext, f), { recursive: true, filter: (src) => !src.endsWith('.map') });
    }
    for (const m of ['onnxruntime-node', 'onnxruntime-common']) symlinkSync(join(ROOT, 'node_modules', m), join(ext, 'node_modules', m));
  }
  mkdirSync(join(userData, 'User'), { recursive: true });
  writeFileSync(
    join(userData, 'User', 'settings.json'),
    JSON.stringify(
      {
        'security.workspace.trust.enabled': false,
        'workbench.startupEditor': 'none',
        'workbench.tips.enabled': false,
        'workbench.enableExperiments': false,
        'extensions.autoCheckUpdates': false,
        'extensions.autoUpdate': false,
        'extensions.ignoreRecommendations': true,
        'telemetry.telemetryLevel': 'off',
        'update.mode': 'none',
        'chat.commandCenter.enabled': false,
        'workbench.colorTheme': 'Default Dark Modern',
        ...settings,
      },
      null,
      2,
    ),
  );

  const port = await freePort();
  const log = createWriteStream(join(RESULTS, `${options.logName ?? 'code-server'}.log`));
  const server: ChildProcess = spawn(
    CODE_SERVER,
    [
      '--auth', 'none',
      '--bind-addr', `127.0.0.1:${port}`,
      '--extensions-dir', extensions,
      '--user-data-dir', userData,
      '--disable-telemetry',
      '--disable-update-check',
      '--disable-workspace-trust',
      workspace,
    ],
    { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } },
  );
  let output = '';
  server.stdout?.on('data', (d: Buffer) => {
    output += d.toString();
    log.write(d);
  });
  server.stderr?.on('data', (d: Buffer) => {
    output += d.toString();
    log.write(d);
  });
  let browser: Browser | undefined;
  const close = async (): Promise<void> => {
    await browser?.close().catch(() => undefined);
    // code-server runs in its own process group (detached): kill the group, then wait for it.
    if (server.pid && server.exitCode === null) {
      try {
        process.kill(-server.pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
      await Promise.race([new Promise((r) => server.once('exit', () => r(true))), new Promise((r) => setTimeout(() => r(false), 5000))]);
    }
    // Whatever is left of the group (an extension host still starting up survives the server's
    // SIGTERM and is re-parented to init) is killed too.
    if (server.pid) {
      try {
        process.kill(-server.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    log.end();
    if (!process.env['OBR_E2E_KEEP']) rmSync(root, { recursive: true, force: true });
  };
  try {
    await until('code-server to listen', 90_000, () => /HTTP server listening/.test(output) || (server.exitCode !== null ? Promise.reject(new Error(`code-server exited: ${output.slice(-2000)}`)) : false));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
      timeout: 60_000,
    });
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    page.setDefaultTimeout(30_000);
    await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(workspace)}`, { timeout: 60_000 });
    await page.locator('.monaco-workbench').waitFor({ timeout: 120_000 });
    const shot = async (name: string): Promise<string> => {
      const file = join(RESULTS, `${name}.png`);
      await page.screenshot({ path: file });
      return file;
    };
    return { page, browser, workspace, userData, extensionDir: ext, close, shot };
  } catch (e) {
    await close();
    throw e;
  }
}

/** The innermost frame of the inspector webview (VS Code nests our document in two iframes). */
export async function inspectorFrame(page: Page, ms = 60_000): Promise<Frame> {
  return until('the inspector webview', ms, async () => {
    for (const f of page.frames()) {
      try {
        if (await f.evaluate(`!!document.getElementById('layers') && !!document.getElementById('app')`)) return f;
      } catch {
        /* detached or cross-origin frame */
      }
    }
    return undefined;
  });
}

/**
 * Right-clicks an explorer entry and runs one of its context-menu actions. The workbench shows
 * the explorer before the extension's contributions are registered, and an action gated on
 * workspace trust shows disabled until the trust state is known (seen under load), so a menu
 * without the action enabled is closed and opened again (bounded).
 */
export async function explorerAction(page: Page, fileName: string, action: string): Promise<void> {
  const item = page.locator('.explorer-folders-view .monaco-list-row').filter({ has: page.locator('.label-name', { hasText: new RegExp(`^${fileName.replace(/\./g, '\\.')}$`) }) });
  await item.first().waitFor({ timeout: 60_000 });
  const entry = page.locator('.monaco-menu .action-item:not(.disabled) .action-label:not(.disabled)', { hasText: action });
  await until(`"${action}" in the context menu of ${fileName}`, 90_000, async () => {
    await item.first().click({ button: 'right' });
    try {
      await entry.first().waitFor({ timeout: 3_000 });
      return true;
    } catch {
      await page.keyboard.press('Escape');
      await page.waitForTimeout(1_000);
      return undefined;
    }
  });
  await entry.first().click();
  // A menu re-laid out under the pointer (e.g. while the explorer refreshes) can swallow the
  // click; the item is focused then, so Enter runs it.
  const menu = page.locator('.monaco-menu');
  if (!(await menu.first().waitFor({ state: 'hidden', timeout: 3_000 }).then(() => true, () => false))) {
    await entry.first().hover();
    await page.keyboard.press('Enter');
    await menu.first().waitFor({ state: 'hidden', timeout: 5_000 }).catch(() => undefined);
  }
}

/** Types into the open QuickPick and accepts the first match. */
export async function quickPick(page: Page, text: string): Promise<void> {
  const input = page.locator('.quick-input-widget .quick-input-box input');
  await input.waitFor({ state: 'visible', timeout: 60_000 });
  await input.fill(text);
  await page.waitForTimeout(300);
  await input.press('Enter');
  await page.waitForTimeout(300);
}

export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, prefix: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      out.push(prefix + e.name + (e.isDirectory() ? '/' : ''));
      if (e.isDirectory()) walk(join(d, e.name), `${prefix}${e.name}/`);
    }
  };
  walk(dir, '');
  return out.sort();
}

/** Types into the QuickPick, moves to the entry matching `label` (lists load asynchronously) and accepts it. */
export async function pickExact(page: Page, text: string, label: RegExp): Promise<void> {
  const input = page.locator('.quick-input-widget .quick-input-box input');
  await input.waitFor({ state: 'visible', timeout: 60_000 });
  await input.fill(text);
  await until(`${label} focused in the QuickPick`, 60_000, async () => {
    const focused = await page.locator('.quick-input-list .monaco-list-row.focused .label-name').first().innerText({ timeout: 1_000 }).catch(() => '');
    if (label.test(focused.trim())) return true;
    await input.press('ArrowDown');
    return undefined;
  }, 400);
  await input.press('Enter');
}

/** Counts non-background pixels of a canvas in the inspector (0 = blank). */
export async function inkedPixels(frame: Frame, id: string): Promise<number> {
  return frame.evaluate(`(() => {
    const c = document.getElementById(${JSON.stringify(id)});
    if (!c || !c.width || !c.height) return 0;
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) n++;
    return n;
  })()`);
}

export async function notification(page: Page, text: RegExp, ms: number): Promise<string> {
  return until(`a notification matching ${text}`, ms, async () => {
    const toasts = await page.locator('.notifications-toasts .notification-toast, .notification-list-item-message').allInnerTexts();
    return toasts.find((t) => text.test(t));
  }, 500);
}

/** Explorer right-click on model.onnx → Compress Model… → recipe → bundled text → confirm the estimate. */
export async function startCompress(page: Page, recipe: string, expectInEstimate: RegExp[] = []): Promise<string> {
  await explorerAction(page, 'model.onnx', 'Compress Model…');
  await quickPick(page, recipe);
  await quickPick(page, 'Bundled');
  // Pre-flight estimate: a modal dialog with a Compress button.
  const dialog = page.locator('.monaco-dialog-box');
  await dialog.waitFor({ timeout: 60_000 });
  const text = await dialog.innerText();
  assert.match(text, /linear layers/);
  for (const re of expectInEstimate) assert.match(text, re);
  await dialog.locator('.monaco-button', { hasText: /^Compress$/ }).click();
  return text;
}

/** The cells of every layer row of the inspector's table, once it has `count` rows. */
export async function layerRows(inspector: Frame, count: number): Promise<string[][]> {
  return until(`all ${count} layers in the table`, 60_000, async () => {
    const r = (await inspector.evaluate(`Array.from(document.querySelectorAll('vscode-data-grid-row[data-layer]')).map((row) => Array.from(row.querySelectorAll('vscode-data-grid-cell')).map((c) => c.textContent))`)) as string[][];
    return r.length === count ? r : undefined;
  });
}
