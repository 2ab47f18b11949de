import { act } from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Home } from '../views/Home';
import { LogView } from '../views/LogView';
import { CreateView } from '../views/CreateView';
import { FakeTransport, ok } from './fake';
import { render, settle } from './render';
import type { Rendered } from './render';

let view: Rendered | undefined;
afterEach(() => {
  view?.unmount();
  view = undefined;
  vi.useRealTimers();
});

const env = (id: number, ns: string, name: string, status: string | null, artifacts: string[] = []) => ({
  id, name, namespace: { id: 1, name: ns }, description: null, current_build_id: status ? id * 10 : null,
  current_build: status ? { id: id * 10, status, build_artifacts: artifacts.map((t, i) => ({ id: i, artifact_type: t, key: 'k' })) } : null
});

describe('Home', () => {
  it('lists environments with their current build and only the downloads that exist', async () => {
    const transport = new FakeTransport({
      'GET api/v1/environment/': () => ok([env(1, 'team', 'py', 'COMPLETED', ['LOCKFILE', 'YAML']),
        env(2, 'team', 'r', 'FAILED'), env(3, 'alice', 'new', null)], { page: 1, size: 25, count: 60 }),
      'GET api/v1/namespace/': () => ok([{ id: 1, name: 'team' }, { id: 2, name: 'alice' }], { page: 1, size: 100, count: 2 })
    });
    view = await render(<Home />, transport);
    await settle();
    const rows = view.container.querySelectorAll('tbody tr');
    expect(rows).toHaveLength(3);
    expect(rows[0].getAttribute('data-environment')).toBe('team/py');
    expect(rows[0].querySelector('[data-status]')?.textContent).toBe('COMPLETED');
    expect([...rows[0].querySelectorAll('td.cs-downloads a')].map((a) => a.getAttribute('href'))).toEqual([
      '/prefix/api/v1/build/10/lockfile/?format=yaml', '/prefix/api/v1/build/10/yaml/']);
    expect(rows[1].querySelector('td.cs-downloads a')).toBeNull(); // failed: nothing to download
    expect(rows[2].textContent).toContain('no build');
    expect(view.container.textContent).toContain('60 environments');
    expect(view.container.textContent).toContain('Page 1 of 3');
    expect([...view.container.querySelectorAll('option')].map((o) => o.textContent)).toEqual(['All namespaces', 'team', 'alice']);
  });

  it('searches on the server: typing updates the route after a pause, and the query carries it', async () => {
    vi.useFakeTimers();
    const transport = new FakeTransport({
      'GET api/v1/environment/': () => ok([], { page: 1, size: 25, count: 0 }),
      'GET api/v1/namespace/': () => ok([], { page: 1, size: 100, count: 0 })
    });
    view = await render(<Home />, transport);
    const input = view.container.querySelector('input[type=search]') as HTMLInputElement;
    await act(async () => {
      const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value')!.set!;
      setter.call(input, 'numpy');
      input.dispatchEvent(new Event('input', { bubbles: true }));
    });
    expect(view.visits).toEqual([]);
    await act(async () => { vi.advanceTimersByTime(300); });
    expect(view.visits).toEqual([{ kind: 'home', search: 'numpy', namespace: undefined }]);
    view.unmount();
    view = await render(<Home search="numpy" namespace="team" page={2} />, transport);
    const last = transport.requests.filter((r) => r.path === 'api/v1/environment/').pop()!;
    expect(last.options.query).toMatchObject({ search: 'numpy', namespace: 'team', page: 2 });
  });

  it('shows the API error as worded, instead of the table', async () => {
    const transport = new FakeTransport({
      'GET api/v1/environment/': () => ({ status: 400, body: { status: 'error', data: null, message: "query parameter 'page' must be an integer >= 1, got '0'" } }),
      'GET api/v1/namespace/': () => ok([], { page: 1, size: 100, count: 0 })
    });
    view = await render(<Home />, transport);
    await settle();
    expect(view.container.querySelector('[role=alert]')?.textContent).toBe(
      "Environments: query parameter 'page' must be an integer >= 1, got '0'");
    expect(view.container.querySelector('table')).toBeNull();
  });
});

describe('LogView', () => {
  function sized(pre: HTMLElement, height: number) {
    // jsdom has no layout: give the log box a viewport of 100px and content of `height`.
    Object.defineProperty(pre, 'clientHeight', { configurable: true, value: 100 });
    Object.defineProperty(pre, 'scrollHeight', { configurable: true, get: () => height });
  }

  it('streams lines, follows the end, stops following when the user scrolls up, and ends', async () => {
    vi.stubGlobal('requestAnimationFrame', (fn: () => void) => { queueMicrotask(fn); return 1; });
    const transport = new FakeTransport({});
    const onEnd = vi.fn();
    view = await render(<LogView buildId={5} live={true} onEnd={onEnd} />, transport);
    const source = transport.sources[0];
    expect(source.path).toBe('api/v1/build/5/logs/stream/');
    const pre = view.container.querySelector('[data-testid=build-log]') as HTMLElement;
    let height = 500;
    sized(pre, 0);
    Object.defineProperty(pre, 'scrollHeight', { configurable: true, get: () => height });
    await act(async () => { source.emit('-- solve'); source.emit('== solve: 0.1 s'); });
    await settle();
    expect(pre.textContent).toBe('-- solve\n== solve: 0.1 s');
    expect(pre.scrollTop).toBe(500); // followed to the end

    // The user scrolls up: new lines no longer move the view.
    await act(async () => { pre.scrollTop = 100; pre.dispatchEvent(new Event('scroll')); });
    height = 900;
    await act(async () => { source.emit('-- install'); });
    await settle();
    expect(pre.scrollTop).toBe(100);
    const follow = [...view.container.querySelectorAll('button')].find((b) => b.textContent === 'Follow the log')!;
    expect(follow).toBeDefined();
    await act(async () => follow.click());
    expect(pre.scrollTop).toBe(900);

    await act(async () => source.end());
    expect(source.readyState).toBe(2);
    expect(onEnd).toHaveBeenCalledOnce();
    expect(view.container.querySelector('[data-testid=log-state]')?.textContent).toBe('3 lines');
    vi.unstubAllGlobals();
  });

  it('reads a finished build\'s log once, without a stream', async () => {
    const transport = new FakeTransport({ 'GET api/v1/build/6/logs/': () => new Response('a\nb\n') });
    view = await render(<LogView buildId={6} live={false} />, transport);
    await settle();
    expect(transport.sources).toHaveLength(0);
    expect(view.container.querySelector('[data-testid=build-log]')?.textContent).toBe('a\nb');
  });
});

