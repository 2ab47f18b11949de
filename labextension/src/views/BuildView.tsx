/** Build: metadata, failure cause, how to use it (docker pull, conda-store run), artifacts, packages, log. */
import { useEffect, useId, useState } from 'react';
import { FINISHED_STATUSES } from '../api';
import type { ArtifactState, Build } from '../api';
import { useUI } from './context';
import { CopyLine, ErrorMessage, Link, Loading, StatusBadge, duration, formatBytes, formatTime, useAction, useAsync } from './common';
import { LogView } from './LogView';

/** How often an unfinished build's metadata is re-read while its log streams. */
const STATUS_POLL_MS = 2000;

/** How often a COMPLETED build is re-read while an artifact (archive, image) is still being made:
 * they take about a second, so the downloads update almost as soon as they exist. */
const ARTIFACT_POLL_MS = 1000;

export function BuildView(props: { id: number }) {
  const { client, nav } = useUI();
  const build = useAsync((signal) => client.build(props.id, signal), [client, props.id]);
  const [finished, setFinished] = useState(false);
  const env = useAsync(
    (signal) => build.value ? findEnvironment(client, build.value, signal) : Promise.resolve(undefined),
    [client, build.value?.environment_id]
  );
  const running = build.value ? !FINISHED_STATUSES.has(build.value.status) : false;

  // Poll the status while the build runs (the log stream says when it ends; status changes
  // such as QUEUED -> BUILDING have no event of their own).
  useEffect(() => {
    if (!running) return;
    const timer = setInterval(build.reload, STATUS_POLL_MS);
    return () => clearInterval(timer);
  }, [running, build.reload]);
  useEffect(() => {
    if (finished) build.reload();
  }, [finished, build.reload]);
  // After COMPLETED the archive and the image are made by artifact jobs: follow their states.
  const artifactsPending = !!build.value && build.value.status === 'COMPLETED' && build.value.deleted_on === null &&
    (build.value.artifacts ?? []).some((a) => a.status === 'PENDING');
  useEffect(() => {
    if (!artifactsPending) return;
    const timer = setInterval(build.reload, ARTIFACT_POLL_MS);
    return () => clearInterval(timer);
  }, [artifactsPending, build.reload]);

  const rebuild = useAction(async () => nav.go({ kind: 'build', id: await client.rebuild(props.id) }));
  const cancel = useAction(async () => { await client.cancelBuild(props.id); build.reload(); });

  if (build.error && !build.value) {
    return <section><h1>Build #{props.id}</h1><ErrorMessage error={build.error} /></section>;
  }
  if (!build.value) return <Loading what={`build ${props.id}`} />;
  const b = build.value;
  const e = env.value;
  return (
    <section aria-labelledby="cs-build-title">
      <nav className="cs-breadcrumb" aria-label="Breadcrumb">
        <Link to={{ kind: 'home' }}>Environments</Link>
        {e ? <> / <Link to={{ kind: 'environment', namespace: e.namespace, name: e.name }}>{e.namespace}/{e.name}</Link></> : null}
      </nav>
      <div className="cs-page-header">
        <h1 id="cs-build-title">Build #{b.id} <StatusBadge status={b.status} current={e?.current === b.id} /></h1>
        <div className="cs-actions">
          {running ? (
            <button type="button" className="cs-btn cs-btn-outline-danger" disabled={cancel.busy} onClick={() => void cancel.run()}>Cancel</button>
          ) : null}
          {b.deleted_on === null ? (
            <button type="button" className="cs-btn cs-btn-outline" disabled={rebuild.busy} onClick={() => void rebuild.run()}>Rebuild</button>
          ) : null}
        </div>
      </div>
      <ErrorMessage error={rebuild.error ?? cancel.error} />
      {b.status === 'FAILED' || b.status === 'CANCELED' ? (
        <div className="cs-alert cs-alert-danger" role="alert" data-testid="failure-cause">
          <strong>Build {b.status.toLowerCase()}:</strong> {b.status_info || 'see the log below'}
        </div>
      ) : null}
      <dl className="cs-meta">
        <dt>Status</dt><dd data-testid="build-status">{b.status}</dd>
        <dt>Scheduled</dt><dd>{formatTime(b.scheduled_on)}</dd>
        <dt>Started</dt><dd>{formatTime(b.started_on)}</dd>
        <dt>Ended</dt><dd>{formatTime(b.ended_on)}</dd>
        <dt>Duration</dt><dd>{duration(b.started_on, b.ended_on)}</dd>
        <dt>Size</dt><dd>{formatBytes(b.size)}</dd>
        {b.build_key ? <><dt>Build key</dt><dd className="cs-mono">{b.build_key}</dd></> : null}
        {b.deleted_on ? <><dt>Deleted</dt><dd>{formatTime(b.deleted_on)}</dd></> : null}
      </dl>
      {b.status === 'COMPLETED' && e ? <UseIt build={b} namespace={e.namespace} name={e.name} /> : null}
      <Artifacts build={b} />
      <h2>Log</h2>
      <LogView buildId={b.id} live={running} onEnd={() => setFinished(true)} hideFailure={!!b.status_info} />
      {b.status === 'COMPLETED' ? <Packages buildId={b.id} /> : null}
    </section>
  );
}

