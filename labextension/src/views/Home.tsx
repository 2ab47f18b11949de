/** Home: every environment the user may see, searched, filtered and paged by the server. */
import { useEffect, useId, useState } from 'react';
import type { Environment } from '../api';
import { useUI } from './context';
import { ErrorMessage, Link, Loading, StatusBadge, useAsync } from './common';

const PAGE_SIZE = 25;
const SEARCH_DEBOUNCE_MS = 250;

export function Home(props: { search?: string; namespace?: string; page?: number }) {
  const { client, nav } = useUI();
  const page = props.page ?? 1;
  const [search, setSearch] = useState(props.search ?? '');
  const searchId = useId();
  const nsId = useId();

  // Back/forward changes the route's search: show it in the box.
  useEffect(() => setSearch(props.search ?? ''), [props.search]);

  // Typing updates the URL (so the back button and reloads keep the search) after a short pause.
  useEffect(() => {
    if ((props.search ?? '') === search) return;
    const timer = setTimeout(
      () => nav.go({ kind: 'home', search, namespace: props.namespace }, { replace: true }),
      SEARCH_DEBOUNCE_MS
    );
    return () => clearTimeout(timer);
  }, [search, props.search, props.namespace, nav]);

  const envs = useAsync(
    (signal) => client.environments({ page, size: PAGE_SIZE, search: props.search, namespace: props.namespace }, signal),
    [client, page, props.search, props.namespace]
  );
  const namespaces = useAsync((signal) => client.namespaces({ size: 100 }, signal), [client]);
  const pages = envs.value ? Math.max(1, Math.ceil(envs.value.count / PAGE_SIZE)) : 1;

  return (
    <section aria-labelledby="cs-home-title">
      <div className="cs-page-header">
        <h1 id="cs-home-title">Environments</h1>
        <Link to={{ kind: 'create', namespace: props.namespace }} className="cs-btn cs-btn-primary">
          New environment
        </Link>
      </div>
      <form className="cs-toolbar" role="search" onSubmit={(e) => e.preventDefault()}>
        <div className="cs-field cs-grow">
          <label htmlFor={searchId}>Search</label>
          <input id={searchId} type="search" className="cs-input" placeholder="namespace or environment name"
            value={search} onChange={(e) => setSearch(e.target.value)} />
        </div>
        <div className="cs-field">
          <label htmlFor={nsId}>Namespace</label>
          <select id={nsId} className="cs-input" value={props.namespace ?? ''}
            onChange={(e) => nav.go({ kind: 'home', search: props.search, namespace: e.target.value || undefined })}>
            <option value="">All namespaces</option>
            {(namespaces.value?.items ?? []).map((ns) => (
              <option key={ns.id} value={ns.name}>{ns.name}</option>
            ))}
          </select>
        </div>
      </form>
      <ErrorMessage error={namespaces.error} context="Namespaces" />
      <ErrorMessage error={envs.error} context="Environments" />
      {envs.loading && !envs.value ? <Loading what="environments" /> : null}
      {envs.value ? (
        <>
          <p className="cs-muted" aria-live="polite">
            {envs.value.count} environment{envs.value.count === 1 ? '' : 's'}
            {envs.loading ? ' (updating…)' : ''}
          </p>
          {envs.value.items.length ? (
            <table className="cs-table" aria-label="Environments">
              <thead>
                <tr>
                  <th scope="col">Environment</th>
                  <th scope="col">Current build</th>
                  <th scope="col">Downloads</th>
                </tr>
              </thead>
              <tbody>
                {envs.value.items.map((env) => <EnvironmentRow key={env.id} env={env} />)}
              </tbody>
            </table>
          ) : (
            <p className="cs-empty">
              No environments{props.search || props.namespace ? ' match' : ' yet'}.{' '}
              <Link to={{ kind: 'create' }}>Create one</Link>.
            </p>
          )}
          <Pager page={page} pages={pages}
            go={(p) => nav.go({ kind: 'home', search: props.search, namespace: props.namespace, page: p })} />
        </>
      ) : null}
    </section>
  );
}

const DOWNLOADS: [string, 'lockfile' | 'yaml' | 'archive', string][] = [
  ['LOCKFILE', 'lockfile', 'lockfile'],
  ['YAML', 'yaml', 'YAML'],
  ['CONDA_PACK', 'archive', 'archive']
];

function EnvironmentRow({ env }: { env: Environment }) {
  const { client } = useUI();
  const build = env.current_build;
  const ready = build?.status === 'COMPLETED' && build.id === env.current_build_id;
  const label = `${env.namespace.name}/${env.name}`;
  const kinds = new Set((build?.build_artifacts ?? []).map((a) => a.artifact_type));
  return (
    <tr data-environment={label}>
      <td>
        <Link to={{ kind: 'environment', namespace: env.namespace.name, name: env.name }}>
          <span className="cs-muted">{env.namespace.name}/</span><strong>{env.name}</strong>
        </Link>
        {env.description ? <div className="cs-muted cs-small">{env.description}</div> : null}
      </td>
      <td>
        {env.current_build_id ? (
          <Link to={{ kind: 'build', id: env.current_build_id }} aria-label={`build ${env.current_build_id} of ${label}`}>
            #{env.current_build_id}
          </Link>
        ) : null}{' '}
        <StatusBadge status={build?.status} />
      </td>
      <td className="cs-downloads">
        {ready && env.current_build_id ? (
          <>
            {DOWNLOADS.filter(([type]) => kinds.has(type)).map(([type, kind, text]) => (
              <a key={type} href={client.artifactUrl(env.current_build_id!, kind)} aria-label={`${text} of ${label}`}>{text}</a>
            ))}
          </>
        ) : <span className="cs-muted">—</span>}
      </td>
    </tr>
  );
}

export function Pager(props: { page: number; pages: number; go(page: number): void }) {
  if (props.pages <= 1) return null;
  return (
    <nav className="cs-pager" aria-label="Pages">
      <button type="button" className="cs-btn cs-btn-outline" disabled={props.page <= 1}
        onClick={() => props.go(props.page - 1)}>Previous</button>
      <span aria-current="page">Page {props.page} of {props.pages}</span>
      <button type="button" className="cs-btn cs-btn-outline" disabled={props.page >= props.pages}
        onClick={() => props.go(props.page + 1)}>Next</button>
    </nav>
  );
}
