/** Environments as kernels in Lab, without Lab: the kernel routes' client, freshness, notebook records, panel parts. */
import { act } from 'react';
import { createRoot } from 'react-dom/client';
import { afterEach, describe, expect, it } from 'vitest';
import { Signal } from '@lumino/signaling';
import { CondaStoreClient } from '../api';
import { KernelsClient } from '../api/kernels';
import type { KernelEntry, RunningKernel } from '../api/kernels';
import { addIpykernel, dependencyName, withPackage } from '../lab/ipykernel';
import { KernelsModel } from '../lab/kernels';
import { ActiveNotebookSection, KernelLine } from '../lab/kernelViews';
import { EnvironmentsModel } from '../lab/model';
import type { EnvironmentRow } from '../lab/model';
import { NotebooksModel } from '../lab/notebooks';
import type { NotebookLike, NotebookTrackerLike } from '../lab/notebooks';
import { EnvironmentsPanel } from '../lab/panel';
import type { PanelActions } from '../lab/panel';
import { FakeTransport, ok } from './fake';
import { settle } from './render';

const entry = (environment: string, status: KernelEntry['status'], build_id: number | null = 1,
  namespace = 'alice'): KernelEntry => ({
  namespace, environment, kernel_name: status === 'ready' ? `conda-store-${namespace}-${environment}` : null,
  display_name: `${namespace}/${environment}`, build_id, language: status === 'ready' ? 'python' : null, status,
  message: status === 'no-kernel-package' ? 'no ipykernel in this environment' : ''
});

const runningOf = (build: number, current: number | null = build, extra: Partial<RunningKernel> = {}): RunningKernel => ({
  namespace: 'alice', environment: 'py', build_id: build, lockfile_sha256: `sha-${build}`,
  prefix: `/store/alice/py-${build}`, source: 'store', pinned: null, current_build_id: current,
  started: `2026-12-02T12:00:0${build % 10}Z`, ...extra
});

// -- the client -------------------------------------------------------------------------------
describe('KernelsClient', () => {
  it('reads the list (plain or enveloped), forces a refresh with POST, and says 404 is not ours', async () => {
    const list = { version: 'v1', kernels: [entry('py', 'ready')] };
    const transport = new FakeTransport({
      'GET kernels': () => ({ body: list }),
      'POST kernels/refresh': () => ok({ ...list, version: 'v2' }),
      'GET kernels/running/k-1': () => ({ body: runningOf(3) }),
      'GET kernels/running/other': () => ({ status: 404, body: { message: 'kernel other was not started from an environment' } }),
      'GET kernels/running/broken': () => ({ status: 503, body: { message: 'conda-store service is not reachable' } })
    });
    const client = new KernelsClient(transport);
    expect(await client.list()).toEqual(list);
    expect((await client.refresh()).version).toBe('v2');
    expect(transport.requests[1].options.method).toBe('POST');
    expect(await client.running('k-1')).toMatchObject({ build_id: 3, lockfile_sha256: 'sha-3' });
    expect(await client.running('other')).toBeNull();
    await expect(client.running('broken')).rejects.toMatchObject({ status: 503, message: 'conda-store service is not reachable' });
  });
});

// -- freshness --------------------------------------------------------------------------------
class FakeDocument extends EventTarget {
  hidden = false;
  show(hidden: boolean) {
    this.hidden = hidden;
    this.dispatchEvent(new Event('visibilitychange'));
  }
}

