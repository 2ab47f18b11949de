/**
 * The typed client of the REST API v1: the one place that knows paths, the `{status, data,
 * message}` envelope, paging and error shapes. Views call it and never build URLs themselves.
 */
import type {
  Build,
  BuildQuery,
  Envelope,
  Environment,
  EnvironmentQuery,
  IssuedToken,
  LoginResult,
  Namespace,
  PackageBuild,
  Page,
  PagedEnvelope,
  Permissions,
  TokenInfo
} from './types';
import type { RequestOptions, Transport } from './transport';

/** An error answer of the API, worded by the server (`message`), or a network failure. */
export class ApiError extends Error {
  constructor(
    /** HTTP status; 0 when the server could not be reached. */
    readonly status: number,
    message: string
  ) {
    super(message);
    this.name = 'ApiError';
  }

  get unauthenticated(): boolean {
    return this.status === 401;
  }
}

const enc = encodeURIComponent;

export class CondaStoreClient {
  constructor(readonly transport: Transport) {}

  // -- plumbing ---------------------------------------------------------------------------------
  private async send(path: string, options?: RequestOptions): Promise<Response> {
    let response: Response;
    try {
      response = await this.transport.fetch(path, options);
    } catch (err) {
      if ((err as Error)?.name === 'AbortError') {
        throw err;
      }
      throw new ApiError(0, `cannot reach the conda-store service: ${(err as Error)?.message ?? err}`);
    }
    if (!response.ok) {
      throw await errorOf(response);
    }
    return response;
  }

  /** The `data` of an enveloped answer. */
  async request<T>(path: string, options?: RequestOptions): Promise<Envelope<T>> {
    const response = await this.send(path, options);
    const body = (await parseJson(response)) as Envelope<T>;
    if (body?.status !== 'ok') {
      throw new ApiError(response.status, body?.message ?? 'the server answered an unexpected body');
    }
    return body;
  }

  private async data<T>(path: string, options?: RequestOptions): Promise<T> {
    return (await this.request<T>(path, options)).data;
  }

  private async page<T>(path: string, options?: RequestOptions): Promise<Page<T>> {
    const body = (await this.request<T[]>(path, options)) as PagedEnvelope<T>;
    return { items: body.data, page: body.page, size: body.size, count: body.count };
  }

  private async text(path: string, options?: RequestOptions): Promise<string> {
    return (await this.send(path, options)).text();
  }

  // -- session ----------------------------------------------------------------------------------
  permissions(signal?: AbortSignal): Promise<Permissions> {
    return this.data('api/v1/permission/', { signal });
  }

  login(username: string, password: string): Promise<LoginResult> {
    return this.data('login/', { method: 'POST', json: { username, password } });
  }

  /** Trade a pasted API token for a browser session (a new revocable token in the cookie). */
  loginWithToken(token: string): Promise<LoginResult> {
    return this.data('login/token/', { method: 'POST', json: { token } });
  }

  /** Where the browser goes to log in through JupyterHub (OAuth), coming back to `next`. */
  hubLoginUrl(next?: string): string {
    return this.transport.url('oauth_login/', { next });
  }

  async logout(): Promise<void> {
    await this.send('logout/', { method: 'POST' });
  }

  // -- environments -----------------------------------------------------------------------------
  environments(query: EnvironmentQuery = {}, signal?: AbortSignal): Promise<Page<Environment>> {
    return this.page('api/v1/environment/', {
      query: { page: query.page ?? 1, size: query.size ?? 25, search: query.search, namespace: query.namespace,
        status: query.status, sort_by: 'namespace' },
      signal
    });
  }

  environment(namespace: string, name: string, signal?: AbortSignal): Promise<Environment> {
    return this.data(`api/v1/environment/${enc(namespace)}/${enc(name)}/`, { signal });
  }

  async setCurrentBuild(namespace: string, name: string, buildId: number): Promise<void> {
    await this.data(`api/v1/environment/${enc(namespace)}/${enc(name)}/`, {
      method: 'PUT', json: { build_id: buildId }
    });
  }

  async setDescription(namespace: string, name: string, description: string): Promise<void> {
    await this.data(`api/v1/environment/${enc(namespace)}/${enc(name)}/`, { method: 'PUT', json: { description } });
  }

  async deleteEnvironment(namespace: string, name: string): Promise<void> {
    await this.data(`api/v1/environment/${enc(namespace)}/${enc(name)}/`, { method: 'DELETE' });
  }

