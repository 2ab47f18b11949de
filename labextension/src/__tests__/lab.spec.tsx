/** The JupyterLab host's pieces without JupyterLab: transport, panel model, panel component. */
import { act } from 'react';
import { createRoot } from 'react-dom/client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ServerConnection } from '@jupyterlab/services';
import { CondaStoreClient } from '../api';
import { LabTransport, xsrfCookie } from '../api/labTransport';
import { EnvironmentsModel, currentStep, groupRows } from '../lab/model';
import type { EnvironmentRow, FinishedBuild } from '../lab/model';
import { EnvironmentsPanel, statusText } from '../lab/panel';
import type { PanelActions } from '../lab/panel';
import { LoginView } from '../views/LoginView';
import { UIContext } from '../views';
import { FakeTransport, ok } from './fake';
import { alice, settle } from './render';

const settings = { baseUrl: '/user/alice/' } as ServerConnection.ISettings;

function labTransport(answer: (url: string, init: RequestInit) => Response) {
  const calls: { url: string; init: RequestInit; settings: ServerConnection.ISettings }[] = [];
  const makeRequest = vi.fn(async (url: string, init: RequestInit, s: ServerConnection.ISettings) => {
    calls.push({ url, init, settings: s });
    return answer(url, init);
  });
  return { transport: new LabTransport(settings, makeRequest as never), calls };
}

describe('LabTransport', () => {
  it('puts the _xsrf cookie in the log stream URL: an EventSource cannot send X-XSRFToken (JupyterHub >= 4.1 wants it)', () => {
    const opened: string[] = [];
    vi.stubGlobal('EventSource', class { constructor(url: string) { opened.push(url); } });
    document.cookie = '_xsrf=2|ab%3D|cd|1700000000; path=/';
    try {
      const { transport } = labTransport(() => new Response(''));
      new CondaStoreClient(transport).buildLogEvents(4);
      expect(opened).toEqual(['/user/alice/conda-store/api/v1/build/4/logs/stream/?_xsrf=2%7Cab%3D%7Ccd%7C1700000000']);
    } finally {
      document.cookie = '_xsrf=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/';
      vi.unstubAllGlobals();
    }
    expect(xsrfCookie('a=1; _xsrf=x%7Cy; b=2')).toBe('x|y');
    expect(xsrfCookie('a=1')).toBeUndefined();
  });

  it('sends API calls to <base_url>conda-store/ through ServerConnection, JSON bodies, no redirects', async () => {
    const { transport, calls } = labTransport(() => new Response('{"status":"ok","data":{"build_id":7},"message":null}'));
    const client = new CondaStoreClient(transport);
    expect(await client.submitSpecification({ namespace: 'alice', specification: 'name: x\n' })).toBe(7);
    await client.environments({ search: 'py', page: 2 });
    expect(calls[0].url).toBe('/user/alice/conda-store/api/v1/specification/');
    expect(calls[0].init.method).toBe('POST');
    expect(calls[0].init.redirect).toBe('manual');
    expect(calls[0].init.headers).toMatchObject({ 'Content-Type': 'application/json' });
    expect(JSON.parse(calls[0].init.body as string)).toMatchObject({ namespace: 'alice', specification: 'name: x\n' });
    expect(calls[0].settings).toBe(settings); // Lab's own settings: its XSRF and token handling apply
    expect(calls[1].url).toBe('/user/alice/conda-store/api/v1/environment/?page=2&size=25&search=py&sort_by=namespace');
    expect(transport.url('api/v1/build/3/lockfile/')).toBe('/user/alice/conda-store/api/v1/build/3/lockfile/');
  });

  it("passes the extension's error words through (service down)", async () => {
    const down = 'conda-store service at http://127.0.0.1:9/ is not reachable: connection refused';
    const { transport } = labTransport(() => new Response(JSON.stringify({ status: 'error', data: null, message: down }),
      { status: 503 }));
    await expect(new CondaStoreClient(transport).environments()).rejects.toMatchObject({ status: 503, message: down });
  });

  it('reads the extension config, and says why when there is none', async () => {
    const config = { configured: true, reachable: true, message: null, public_url: 'http://h/services/conda-store',
      registry: 'h', user: null };
    let { transport, calls } = labTransport(() => new Response(JSON.stringify({ status: 'ok', data: config, message: null })));
    expect(await transport.config()).toEqual(config);
    expect(calls[0].url).toBe('/user/alice/conda-store/config');
    ({ transport } = labTransport(() => new Response('<html>not found</html>', { status: 404, statusText: 'Not Found' })));
    await expect(transport.config()).rejects.toThrow('404 Not Found');
  });
});