const until = async (what: string, condition: () => boolean, ms = 2000) => {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('KernelsModel', () => {
  it('refreshes the kernelspecs when the version changes, not on the first answer nor on an unchanged one', async () => {
    let version = 'v1';
    const transport = new FakeTransport({ 'GET kernels': () => ({ body: { version, kernels: [entry('py', 'ready')] } }) });
    let refreshed = 0;
    const model = new KernelsModel(new KernelsClient(transport), { refreshSpecs: async () => void refreshed++ });
    await model.poll();
    await model.poll();
    expect(refreshed).toBe(0);
    expect(model.entry('alice', 'py')?.status).toBe('ready');
    version = 'v2';
    await model.poll();
    expect(refreshed).toBe(1);
  });

  it('on a completed build: POST kernels/refresh, then the kernelspecs at once', async () => {
    const transport = new FakeTransport({
      'GET kernels': () => ({ body: { version: 'v1', kernels: [] } }),
      'POST kernels/refresh': () => ({ body: { version: 'v1', kernels: [entry('py', 'ready')] } })
    });
    const order: string[] = [];
    const model = new KernelsModel(new KernelsClient(transport), {
      refreshSpecs: async () => void order.push(`specs after ${transport.requests.map((r) => r.options.method ?? 'GET').join(',')}`)
    });
    await model.poll();
    await model.buildCompleted(); // same version: still refreshed (Lab may not have the spec yet)
    expect(order).toEqual(['specs after GET,POST']);
    expect(model.entry('alice', 'py')?.kernel_name).toBe('conda-store-alice-py');
  });

  it('polls every interval while visible, stops while hidden, and polls at once when shown again', async () => {
    const transport = new FakeTransport({ 'GET kernels': () => ({ body: { version: 'v', kernels: [] } }) });
    const doc = new FakeDocument();
    const model = new KernelsModel(new KernelsClient(transport),
      { refreshSpecs: async () => {}, interval: 20, document: doc as unknown as Document });
    model.start();
    await until('three polls', () => transport.requests.length >= 3);
    doc.show(true);
    await new Promise((r) => setTimeout(r, 30)); // let a poll already under way finish
    const hiddenCount = transport.requests.length;
    await new Promise((r) => setTimeout(r, 100));
    expect(transport.requests.length).toBe(hiddenCount);
    model.dispose();
    const again = new KernelsModel(new KernelsClient(transport),
      { refreshSpecs: async () => {}, interval: 60_000, document: doc as unknown as Document });
    again.start(); // hidden: nothing yet
    await new Promise((r) => setTimeout(r, 20));
    const before = transport.requests.length;
    expect(before).toBe(hiddenCount);
    doc.show(false); // visible again: at once, not after the 60 s interval
    await until('a poll on visibility', () => transport.requests.length === before + 1);
    again.dispose();
  });

  it('keeps the entries and reports the error when a poll fails', async () => {
    let down = false;
    const transport = new FakeTransport({
      'GET kernels': () => (down ? { status: 503, body: { message: 'the server is restarting' } }
        : { body: { version: 'v', kernels: [entry('py', 'ready')] } })
    });
    const model = new KernelsModel(new KernelsClient(transport), { refreshSpecs: async () => {} });
    await model.poll();
    down = true;
    await model.poll();
    expect(model.state.error).toBe('the server is restarting');
    expect(model.entry('alice', 'py')).toBeDefined();
  });

  it('stops polling a server whose kernel routes are off (404), and passes on the list\'s own error', async () => {
    let off = false;
    const transport = new FakeTransport({
      'GET kernels': () => (off ? { status: 404, body: { message: 'kernels from conda-store environments are disabled' } }
        : { body: { version: 'v', kernels: [], error: 'conda-store service at http://x is not reachable' } })
    });
    const model = new KernelsModel(new KernelsClient(transport), { refreshSpecs: async () => {}, interval: 10 });
    await model.poll();
    expect(model.state.error).toBe('conda-store service at http://x is not reachable');
    off = true;
    model.start();
    await until('the 404', () => model.state.disabled === true);
    const asked = transport.requests.length;
    await new Promise((r) => setTimeout(r, 60));
    expect(transport.requests.length).toBe(asked);
    expect(model.state.error).toBeUndefined();
    model.dispose();
  });
});

// -- notebooks --------------------------------------------------------------------------------
class FakeNotebook implements NotebookLike {
  id = 'nb';
  isDisposed = false;
  disposed = new Signal<this, void>(this);
  metadata: Record<string, unknown> = {};
  saves = 0;
  restarts = 0;
  kernel: { id: string; name: string } | null = null;
  kernelChanged = new Signal<this, unknown>(this);
  statusChanged = new Signal<this, string>(this);
  readonly sessionContext: NotebookLike['sessionContext'];
  readonly context: NotebookLike['context'];
  constructor() {
    const nb = this; // eslint-disable-line @typescript-eslint/no-this-alias
    this.sessionContext = {
      get session() {
        return { kernel: nb.kernel };
      },
      kernelChanged: this.kernelChanged,
      statusChanged: this.statusChanged,
      restartKernel: async () => void nb.restarts++
    };
    this.context = {
      path: 'work/analysis.ipynb',
      model: {
        getMetadata: (key: string) => nb.metadata[key],
        setMetadata: (key: string, value: unknown) => void (nb.metadata[key] = JSON.parse(JSON.stringify(value)))
      },
      save: async () => void nb.saves++
    };
  }
  start(id: string, name = 'conda-store-alice-py') {
    this.kernel = { id, name };
    this.kernelChanged.emit(null);
  }
  restart() {
    this.statusChanged.emit('restarting');
    this.statusChanged.emit('starting');
    this.statusChanged.emit('idle');
  }
}

class FakeTracker implements NotebookTrackerLike {
  currentWidget: NotebookLike | null = null;
  currentChanged = new Signal<this, NotebookLike | null>(this);
  widgetAdded = new Signal<this, NotebookLike>(this);
  widgets: NotebookLike[] = [];
  forEach(fn: (w: NotebookLike) => void) {
    this.widgets.forEach(fn);
  }
  add(w: NotebookLike) {
    this.widgets.push(w);
    this.widgetAdded.emit(w);
    this.currentWidget = w;
    this.currentChanged.emit(w);
  }
}

describe('NotebooksModel', () => {
  it('records the build in the notebook after each start and restart, keeps the pin, and pins with a save', async () => {
    let build = 12;
    const transport = new FakeTransport({ 'GET kernels/running/k1': () => ({ body: runningOf(build, build) }) });
    const tracker = new FakeTracker();
    const model = new NotebooksModel(new KernelsClient(transport), tracker, { isOurs: () => true, retryDelay: 1 });
    const nb = new FakeNotebook();
    tracker.add(nb);
    expect(model.active).toMatchObject({ path: 'work/analysis.ipynb', hasKernel: false, running: null });

    nb.start('k1');
    await model.idle();
    expect(nb.metadata.conda_store).toEqual({ namespace: 'alice', environment: 'py', build_id: 12,
      lockfile_sha256: 'sha-12', started: '2026-12-02T12:00:02Z' });
    expect(model.active?.running?.build_id).toBe(12);

    await model.pinActive(12);
    expect(nb.metadata.conda_store).toMatchObject({ build_id: 12, pin_build: 12 });
    expect(nb.saves).toBe(1); // the server reads the pin from the saved notebook
    expect(model.active?.pin).toBe(12);

    build = 13; // a rebuild; the restart runs it (the server's business), the record follows
    nb.restart();
    await model.idle();
    expect(nb.metadata.conda_store).toEqual({ namespace: 'alice', environment: 'py', build_id: 13,
      lockfile_sha256: 'sha-13', started: '2026-12-02T12:00:03Z', pin_build: 12 });

    build = 14; // a restart made elsewhere (REST): Lab only sees the new process start
    nb.statusChanged.emit('starting');
    nb.statusChanged.emit('idle');
    await model.idle();
    expect(nb.metadata.conda_store).toMatchObject({ build_id: 14, started: '2026-12-02T12:00:04Z', pin_build: 12 });

    await model.pinActive(null);
    expect(nb.metadata.conda_store).not.toHaveProperty('pin_build');
    expect(nb.saves).toBe(2);
    await model.restartActive();
    expect(nb.restarts).toBe(1);
  });

  it("writes nothing for a kernel that is not ours, asked (404) or known from its spec", async () => {
    const transport = new FakeTransport({
      'GET kernels/running/py3': () => ({ status: 404, body: { message: 'not from an environment' } })
    });
    const tracker = new FakeTracker();
    const specs: Record<string, boolean | undefined> = { python3: undefined, other: false };
    const model = new NotebooksModel(new KernelsClient(transport), tracker, { isOurs: (n) => specs[n], retryDelay: 1 });
    const nb = new FakeNotebook();
    tracker.add(nb);
    nb.start('py3', 'python3');
    await model.idle();
    expect(nb.metadata).toEqual({});
    expect(model.active).toMatchObject({ hasKernel: true, running: null, loading: false });
    const asked = transport.requests.length;
    nb.start('k9', 'other');
    await model.idle();
    expect(transport.requests.length).toBe(asked); // a spec without metadata.conda_store: no request
  });

  it('asks again while the server has not recorded a kernel of ours yet', async () => {
    let asks = 0;
    const transport = new FakeTransport({
      'GET kernels/running/k1': () => (++asks < 3 ? { status: 404, body: { message: 'unknown' } } : { body: runningOf(5) })
    });
    const tracker = new FakeTracker();
    const model = new NotebooksModel(new KernelsClient(transport), tracker, { isOurs: () => true, retryDelay: 1 });
    const nb = new FakeNotebook();
    tracker.add(nb);
    nb.start('k1');
    await model.idle();
    expect(asks).toBe(3);
    expect(nb.metadata.conda_store).toMatchObject({ build_id: 5 });
  });
});

// -- specification edit -------------------------------------------------------------------------
describe('withPackage', () => {
  it('adds ipykernel before a pip block, once', () => {
    const spec = { name: 'py', channels: ['local'], dependencies: ['python 3.11.*', 'numpy', { pip: ['rich'] }] };
    expect(withPackage(spec, 'ipykernel').dependencies).toEqual(['python 3.11.*', 'numpy', 'ipykernel', { pip: ['rich'] }]);
    const has = { name: 'py', dependencies: ['conda-forge::ipykernel>=6'] };
    expect(withPackage(has, 'ipykernel')).toBe(has);
    expect(withPackage({ name: 'x' }, 'ipykernel').dependencies).toEqual(['ipykernel']);
    expect(dependencyName('ipykernel 6.*')).toBe('ipykernel');
    expect(dependencyName('ipykernel_launcher')).toBe('ipykernel_launcher');
  });

  it('submits the current specification with ipykernel, through the client', async () => {
    let submitted: Record<string, unknown> | undefined;
    const transport = new FakeTransport({
      'GET api/v1/build/7/': () => ok({ id: 7, specification: { spec: { name: 'r', channels: ['local'], dependencies: ['r-base'] } } }),
      'POST api/v1/specification/': (o) => {
        submitted = o.json as Record<string, unknown>;
        return ok({ build_id: 8 });
      }
    });
    const row = { namespace: 'team', name: 'r', environment: { current_build_id: 7, current_build: null } } as unknown as EnvironmentRow;
    expect(await addIpykernel(new CondaStoreClient(transport), row)).toBe(8);
    expect(submitted).toMatchObject({ namespace: 'team', environment_name: 'r' });
    expect(submitted?.specification).toBe('name: r\nchannels:\n  - local\ndependencies:\n  - r-base\n  - ipykernel\n');
  });
});

// -- panel parts ------------------------------------------------------------------------------
describe('kernel parts of the panel', () => {
  let cleanup: (() => void) | undefined;
  afterEach(() => {
    cleanup?.();
    cleanup = undefined;
  });

  async function mountUi(ui: React.ReactNode) {
    const container = document.createElement('div');
    document.body.appendChild(container);
    const root = createRoot(container);
    await act(async () => root.render(ui));
    await settle();
    cleanup = () => { act(() => root.unmount()); container.remove(); };
    return container;
  }

  const button = (c: Element, text: string) =>
    [...c.querySelectorAll('button')].find((b) => b.textContent?.includes(text)) as HTMLButtonElement;

  it('lists each environment with its kernel status and offers "add ipykernel and rebuild", errors next to it', async () => {
    const env = (id: number, name: string) => ({ id, name, namespace: { id: 1, name: 'alice' }, description: null,
      current_build_id: id, current_build: { id, environment_id: id, status: 'COMPLETED', status_info: null, build_artifacts: [] } });
    const transport = new FakeTransport({
      'GET api/v1/environment/': () => ok([env(1, 'py'), env(2, 'plain')], { page: 1, size: 100, count: 2 }),
      'GET api/v1/build/': () => ok([], { page: 1, size: 100, count: 0 }),
      'GET kernels': () => ({ body: { version: 'v', kernels: [entry('py', 'ready', 1), entry('plain', 'no-kernel-package', 2)] } })
    });
    const client = new CondaStoreClient(transport);
    const model = new EnvironmentsModel(client);
    const kernels = new KernelsModel(new KernelsClient(transport), { refreshSpecs: async () => {} });
    const asked: string[] = [];
    const actions: PanelActions = {
      open: () => {}, rebuild: async () => 1, copy: () => {},
      addIpykernel: async (row) => {
        asked.push(row.name);
        throw new Error('the namespace alice is read-only for you');
      }
    };
    const c = await mountUi(<EnvironmentsPanel model={model} client={client} actions={actions} registryHost="r" kernels={kernels} />);
    await act(async () => { await model.refresh(); await kernels.poll(); });
    const py = c.querySelector('li[data-environment="alice/py"]')!;
    const plain = c.querySelector('li[data-environment="alice/plain"]')!;
    expect(py.querySelector('[data-kernel-status]')?.getAttribute('data-kernel-status')).toBe('ready');
    expect(py.textContent).toContain('Kernel · python · build 1');
    expect(plain.querySelector('[data-kernel-status]')?.textContent).toContain('No kernel package');
    const add = button(plain, 'Add ipykernel and rebuild');
    expect(add.getAttribute('aria-label')).toBe('Add ipykernel to alice/plain and rebuild');
    await act(async () => add.click());
    await settle();
    expect(asked).toEqual(['plain']);
    expect(plain.querySelector('[role="alert"]')?.textContent).toBe('the namespace alice is read-only for you');
  });

  it('shows the active notebook\'s environment and build, offers the restart to the current build, and the pin', async () => {
    const transport = new FakeTransport({
      'GET kernels/running/k1': () => ({ body: runningOf(12, 12) }),
      'GET kernels': () => ({ body: { version: 'v2', kernels: [entry('py', 'ready', 14)] } })
    });
    const kc = new KernelsClient(transport);
    const tracker = new FakeTracker();
    const notebooks = new NotebooksModel(kc, tracker, { isOurs: () => true, retryDelay: 1 });
    const kernels = new KernelsModel(kc, { refreshSpecs: async () => {} });
    const nb = new FakeNotebook();
    tracker.add(nb);
    nb.start('k1');
    await notebooks.idle();
    const c = await mountUi(<ActiveNotebookSection notebooks={notebooks} kernels={kernels} />);
    expect(c.querySelector('[data-field="environment"]')?.textContent).toBe('alice/py');
    expect(c.querySelector('[data-field="build"]')?.textContent).toBe('#12');
    expect(c.querySelector('[data-field="newer"]')).toBeNull(); // nothing newer known yet
    await act(async () => kernels.poll()); // build 14 became current
    expect(c.querySelector('[data-field="newer"]')?.textContent).toContain('Build 14 is the current build.');
    await act(async () => button(c, 'Restart to use build 14').click());
    expect(nb.restarts).toBe(1);
    await act(async () => button(c, 'Always use build 12').click());
    await settle();
    expect(nb.metadata.conda_store).toMatchObject({ pin_build: 12 });
    expect(c.querySelector('[data-field="pin"]')?.textContent).toContain('Always uses build 12.');
    expect(c.querySelector('[data-field="newer"]')).toBeNull(); // pinned: the current build is not offered
    await act(async () => button(c, 'Unpin').click());
    await settle();
    expect(nb.metadata.conda_store).not.toHaveProperty('pin_build');
    expect(nb.saves).toBe(2);
  });

  it('says when the active notebook\'s kernel is not from an environment', async () => {
    const transport = new FakeTransport({ 'GET kernels/running/py': () => ({ status: 404, body: { message: 'no' } }) });
    const tracker = new FakeTracker();
    const notebooks = new NotebooksModel(new KernelsClient(transport), tracker, { isOurs: () => undefined });
    const nb = new FakeNotebook();
    tracker.add(nb);
    nb.start('py', 'python3');
    await notebooks.idle();
    const c = await mountUi(<ActiveNotebookSection notebooks={notebooks} />);
    expect(c.textContent).toContain('Its kernel is not from a conda-store environment.');
  });

  it('renders nothing for a ready-less environment without a build, and the kernel line is keyboard reachable', async () => {
    const c = await mountUi(<><KernelLine entry={entry('x', 'no-build', null)} label="alice/x" addIpykernel={async () => {}} />
      <KernelLine entry={entry('y', 'no-kernel-package')} label="alice/y" addIpykernel={async () => {}} building /></>);
    expect(c.querySelectorAll('[data-kernel-status]')).toHaveLength(1);
    const add = button(c, 'Add ipykernel');
    expect(add.tagName).toBe('BUTTON');
    expect(add.disabled).toBe(true); // a build is under way: its result decides
  });
});
