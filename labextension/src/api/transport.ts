/**
 * How requests reach the service. The client (client.ts) knows the REST API; a transport knows
 * the host: the service page talks to the service itself (same origin, session cookie, XSRF
 * header on writes); JupyterLab will talk through the user's jupyter-server.
 */

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface RequestOptions {
  method?: Method;
  /** Repeated keys: pass an array. Undefined and empty-string values are left out. */
  query?: Record<string, string | number | boolean | undefined | (string | number)[]>;
  /** Serialized as JSON. */
  json?: unknown;
  signal?: AbortSignal;
}

export interface Transport {
  /** Send a request to an API path such as `api/v1/environment/` (relative, no leading slash). */
  fetch(path: string, options?: RequestOptions): Promise<Response>;
  /** An absolute URL the browser itself may open (downloads, links). */
  url(path: string, query?: RequestOptions['query']): string;
  /** A live event stream (server-sent events) of an API path. */
  events(path: string): EventSource;
}

export function queryString(query?: RequestOptions['query']): string {
  if (!query) {
    return '';
  }
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    const values = Array.isArray(value) ? value : [value];
    for (const v of values) {
      if (v !== undefined && v !== '') {
        params.append(key, String(v));
      }
    }
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

/** The service page's transport: same-origin fetch under the service's URL prefix. */
export class PageTransport implements Transport {
  /**
   * @param prefix the service's URL prefix, with a trailing slash (`/` or `/services/conda-store/`)
   * @param xsrfToken the token the server put in the page; sent as `X-XSRFToken` on writes
   * @param fetchImpl injectable for tests
   */
  constructor(
    readonly prefix: string,
    private readonly xsrfToken: string,
    private readonly fetchImpl: typeof fetch = (...args) => globalThis.fetch(...args)
  ) {
    if (!prefix.endsWith('/')) {
      this.prefix = prefix + '/';
    }
  }

  url(path: string, query?: RequestOptions['query']): string {
    return this.prefix + path.replace(/^\//, '') + queryString(query);
  }

  fetch(path: string, options: RequestOptions = {}): Promise<Response> {
    const method = options.method ?? 'GET';
    const headers: Record<string, string> = { Accept: 'application/json' };
    let body: string | undefined;
    if (options.json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(options.json);
    }
    if (method !== 'GET' && this.xsrfToken) {
      headers['X-XSRFToken'] = this.xsrfToken;
    }
    return this.fetchImpl(this.url(path, options.query), {
      method,
      headers,
      body,
      credentials: 'same-origin',
      signal: options.signal,
      // API errors are JSON: never let a redirect swap them for an HTML page.
      redirect: 'manual'
    });
  }

  events(path: string): EventSource {
    return new EventSource(this.url(path), { withCredentials: false });
  }
}
