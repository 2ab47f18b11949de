/** Environment `namespace/name`: description, current specification, build history and actions. */
import { useState } from 'react';
import type { Build } from '../api';
import { useUI } from './context';
import {
  ConfirmDialog, ErrorMessage, Link, Loading, LockfileNote, StatusBadge, duration, formatBytes, formatTime, useAction, useAsync
} from './common';
import { lockedPackageCount, specToYaml } from './yaml';

export function EnvironmentView(props: { namespace: string; name: string }) {
  const { client, nav } = useUI();
  const { namespace, name } = props;
  const env = useAsync((signal) => client.environment(namespace, name, signal), [client, namespace, name]);
  const builds = useAsync(
    (signal) => env.value
      ? client.builds({ environment_id: env.value.id, order: 'desc', sort_by: 'id', size: 100 }, signal)
      : Promise.resolve(undefined),
    [client, env.value?.id, env.value?.current_build_id]
  );
  // The current build's specification: shown, and it decides whether "Edit" (a YAML editor) applies.
  const currentBuild = useAsync(
    (signal) => env.value?.current_build_id ? client.build(env.value.current_build_id, signal) : Promise.resolve(undefined),
    [client, env.value?.current_build_id]
  );
  const fromLockfile = !!currentBuild.value?.specification?.is_lockfile;
  const [confirmDelete, setConfirmDelete] = useState(false);
  const remove = useAction(async () => {
    await client.deleteEnvironment(namespace, name);
    nav.go({ kind: 'home' });
  });
  const label = `${namespace}/${name}`;

  if (env.error) {
    return (
      <section>
        <h1>{label}</h1>
        <ErrorMessage error={env.error} />
        <Link to={{ kind: 'home' }}>Back to environments</Link>
      </section>
    );
  }
  if (!env.value) return <Loading what={`environment ${label}`} />;
  const current = env.value.current_build;
  const refresh = () => { env.reload(); builds.reload(); };

  return (
    <section aria-labelledby="cs-env-title">
      <nav className="cs-breadcrumb" aria-label="Breadcrumb">
        <Link to={{ kind: 'home' }}>Environments</Link> / <Link to={{ kind: 'home', namespace }}>{namespace}</Link>
      </nav>
      <div className="cs-page-header">
        <h1 id="cs-env-title"><span className="cs-muted">{namespace}/</span>{name}</h1>
        <div className="cs-actions">
          {fromLockfile ? (
            <button type="button" className="cs-btn cs-btn-primary" disabled aria-describedby="cs-lockfile-note"
              title="Made from a lockfile: not editable as environment.yaml">Edit</button>
          ) : <Link to={{ kind: 'edit', namespace, name }} className="cs-btn cs-btn-primary">Edit</Link>}
          <button type="button" className="cs-btn cs-btn-danger" onClick={() => setConfirmDelete(true)}>Delete</button>
        </div>
      </div>
      {env.value.description ? <p>{env.value.description}</p> : null}
      <dl className="cs-meta">
        <dt>Current build</dt>
        <dd>
          {current ? <><Link to={{ kind: 'build', id: current.id }}>#{current.id}</Link> <StatusBadge status={current.status} /></> : '—'}
        </dd>
        <dt>Disk size</dt>
        <dd>{formatBytes(current?.size)}</dd>
      </dl>
      {current ? <CurrentSpecification build={currentBuild} /> : null}
      <h2>Builds</h2>
      <ErrorMessage error={builds.error} context="Builds" />
      {builds.loading && !builds.value ? <Loading what="builds" /> : null}
      {builds.value ? (
        <table className="cs-table" aria-label="Builds">
          <thead>
            <tr>
              <th scope="col">Build</th><th scope="col">Status</th><th scope="col">Scheduled</th>
              <th scope="col">Duration</th><th scope="col">Size</th><th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {builds.value.items.map((b) => (
              <BuildRow key={b.id} build={b} current={b.id === env.value!.current_build_id}
                namespace={namespace} name={name} onChange={refresh} />
            ))}
          </tbody>
        </table>
      ) : null}
      {confirmDelete ? (
        <ConfirmDialog
          title={`Delete ${label}?`}
          body={<p>The environment and its builds are deleted. Logs, lockfiles and YAML stay available to administrators.</p>}
          confirmLabel="Delete environment"
          typeToConfirm={name}
          busy={remove.busy}
          error={remove.error}
          onConfirm={() => void remove.run()}
          onCancel={() => { setConfirmDelete(false); remove.clearError(); }}
        />
      ) : null}
    </section>
  );
}

function CurrentSpecification(props: { build: { value?: Build; error?: Error; loading: boolean } }) {
  const { build } = props;
  const spec = build.value?.specification;
  return (
    <>
      <h2>Specification</h2>
      <ErrorMessage error={build.error} context="Specification" />
      {spec?.is_lockfile ? (
        // A lockfile is not environment.yaml: say so, and show what it pins rather than pass it off as YAML.
        <>
          <LockfileNote id="cs-lockfile-note" />
          <details>
            <summary>Lockfile: {lockedPackageCount(spec.spec)} locked packages</summary>
            <pre className="cs-code" tabIndex={0} aria-label="Current lockfile">{JSON.stringify(spec.spec.lockfile, null, 2)}</pre>
          </details>
        </>
      ) : spec ? (
        <pre className="cs-code" tabIndex={0} aria-label="Current specification">{specToYaml(spec.spec)}</pre>
      ) : build.loading ? <Loading what="specification" /> : null}
    </>
  );
}

function BuildRow(props: { build: Build; current: boolean; namespace: string; name: string; onChange(): void }) {
  const { client, nav } = useUI();
  const { build: b } = props;
  const deleted = b.deleted_on !== null;
  const setCurrent = useAction(async () => {
    await client.setCurrentBuild(props.namespace, props.name, b.id);
    props.onChange();
  });
  const rebuild = useAction(async () => nav.go({ kind: 'build', id: await client.rebuild(b.id) }));
  const [confirm, setConfirm] = useState(false);
  const remove = useAction(async () => {
    await client.deleteBuild(b.id);
    setConfirm(false);
    props.onChange();
  });
  const error = setCurrent.error ?? rebuild.error;
  return (
    <tr className={[props.current ? 'cs-row-current' : '', deleted ? 'cs-row-deleted' : ''].join(' ')}
      data-build={b.id} aria-current={props.current ? 'true' : undefined}>
      <td><Link to={{ kind: 'build', id: b.id }}>#{b.id}</Link>{deleted ? <span className="cs-muted"> (deleted)</span> : null}</td>
      <td><StatusBadge status={b.status} current={props.current} /></td>
      <td>{formatTime(b.scheduled_on)}</td>
      <td>{duration(b.started_on, b.ended_on)}</td>
      <td>{formatBytes(b.size)}</td>
      <td>
        <div className="cs-actions">
          {!props.current && !deleted && b.status === 'COMPLETED' ? (
            <button type="button" className="cs-btn cs-btn-sm cs-btn-outline" disabled={setCurrent.busy}
              onClick={() => void setCurrent.run()} aria-label={`Set build ${b.id} as current`}>Set current</button>
          ) : null}
          {!deleted ? (
            <button type="button" className="cs-btn cs-btn-sm cs-btn-outline" disabled={rebuild.busy}
              onClick={() => void rebuild.run()} aria-label={`Rebuild build ${b.id}`}>Rebuild</button>
          ) : null}
          {!deleted && !props.current ? (
            <button type="button" className="cs-btn cs-btn-sm cs-btn-outline-danger" onClick={() => setConfirm(true)}
              aria-label={`Delete build ${b.id}`}>Delete</button>
          ) : null}
        </div>
        <ErrorMessage error={error} />
        {confirm ? (
          <ConfirmDialog title={`Delete build #${b.id}?`}
            body={<p>Its environment prefix and archive are removed; its log, lockfile and YAML stay available.</p>}
            confirmLabel="Delete build" busy={remove.busy} error={remove.error}
            onConfirm={() => void remove.run()} onCancel={() => { setConfirm(false); remove.clearError(); }} />
        ) : null}
      </td>
    </tr>
  );
}