// -- the panel model --------------------------------------------------------------------------
const build = (id: number, envId: number, status: string, extra: Record<string, unknown> = {}) => ({
  id, environment_id: envId, status, status_info: null, build_artifacts: [], ...extra
});
const env = (id: number, ns: string, name: string, current: ReturnType<typeof build> | null) => ({
  id, name, namespace: { id: 1, name: ns }, description: null, current_build_id: current?.id ?? null, current_build: current
});

function row(ns: string, name: string): EnvironmentRow {
  return { environment: env(1, ns, name, null) as never, namespace: ns, name, build: null, inFlight: false };
}

describe('groupRows', () => {
  it('groups by namespace, sorted, and filters on namespace/name', () => {
    const rows = [row('team', 'r'), row('alice', 'py'), row('team', 'py'), row('alice', 'analysis')];
    expect(groupRows(rows).map((g) => [g.namespace, g.rows.map((r) => r.name)])).toEqual([
      ['alice', ['analysis', 'py']], ['team', ['py', 'r']]]);
    expect(groupRows(rows, ' PY ').map((g) => [g.namespace, g.rows.map((r) => r.name)])).toEqual([
      ['alice', ['py']], ['team', ['py']]]);
    expect(groupRows(rows, 'team/').map((g) => g.rows.length)).toEqual([2]);
    expect(groupRows(rows, 'nothing')).toEqual([]);
  });
});

describe('currentStep', () => {
  it('is the last step that started and has not ended', () => {
    expect(currentStep('-- solve\n== solve: 1.2 s\n-- install\nlinking…')).toBe('install');
    expect(currentStep('-- solve\n== solve: 1.2 s')).toBeUndefined();
    expect(currentStep('')).toBeUndefined();
  });
});

