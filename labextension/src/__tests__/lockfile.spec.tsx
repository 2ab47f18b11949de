/** Environments made from a conda-lock file: shown honestly, no YAML editor, rebuild still works. */
import { act } from 'react';
import { afterEach, describe, expect, it } from 'vitest';
import { CreateView } from '../views/CreateView';
import { EnvironmentView } from '../views/EnvironmentView';
import { FakeTransport, ok } from './fake';
import { render, settle } from './render';
import type { Rendered } from './render';

let view: Rendered | undefined;
afterEach(() => {
  view?.unmount();
  view = undefined;
});

const LOCKFILE = { version: 1, metadata: { platforms: ['linux-64'] }, package: [{ name: 'hello' }, { name: 'python' }] };
const build = {
  id: 10, environment_id: 1, status: 'COMPLETED', size: 1024, build_artifacts: [],
  scheduled_on: null, started_on: null, ended_on: null, deleted_on: null,
  specification: { id: 5, name: 'locked', sha256: 'abc', created_on: null, is_lockfile: true,
    spec: { name: 'locked', description: null, lockfile: LOCKFILE } }
};
const environment = {
  id: 1, name: 'locked', namespace: { id: 1, name: 'alice' }, description: null, current_build_id: 10,
  current_build: { id: 10, status: 'COMPLETED', size: 1024, build_artifacts: [] }
};

function transport() {
  return new FakeTransport({
    'GET api/v1/environment/alice/locked/': () => ok(environment),
    'GET api/v1/build/10/': () => ok(build),
    'GET api/v1/build/': () => ok([build], { page: 1, size: 100, count: 1 }),
    'GET api/v1/namespace/': () => ok([{ id: 1, name: 'alice' }], { page: 1, size: 100, count: 1 }),
    'PUT api/v1/build/10/': () => ok({ build_id: 11 })
  });
}

const NOTE = 'made from a lockfile, so it cannot be edited as environment.yaml. ' +
  'Submit a new lockfile with conda-store env update -f conda-lock.yml -n ns/env;';

describe('a lockfile environment', () => {
  it('says why it is not editable, shows what it pins, and rebuilds', async () => {
    const fake = transport();
    view = await render(<EnvironmentView namespace="alice" name="locked" />, fake);
    await settle();
    expect(view.container.querySelector('[data-testid=lockfile-note]')?.textContent).toContain(NOTE);
    expect(view.container.querySelector('[data-testid=lockfile-note] code')?.textContent).toBe('conda-store env update -f conda-lock.yml -n ns/env');
    expect(view.container.querySelector('[aria-label="Current specification"]')).toBeNull(); // not passed off as YAML
    expect(view.container.querySelector('summary')?.textContent).toBe('Lockfile: 2 locked packages');
    const edit = [...view.container.querySelectorAll('.cs-page-header button')].find((b) => b.textContent === 'Edit') as HTMLButtonElement;
    expect(edit.disabled).toBe(true);
    expect(view.container.querySelector('.cs-page-header a')).toBeNull(); // no link to the YAML editor

    const rebuild = view.container.querySelector('button[aria-label="Rebuild build 10"]') as HTMLButtonElement;
    await act(async () => { rebuild.click(); });
    await settle();
    expect(fake.requests.some((r) => r.path === 'api/v1/build/10/' && r.options.method === 'PUT')).toBe(true);
    expect(view.visits).toEqual([{ kind: 'build', id: 11 }]);
  });

  it('the edit route explains instead of offering environment.yaml, and submits nothing', async () => {
    const fake = transport();
    view = await render(<CreateView edit={{ namespace: 'alice', name: 'locked' }} />, fake);
    await settle();
    expect(view.container.querySelector('[data-testid=lockfile-note]')?.textContent).toContain(NOTE);
    expect(view.container.querySelector('textarea')).toBeNull();
    expect(view.container.querySelector('button[type=submit]')).toBeNull();
    expect(fake.requests.filter((r) => r.options.method === 'POST')).toEqual([]);
  });

  it('an environment.yaml environment still has its editor', async () => {
    const fake = transport();
    const yamlBuild = { ...build, specification: { ...build.specification, is_lockfile: false,
      spec: { name: 'locked', dependencies: ['hello'] } } };
    (fake as unknown as { handlers: Record<string, unknown> }).handlers['GET api/v1/build/10/'] = () => ok(yamlBuild);
    view = await render(<CreateView edit={{ namespace: 'alice', name: 'locked' }} />, fake);
    await settle();
    expect(view.container.querySelector('[data-testid=lockfile-note]')).toBeNull();
    expect((view.container.querySelector('textarea') as HTMLTextAreaElement).value).toBe('name: locked\ndependencies:\n  - hello\n');
  });
});
