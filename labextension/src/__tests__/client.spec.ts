import { describe, expect, it, vi } from 'vitest';
import { ApiError, CondaStoreClient, PageTransport, queryString } from '../api';
import { FakeTransport, ok } from './fake';

describe('PageTransport', () => {
  it('sends same-origin requests under the prefix, with X-XSRFToken on writes only', async () => {
    const fetchImpl = vi.fn(async () => new Response('{"status":"ok","data":null,"message":null}'));
    const transport = new PageTransport('/services/conda-store', 'xsrf-123', fetchImpl as unknown as typeof fetch);
    await transport.fetch('api/v1/environment/', { query: { search: 'py', namespace: undefined, page: 2 } });
    await transport.fetch('api/v1/build/3/', { method: 'PUT', json: { a: 1 } });
    const [getUrl, getInit] = fetchImpl.mock.calls[0] as unknown as [string, RequestInit];
    expect(getUrl).toBe('/services/conda-store/api/v1/environment/?search=py&page=2');
    expect(getInit.credentials).toBe('same-origin');
    expect((getInit.headers as Record<string, string>)['X-XSRFToken']).toBeUndefined();
    const [putUrl, putInit] = fetchImpl.mock.calls[1] as unknown as [string, RequestInit];
    expect(putUrl).toBe('/services/conda-store/api/v1/build/3/');
    expect(putInit.method).toBe('PUT');
    expect(putInit.body).toBe('{"a":1}');
    expect(putInit.headers).toMatchObject({ 'X-XSRFToken': 'xsrf-123', 'Content-Type': 'application/json' });
    expect(putInit.redirect).toBe('manual');
  });

  it('encodes repeated and empty query values', () => {
    expect(queryString({ packages: ['numpy', 'scipy'], search: '', x: undefined, ok: true })).toBe(
      '?packages=numpy&packages=scipy&ok=true'
    );
    expect(queryString({})).toBe('');
  });
});

describe('CondaStoreClient', () => {
  it('unwraps the envelope and pages', async () => {
    const transport = new FakeTransport({
      'GET api/v1/environment/': (o) => ok([{ id: 1, name: 'py', namespace: { id: 1, name: 'team' } }],
        { page: o.query?.page, size: 25, count: 51 })
    });
    const client = new CondaStoreClient(transport);
    const page = await client.environments({ page: 3, search: 'py' });
    expect(page).toMatchObject({ page: 3, size: 25, count: 51 });
    expect(page.items[0].name).toBe('py');
    expect(transport.requests[0].options.query).toMatchObject({ page: 3, size: 25, search: 'py' });
  });

  it('reports the API message and status of an error', async () => {
    const client = new CondaStoreClient(new FakeTransport({
      'POST api/v1/specification/': () => ({ status: 400, body: { status: 'error', data: null,
        message: "dependencies[0]: 'numpy 1' is not a valid conda match spec" } })
    }));
    const err = await client.submitSpecification({ namespace: 'a', specification: 'x' }).catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(400);
    expect(err.message).toBe("dependencies[0]: 'numpy 1' is not a valid conda match spec");
  });

  it('keeps the status line when an error body is not JSON, and says when the server is unreachable', async () => {
    const client = new CondaStoreClient(new FakeTransport({
      'GET api/v1/build/1/': () => new Response('<html>Bad Gateway</html>', { status: 502, statusText: 'Bad Gateway' })
    }));
    await expect(client.build(1)).rejects.toMatchObject({ status: 502, message: '502 Bad Gateway' });
    const down = new CondaStoreClient({
      fetch: () => Promise.reject(new TypeError('Failed to fetch')),
      url: (p: string) => p,
      events: () => { throw new Error('unused'); }
    });
    await expect(down.permissions()).rejects.toMatchObject({ status: 0, message: 'cannot reach the conda-store service: Failed to fetch' });
  });

  it('treats a redirect (an expired hub session, a proxy login page) as an error, not as data', async () => {
    const client = new CondaStoreClient(new FakeTransport({
      'GET api/v1/permission/': () => new Response(null, { status: 302, headers: { Location: '/hub/login' } })
    }));
    await expect(client.permissions()).rejects.toMatchObject({ status: 302 });
  });

  it('builds download URLs and the hub login URL through the transport', () => {
    const client = new CondaStoreClient(new FakeTransport({}));
    expect(client.artifactUrl(7, 'lockfile')).toBe('/prefix/api/v1/build/7/lockfile/?format=yaml');
    expect(client.artifactUrl(7, 'logs')).toBe('/prefix/api/v1/build/7/logs/');
    expect(client.hubLoginUrl('build/7/')).toBe('/prefix/oauth_login/?next=build%2F7%2F');
  });
});