describe('EnvironmentsModel', () => {
  it('shows the in-flight build with its step, then reports how a watched build ended, once', async () => {
    let phase: 'building' | 'done' = 'building';
    const transport = new FakeTransport({
      'GET api/v1/environment/': () => ok([env(1, 'alice', 'py', build(10, 1, 'COMPLETED')), env(2, 'team', 'r', null)],
        { page: 1, size: 100, count: 2 }),
      'GET api/v1/build/': (o) => ok(phase === 'building' && o.query?.status === 'BUILDING' ? [build(11, 1, 'BUILDING')] : [],
        { page: 1, size: 100, count: 1 }),
      'GET api/v1/build/11/logs/': () => ({ body: '-- solve\n== solve: 0.5 s\n-- install\n' }),
      'GET api/v1/build/11/': () => ok(build(11, 1, 'COMPLETED', { environment: { namespace: 'alice', name: 'py' } }))
    });
    const model = new EnvironmentsModel(new CondaStoreClient(transport));
    const finished: FinishedBuild[] = [];
    model.finished.connect((_, f) => void finished.push(f));

    await model.refresh();
    const [py, r] = model.state.rows;
    expect(py).toMatchObject({ namespace: 'alice', name: 'py', inFlight: true, step: 'install' });
    expect(py.build?.id).toBe(11);
    expect(statusText(py)).toBe('BUILDING · install');
    expect(r).toMatchObject({ build: null, inFlight: false });
    expect(statusText(r)).toBe('no build');
    expect(finished).toEqual([]);

    phase = 'done';
    await model.refresh();
    expect(finished.map((f) => [f.build.id, f.build.status, f.namespace, f.name])).toEqual([[11, 'COMPLETED', 'alice', 'py']]);
    await model.refresh();
    expect(finished).toHaveLength(1);
    model.dispose();
  });

  it('keeps the rows and shows the error when the service goes away', async () => {
    let down = false;
    const message = 'conda-store service at http://127.0.0.1:9 is not reachable: connection refused';
    const transport = new FakeTransport({
      'GET api/v1/environment/': () => (down ? { status: 503, body: { status: 'error', data: null, message } }
        : ok([env(1, 'alice', 'py', null)], { page: 1, size: 100, count: 1 })),
      'GET api/v1/build/': () => ok([], { page: 1, size: 100, count: 0 })
    });
    const model = new EnvironmentsModel(new CondaStoreClient(transport));
    await model.refresh();
    down = true;
    await model.refresh();
    expect(model.state.error?.message).toBe(message);
    expect(model.state.rows).toHaveLength(1);
    down = false;
    await model.refresh();
    expect(model.state.error).toBeUndefined();
  });

  it('pages through every environment', async () => {
    const transport = new FakeTransport({
      'GET api/v1/environment/': (o) => ok(o.query?.page === 1 ? [env(1, 'a', 'x', null)] : [env(2, 'b', 'y', null)],
        { page: o.query?.page, size: 1, count: 2 }),
      'GET api/v1/build/': () => ok([], { page: 1, size: 100, count: 0 })
    });
    const model = new EnvironmentsModel(new CondaStoreClient(transport));
    await model.refresh();
    expect(model.state.rows.map((r) => r.name)).toEqual(['x', 'y']);
  });
});