describe('CreateView', () => {
  it('shows the server\'s validation problem with its line and column, and blocks submitting', async () => {
    vi.useFakeTimers();
    const transport = new FakeTransport({
      'GET api/v1/namespace/': () => ok([{ id: 1, name: 'team' }], { page: 1, size: 100, count: 1 }),
      'POST api/v1/specification/validate/': () => ok({ valid: false, line: 3, column: 1, name: null,
        message: "invalid YAML at line 3, column 1: expected ',' or ']'" })
    });
    view = await render(<CreateView />, transport);
    await act(async () => { vi.advanceTimersByTime(400); });
    await act(async () => { await Promise.resolve(); await Promise.resolve(); });
    const problem = view.container.querySelector('[data-testid=validation]')!;
    expect(problem.textContent).toContain('Line 3, column 1');
    expect(problem.textContent).toContain("invalid YAML at line 3, column 1: expected ',' or ']'");
    expect(view.container.querySelector('textarea')?.getAttribute('aria-invalid')).toBe('true');
    expect(view.container.querySelector('.cs-gutter-error')?.textContent).toBe('3\n');
    const submit = view.container.querySelector('button[type=submit]') as HTMLButtonElement;
    expect(submit.disabled).toBe(true);
    // Only namespaces alice may create in are offered (team is not hers).
    expect([...view.container.querySelectorAll('select option')].map((o) => o.textContent)).toEqual(['alice']);
  });
});

describe('logSummary', () => {
  it('pairs step markers with their durations and finds the failure', async () => {
    const { logSummary } = await import('../views/LogView');
    expect(logSummary(['build 1', '-- solve', '== solve: 0.027 s', '-- install', 'BUILD FAILED: install: no space left',
      'BUILD FAILED: later line'])).toEqual({
      steps: [{ name: 'solve', seconds: 0.027 }, { name: 'install' }],
      failure: 'install: no space left'
    });
    expect(logSummary(['== docker image: 1.5 s'])).toEqual({ steps: [{ name: 'docker image', seconds: 1.5 }], failure: undefined });
  });
});

describe('BuildView downloads', () => {
  it('shows the archive and image as being made after COMPLETED, then as links or failures, updating live', async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    const states = [
      [{ type: 'LOCKFILE', status: 'READY', reason: null }, { type: 'CONDA_PACK', status: 'PENDING', reason: null },
        { type: 'DOCKER_MANIFEST', status: 'PENDING', reason: null }],
      [{ type: 'LOCKFILE', status: 'READY', reason: null }, { type: 'CONDA_PACK', status: 'READY', reason: null },
        { type: 'DOCKER_MANIFEST', status: 'FAILED', reason: 'the base image was not found' }]
    ];
    let reads = 0;
    const build = () => {
      const artifacts = states[Math.min(reads++, 1)];
      return ok({
        id: 7, environment_id: 1, specification: null, status: 'COMPLETED', status_info: null, size: 1,
        scheduled_on: null, started_on: null, ended_on: null, deleted_on: null, build_key: 'k-7',
        build_artifacts: artifacts.filter((a) => a.status === 'READY').map((a, i) => ({ id: i, artifact_type: a.type, key: 'k' })),
        artifacts
      });
    };
    const transport = new FakeTransport({
      'GET api/v1/build/7/': build,
      'GET api/v1/build/7/logs/': () => ({ body: 'BUILD COMPLETED in 0.1 s\n' }),
      'GET api/v1/build/7/packages/': () => ok([], { page: 1, size: 100, count: 0 })
    });
    const { BuildView } = await import('../views/BuildView');
    view = await render(<BuildView id={7} />, transport);
    await settle();
    const item = (type: string) => view!.container.querySelector(`[data-artifact-type=${type}]`);
    expect(item('CONDA_PACK')?.getAttribute('data-artifact-state')).toBe('pending');
    expect(item('CONDA_PACK')?.querySelector('a')).toBeNull(); // nothing to download yet
    expect(item('CONDA_PACK')?.textContent).toContain('being made');
    expect(item('DOCKER_MANIFEST')?.getAttribute('data-artifact-state')).toBe('pending');
    await act(async () => { vi.advanceTimersByTime(1100); });
    await settle();
    expect(item('CONDA_PACK')?.querySelector('a')?.getAttribute('href')).toBe('/prefix/api/v1/build/7/archive/');
    expect(item('DOCKER_MANIFEST')?.getAttribute('data-artifact-state')).toBe('failed');
    expect(item('DOCKER_MANIFEST')?.textContent).toContain('the base image was not found');
    const polls = reads;
    await act(async () => { vi.advanceTimersByTime(3000); });
    expect(reads).toBe(polls); // nothing pending any more: no more polling
  });
});
