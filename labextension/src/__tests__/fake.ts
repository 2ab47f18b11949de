/** A fake Transport: answers from a table of handlers, records every request. */
import type { RequestOptions, Transport } from '../api';
import { queryString } from '../api';

export type Handler = (options: RequestOptions, path: string) => { status?: number; body: unknown } | Response;

export class FakeTransport implements Transport {
  requests: { path: string; options: RequestOptions }[] = [];
  sources: FakeEventSource[] = [];
  constructor(private readonly handlers: Record<string, Handler>) {}

  async fetch(path: string, options: RequestOptions = {}): Promise<Response> {
    this.requests.push({ path, options });
    const key = `${options.method ?? 'GET'} ${path}`;
    const handler = this.handlers[key];
    if (!handler) {
      return new Response(JSON.stringify({ status: 'error', data: null, message: `no fake for ${key}` }), { status: 404 });
    }
    const answer = handler(options, path);
    if (answer instanceof Response) return answer;
    const body = typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body);
    return new Response(body, { status: answer.status ?? 200 });
  }

  url(path: string, query?: RequestOptions['query']): string {
    return `/prefix/${path}${queryString(query)}`;
  }

  events(path: string): EventSource {
    const source = new FakeEventSource(path);
    this.sources.push(source);
    return source as unknown as EventSource;
  }
}

export class FakeEventSource {
  static readonly CLOSED = 2;
  readyState = 1;
  onmessage: ((e: MessageEvent) => void) | null = null;
  onerror: (() => void) | null = null;
  private listeners: Record<string, (() => void)[]> = {};
  constructor(readonly path: string) {}
  addEventListener(type: string, fn: () => void) {
    (this.listeners[type] ??= []).push(fn);
  }
  close() {
    this.readyState = 2;
  }
  emit(line: string) {
    this.onmessage?.(new MessageEvent('message', { data: line }));
  }
  end() {
    for (const fn of this.listeners.end ?? []) fn();
  }
}

export const ok = (data: unknown, extra: Record<string, unknown> = {}) => ({
  body: { status: 'ok', data, message: null, ...extra }
});