async function findEnvironment(client: ReturnType<typeof useUI>['client'], build: Build, signal: AbortSignal) {
  if (!build.environment) return undefined;
  const { namespace, name } = build.environment;
  try {
    const env = await client.environment(namespace, name, signal);
    return { namespace, name, current: env.current_build_id };
  } catch {
    return { namespace, name, current: null }; // the environment was deleted; its builds stay readable
  }
}

function UseIt(props: { build: Build; namespace: string; name: string }) {
  const { registryHost } = useUI();
  const tag = props.build.build_key ?? 'latest';
  return (
    <>
      <h2>Use it</h2>
      <CopyLine label="Run a command in it" text={`conda-store run ${props.namespace}/${props.name} -- python`} />
      <CopyLine label="Pull the image" text={`docker pull ${registryHost}/${props.namespace}/${props.name}:${tag}`} />
      <p className="cs-muted cs-small">
        Private images need <code>docker login {registryHost}</code> first, with any username and an API token as the password.
      </p>
    </>
  );
}

type Downloadable = 'lockfile' | 'yaml' | 'archive' | 'logs';

const DOWNLOADS: [string, Downloadable | null, string][] = [
  ['LOCKFILE', 'lockfile', 'Lockfile (conda-lock.yml)'],
  ['YAML', 'yaml', 'Pinned environment.yaml'],
  ['CONDA_PACK', 'archive', 'Archive (conda-pack)'],
  ['LOGS', 'logs', 'Log'],
  ['DOCKER_MANIFEST', null, 'Container image']
];

/** Each artifact with its state: a link when READY, "being made" while PENDING (the archive and the
 * image come after COMPLETED), the reason when FAILED. Servers without ``artifacts`` (upstream)
 * list only what exists. */
function Artifacts(props: { build: Build }) {
  const { client } = useUI();
  const states = new Map<string, ArtifactState>((props.build.artifacts ?? []).map((a) => [a.type, a]));
  for (const a of props.build.build_artifacts ?? []) {
    if (!states.has(a.artifact_type)) states.set(a.artifact_type, { type: a.artifact_type, status: 'READY', reason: null });
  }
  const present = DOWNLOADS.filter(([type]) => states.has(type));
  if (!present.length) return null;
  return (
    <>
      <h2>Downloads</h2>
      <ul className="cs-artifacts" aria-live="polite">
        {present.map(([type, kind, label]) => {
          const state = states.get(type)!;
          if (state.status === 'PENDING') {
            return (
              <li key={type} data-artifact-state="pending" data-artifact-type={type}>
                <span className="cs-muted">{label}</span>{' '}
                <span className="cs-badge cs-status-building"><span className="cs-spinner cs-spinner-small" aria-hidden="true" /> being made</span>
              </li>
            );
          }
          if (state.status === 'FAILED') {
            return (
              <li key={type} data-artifact-state="failed" data-artifact-type={type}>
                <span className="cs-muted">{label}</span>{' '}
                <span className="cs-badge cs-status-failed">failed</span>{' '}
                <span className="cs-small">{state.reason || 'no reason recorded'}</span>
              </li>
            );
          }
          return (
            <li key={type} data-artifact-state="ready" data-artifact-type={type}>
              {kind ? <a href={client.artifactUrl(props.build.id, kind)} download data-artifact={kind}>{label}</a>
                : <>{label} <span className="cs-badge cs-status-completed">ready</span></>}
            </li>
          );
        })}
      </ul>
    </>
  );
}

function Packages(props: { buildId: number }) {
  const { client } = useUI();
  const [search, setSearch] = useState('');
  const [query, setQuery] = useState('');
  const id = useId();
  useEffect(() => {
    const t = setTimeout(() => setQuery(search), 250);
    return () => clearTimeout(t);
  }, [search]);
  const packages = useAsync((signal) => client.buildPackages(props.buildId, { search: query, size: 100 }, signal),
    [client, props.buildId, query]);
  return (
    <>
      <h2>Packages</h2>
      <div className="cs-field">
        <label htmlFor={id}>Search packages</label>
        <input id={id} type="search" className="cs-input" value={search} onChange={(e) => setSearch(e.target.value)} />
      </div>
      <ErrorMessage error={packages.error} context="Packages" />
      {packages.value ? (
        <table className="cs-table cs-table-compact" aria-label="Packages">
          <thead><tr><th scope="col">Name</th><th scope="col">Version</th><th scope="col">Build</th><th scope="col">Channel</th></tr></thead>
          <tbody>
            {packages.value.items.map((p) => (
              <tr key={`${p.id}-${p.build}`}><td>{p.name}</td><td>{p.version}</td><td className="cs-mono">{p.build}</td><td>{p.channel.name}</td></tr>
            ))}
          </tbody>
        </table>
      ) : packages.loading ? <Loading what="packages" /> : null}
      {packages.value && packages.value.count > packages.value.items.length ? (
        <p className="cs-muted">Showing {packages.value.items.length} of {packages.value.count}; search to narrow down.</p>
      ) : null}
    </>
  );
}