  /** Create or update `namespace/<name in the YAML>` and queue its build; resolves to the build id. */
  async submitSpecification(args: {
    namespace: string;
    specification: string;
    description?: string;
    environmentName?: string;
  }): Promise<number> {
    const data = await this.data<{ build_id: number }>('api/v1/specification/', {
      method: 'POST',
      json: {
        namespace: args.namespace,
        specification: args.specification,
        environment_description: args.description || undefined,
        environment_name: args.environmentName || undefined
      }
    });
    return data.build_id;
  }

  // -- builds -----------------------------------------------------------------------------------
  builds(query: BuildQuery = {}, signal?: AbortSignal): Promise<Page<Build>> {
    return this.page('api/v1/build/', {
      query: { page: query.page ?? 1, size: query.size ?? 50, environment_id: query.environment_id,
        status: query.status, order: query.order, sort_by: query.sort_by },
      signal
    });
  }

  build(id: number, signal?: AbortSignal): Promise<Build> {
    return this.data(`api/v1/build/${id}/`, { signal });
  }

  async rebuild(id: number): Promise<number> {
    return (await this.data<{ build_id: number }>(`api/v1/build/${id}/`, { method: 'PUT' })).build_id;
  }

  async cancelBuild(id: number): Promise<void> {
    await this.data(`api/v1/build/${id}/cancel/`, { method: 'PUT' });
  }

  async deleteBuild(id: number): Promise<void> {
    await this.data(`api/v1/build/${id}/`, { method: 'DELETE' });
  }

  buildPackages(id: number, query: { page?: number; size?: number; search?: string } = {},
    signal?: AbortSignal): Promise<Page<PackageBuild>> {
    return this.page(`api/v1/build/${id}/packages/`, {
      query: { page: query.page ?? 1, size: query.size ?? 100, search: query.search, sort_by: 'name' }, signal
    });
  }

  /** The whole log so far (the stored log once the build has finished). */
  buildLog(id: number, signal?: AbortSignal): Promise<string> {
    return this.text(`api/v1/build/${id}/logs/`, { signal });
  }

  /** Live log lines (`message` events) and `end` when the build finishes. */
  buildLogEvents(id: number): EventSource {
    return this.transport.events(`api/v1/build/${id}/logs/stream/`);
  }

  /** Download URLs the browser opens itself (the session cookie authorizes them). The lockfile
   *  endpoint answers JSON (what upstream's clients parse); people get its YAML form. */
  artifactUrl(id: number, kind: 'lockfile' | 'yaml' | 'archive' | 'logs'): string {
    if (kind === 'lockfile') return this.transport.url(`api/v1/build/${id}/lockfile/?format=yaml`);
    return this.transport.url(kind === 'logs' ? `api/v1/build/${id}/logs/` : `api/v1/build/${id}/${kind}/`);
  }

  // -- namespaces -------------------------------------------------------------------------------
  namespaces(query: { page?: number; size?: number } = {}, signal?: AbortSignal): Promise<Page<Namespace>> {
    return this.page('api/v1/namespace/', { query: { page: query.page ?? 1, size: query.size ?? 100 }, signal });
  }

  namespace(name: string, signal?: AbortSignal): Promise<Namespace> {
    return this.data(`api/v1/namespace/${enc(name)}/`, { signal });
  }

  async createNamespace(name: string): Promise<void> {
    await this.data(`api/v1/namespace/${enc(name)}/`, { method: 'POST' });
  }

  async deleteNamespace(name: string): Promise<void> {
    await this.data(`api/v1/namespace/${enc(name)}/`, { method: 'DELETE' });
  }

  // -- tokens -----------------------------------------------------------------------------------
  tokens(signal?: AbortSignal): Promise<TokenInfo[]> {
    return this.data('api/v1/token/', { signal });
  }

  createToken(args: { note?: string; expiration?: string; primary_namespace?: string;
    role_bindings?: Record<string, string[]> }): Promise<IssuedToken> {
    return this.data('api/v1/token/', { method: 'POST', json: args });
  }

  async revokeToken(id: number): Promise<void> {
    await this.data(`api/v1/token/${id}/`, { method: 'DELETE' });
  }
}

async function parseJson(response: Response): Promise<unknown> {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(response.status, `the server answered ${response.status} with a body that is not JSON`);
  }
}

/** The API's own words for an error answer (`message` of the envelope), else the HTTP reason. */
export async function errorOf(response: Response): Promise<ApiError> {
  if (response.type === 'opaqueredirect' || (response.status >= 300 && response.status < 400)) {
    return new ApiError(response.status || 302, 'the server redirected the request (is the session still valid?)');
  }
  let message = `${response.status} ${response.statusText || 'error'}`.trim();
  try {
    const body = JSON.parse(await response.text());
    if (body && typeof body.message === 'string' && body.message) {
      message = body.message;
    }
  } catch {
    // not JSON (a proxy's error page): keep the status line
  }
  return new ApiError(response.status, message);
}
