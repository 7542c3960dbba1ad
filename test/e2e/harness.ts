// End-to-end harness: a real VS Code workbench (code-server, installed by scripts/e2e/setup.sh
// into .cache/code-server) with the extension loaded unpacked, driven by Debian's chromium through
// playwright-core. Every wait is bounded; `close()` always kills code-server and chromium.
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, readFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync, createWriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { chromium, type Browser, type Frame, type Page } from 'playwright-core';

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
  close(): Promise<void>;
  shot(name: string): Promise<string>;
}

/** Starts code-server with a temp workspace holding a copy of the tiny model, and opens it in chromium. */
export async function start(settings: Record<string, unknown>, options: { extraModelFiles?: string[] } = {}): Promise<Session> {
  mkdirSync(RESULTS, { recursive: true });
  const root = mkdtempSync(join(tmpdir(), 'obr-e2e-'));
  const workspace = join(root, 'workspace');
  const userData = join(root, 'data');
  const extensions = join(root, 'extensions');
  mkdirSync(workspace, { recursive: true });
  for (const f of ['model.onnx', 'tokenizer.json', 'tokenizer_config.json', 'config.json', ...(options.extraModelFiles ?? [])]) {
    if (existsSync(join(MODEL_DIR, f))) copyFileSync(join(MODEL_DIR, f), join(workspace, f));
  }
  // The extension, unpacked as VS Code installs it: manifest, bundles, media, and the runtime
  // node_modules (onnxruntime-node + onnxruntime-common) — the same set the .vsix ships.
  const ext = join(extensions, `${PKG.publisher}.${PKG.name}-${PKG.version}`);
  mkdirSync(join(ext, 'node_modules'), { recursive: true });
  // Copies, not symlinks: VS Code maps API calls to an extension by the real path of the calling
  // module, so a symlinked dist/ would make the extension anonymous (and its webview messages JSON).
  for (const f of ['package.json', 'dist', 'media', 'LICENSE', 'README.md']) {
    if (existsSync(join(ROOT, f))) cpSync(join(ROOT, f), join(ext, f), { recursive: true, filter: (src) => !src.endsWith('.map') });
  }
  for (const m of ['onnxruntime-node', 'onnxruntime-common']) symlinkSync(join(ROOT, 'node_modules', m), join(ext, 'node_modules', m));
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
  const log = createWriteStream(join(RESULTS, 'code-server.log'));
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
      const exited = await Promise.race([new Promise((r) => server.once('exit', () => r(true))), new Promise((r) => setTimeout(() => r(false), 5000))]);
      if (!exited) {
        try {
          process.kill(-server.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
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
    return { page, browser, workspace, userData, close, shot };
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
 * the explorer before the extension's contributions are registered, so a menu without the action
 * is closed and opened again (bounded).
 */
export async function explorerAction(page: Page, fileName: string, action: string): Promise<void> {
  const item = page.locator('.explorer-folders-view .monaco-list-row').filter({ has: page.locator('.label-name', { hasText: new RegExp(`^${fileName.replace(/\./g, '\\.')}$`) }) });
  await item.first().waitFor({ timeout: 60_000 });
  const entry = page.locator('.monaco-menu .action-item .action-label', { hasText: action });
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
