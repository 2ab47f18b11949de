/**
 * JupyterLab's transport: requests go to the user's own jupyter-server under
 * `<base_url>conda-store/`, whose extension (conda_store_jupyter/jupyter/) forwards them to the
 * service with the server-side credential. `ServerConnection.makeRequest` adds what Lab's server
 * wants (XSRF header, its token if any), so there is no second login and no service token here.
 *
 * Kept out of `api/index.ts`: the service page must not bundle @jupyterlab/services.
 */
import { ServerConnection } from '@jupyterlab/services';
import type { Permissions } from './types';
import { queryString } from './transport';
import type { RequestOptions, Transport } from './transport';

/** `GET <base_url>conda-store/config`: what the panel knows before its first API call. */
export interface LabConfig {
  /** A service URL is known (hub environment, CONDA_STORE_URL or the extension's traits). */
  configured: boolean;
  /** The service answered the identity call just now. */
  reachable: boolean;
  /** Why not, worded by the extension (e.g. "conda-store service at … is not reachable: …"). */
  message: string | null;
  /** Where users reach the service themselves (links to its page); null when unknown. */
  public_url: string | null;
  /** host[:port] of the service's registry, for `docker pull` lines. */
  registry: string | null;
  /** Who this server's credential is at the service. */
  user: Permissions | null;
}

type MakeRequest = typeof ServerConnection.makeRequest;

export class LabTransport implements Transport {
  /** `<base_url>conda-store/`, absolute path with a trailing slash. */
  readonly prefix: string;

  constructor(
    readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings(),
    private readonly makeRequest: MakeRequest = ServerConnection.makeRequest
  ) {
    const base = settings.baseUrl.endsWith('/') ? settings.baseUrl : settings.baseUrl + '/';
    this.prefix = `${base}conda-store/`;
  }

  url(path: string, query?: RequestOptions['query']): string {
    return this.prefix + path.replace(/^\//, '') + queryString(query);
  }

  fetch(path: string, options: RequestOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    let body: string | undefined;
    if (options.json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(options.json);
    }
    const init: RequestInit = {
      method: options.method ?? 'GET',
      headers,
      body,
      signal: options.signal,
      // API errors are JSON: never let a redirect (a login page) stand in for them.
      redirect: 'manual'
    };
    return this.makeRequest(this.url(path, options.query), init, this.settings);
  }

  /**
   * Same origin as Lab: the browser's session with its own server authorizes the stream. Under
   * JupyterHub (>= 4.1) that cookie counts only with an XSRF token for a non-navigation GET (an
   * EventSource is fetched in "cors" mode), and an EventSource cannot send the X-XSRFToken header
   * that `makeRequest` adds; so the token goes in the `_xsrf` argument, which the single-user
   * server checks the same way. It is the `_xsrf` cookie's value (an anti-forgery value tied to
   * this browser's session, not a credential); the extension drops it before forwarding.
   */
  events(path: string): EventSource {
    const xsrf = xsrfCookie();
    return new EventSource(this.url(path, xsrf ? { _xsrf: xsrf } : undefined));
  }

  /** The extension's view of the service; its errors are the extension's own words. */
  async config(signal?: AbortSignal): Promise<LabConfig> {
    const response = await this.makeRequest(this.url('config'), { signal, redirect: 'manual' }, this.settings);
    let body: { data?: LabConfig; message?: string } | undefined;
    try {
      body = await response.json();
    } catch {
      body = undefined;
    }
    if (!response.ok || !body?.data) {
      throw new Error(body?.message || `${response.status} ${response.statusText}`.trim() ||
        'the conda-store extension of this Jupyter server did not answer');
    }
    return body.data;
  }
}

/** The `_xsrf` cookie Jupyter's server sets (what Lab itself sends as X-XSRFToken), if any. */
export function xsrfCookie(cookies: string = typeof document === 'undefined' ? '' : document.cookie): string | undefined {
  for (const part of cookies.split(';')) {
    const [name, ...value] = part.trim().split('=');
    if (name === '_xsrf') {
      return decodeURIComponent(value.join('='));
    }
  }
  return undefined;
}
