// Inspector webview entry (bundled to dist/webview.js). Talks to the host only through the
// protocol in src/protocol; its first message is `ready`.
declare function acquireVsCodeApi(): { postMessage(message: unknown): void };

const vscode = acquireVsCodeApi();
vscode.postMessage({ type: 'ready' });