// -- the panel component ----------------------------------------------------------------------
describe('EnvironmentsPanel', () => {
  let cleanup: (() => void) | undefined;
  afterEach(() => {
    cleanup?.();
    cleanup = undefined;
  });

  async function mount(transport: FakeTransport, problem?: string) {
    const client = new CondaStoreClient(transport);
    const model = new EnvironmentsModel(client);
    const opened: unknown[] = [];
    const copied: string[] = [];
    const actions: PanelActions = {
      open: (route) => void opened.push(route),
      rebuild: async () => 99,
      copy: (text) => void copied.push(text)
    };
    const container = document.createElement('div');
    document.body.appendChild(container);
    const root = createRoot(container);
    await act(async () => root.render(
      <EnvironmentsPanel model={model} client={client} actions={actions} registryHost="reg:5000" problem={problem} />));
    await act(async () => model.refresh());
    await settle();
    cleanup = () => { act(() => root.unmount()); container.remove(); };
    return { container, opened, copied, model };
  }

  const transport = () => new FakeTransport({
    'GET api/v1/environment/': () => ok([
      env(1, 'team', 'r', build(20, 1, 'FAILED')),
      env(2, 'alice', 'py', build(10, 2, 'COMPLETED', { build_key: 'abc-10', build_artifacts: [
        { id: 1, artifact_type: 'LOCKFILE', key: 'k' }, { id: 2, artifact_type: 'YAML', key: 'k' }] }))
    ], { page: 1, size: 100, count: 2 }),
    'GET api/v1/build/': () => ok([], { page: 1, size: 100, count: 0 })
  });

  it('lists environments grouped by namespace, filters them, and offers their actions', async () => {
    const { container, opened, copied } = await mount(transport());
    const groups = [...container.querySelectorAll('section.cs-panel-group')];
    expect(groups.map((g) => g.querySelector('h3')?.textContent)).toEqual(['alice', 'team']);
    const items = [...container.querySelectorAll('li.cs-panel-item')];
    expect(items.map((li) => li.getAttribute('data-environment'))).toEqual(['alice/py', 'team/r']);
    expect(items.map((li) => li.querySelector('[data-status]')?.textContent)).toEqual(['COMPLETED', 'FAILED']);

    // open
    await act(async () => (items[0].querySelector('.cs-panel-name') as HTMLButtonElement).click());
    expect(opened).toEqual([{ kind: 'environment', namespace: 'alice', name: 'py' }]);
    await act(async () => (items[1].querySelector('[data-status]') as HTMLButtonElement).click());
    expect(opened[1]).toEqual({ kind: 'build', id: 20 });

    // actions: copy lines, downloads of the artifacts that exist only
    await act(async () => (items[0].querySelector('[aria-expanded]') as HTMLButtonElement).click());
    const group = container.querySelector('[role="group"]')!;
    const button = (text: string) => [...group.querySelectorAll('button')].find((b) => b.textContent === text)!;
    await act(async () => button('Copy run line').click());
    await act(async () => button('Copy docker pull').click());
    expect(copied).toEqual(['conda-store run alice/py -- python', 'docker pull reg:5000/alice/py:abc-10']);
    expect([...group.querySelectorAll('a')].map((a) => [a.textContent, a.getAttribute('href')])).toEqual([
      ['Lockfile', '/prefix/api/v1/build/10/lockfile/?format=yaml'], ['YAML', '/prefix/api/v1/build/10/yaml/']]);
    await act(async () => button('Rebuild').click());
    expect(opened[2]).toEqual({ kind: 'build', id: 99 });

    // filter
    const filter = container.querySelector('input[type="search"]') as HTMLInputElement;
    await act(async () => {
      const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value')!.set!;
      setter.call(filter, 'team');
      filter.dispatchEvent(new Event('input', { bubbles: true }));
    });
    expect([...container.querySelectorAll('li.cs-panel-item')].map((li) => li.getAttribute('data-environment')))
      .toEqual(['team/r']);
  });

  it('says why the service cannot be used instead of spinning', async () => {
    const message = 'conda-store service at http://127.0.0.1:9 is not reachable: connection refused';
    const { container } = await mount(new FakeTransport({
      'GET api/v1/environment/': () => ({ status: 503, body: { status: 'error', data: null, message } }),
      'GET api/v1/build/': () => ok([], { page: 1, size: 100, count: 0 })
    }));
    const alert = container.querySelector('[role="alert"]');
    expect(alert?.textContent).toContain('conda-store is not available.');
    expect(alert?.textContent).toContain(message);
    expect(container.textContent).not.toContain('Loading');
  });

  it('shows the configuration problem the extension reports', async () => {
    const { container } = await mount(transport(), 'no conda-store service is configured: set CONDA_STORE_URL');
    expect(container.querySelector('[role="alert"]')?.textContent).toContain('set CONDA_STORE_URL');
  });
});

describe('LoginView in JupyterLab', () => {
  it('reports a refused credential and never leaves the page (no hub redirect)', async () => {
    const assign = vi.fn();
    vi.stubGlobal('location', { ...window.location, assign });
    const container = document.createElement('div');
    const root = createRoot(container);
    const value = {
      client: new CondaStoreClient(new FakeTransport({})), nav: { href: () => '#', go: () => {} },
      session: { ...alice, authenticated: false, username: null }, refreshSession: async () => {},
      loginMode: 'host' as const, registryHost: 'h'
    };
    await act(async () => root.render(<UIContext.Provider value={value}><LoginView /></UIContext.Provider>));
    expect(container.querySelector('[role="alert"]')?.textContent).toContain("did not accept this server's credential");
    expect(container.querySelector('input, form')).toBeNull();
    expect(assign).not.toHaveBeenCalled();
    act(() => root.unmount());
    vi.unstubAllGlobals();
  });
});
