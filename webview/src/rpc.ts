// Requests to the host with ids and a timeout; replies arrive as `reply` messages.
import type { HostToWebview, WebviewReplyValue, WebviewRequest } from '../../src/protocol/webview';

export interface VsCodeApi {
  postMessage(message: unknown): void;
  getState(): unknown;
  setState(state: unknown): void;
}

type Pending = { resolve: (v: WebviewReplyValue) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> };

type Distribute<T> = T extends unknown ? Omit<T, 'id'> : never;

export class Rpc {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  constructor(private readonly api: VsCodeApi) {}

  request<K extends WebviewReplyValue['kind']>(
    message: Distribute<WebviewRequest> & { type: K },
    timeoutMs = 120_000,
  ): Promise<Extract<WebviewReplyValue, { kind: K }>> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no answer to ${message.type} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: WebviewReplyValue) => void, reject, timer });
      this.api.postMessage({ ...message, id });
    });
  }

  /** Returns true when the message was a reply (handled here). */
  handle(message: HostToWebview): boolean {
    if (message.type !== 'reply') return false;
    const p = this.pending.get(message.id);
    if (!p) return true;
    this.pending.delete(message.id);
    clearTimeout(p.timer);
    if ('ok' in message) p.resolve(message.ok);
    else p.reject(Object.assign(new Error(message.err.message), { name: message.err.code }));
    return true;
  }
}
