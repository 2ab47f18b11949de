/**
 * The sidebar panel: environments grouped by namespace, each with its build's live status, a
 * filter box, and per environment: open, rebuild, copy `conda-store run` / `docker pull` lines,
 * download lockfile / YAML / archive. Host actions (opening tabs, notifications) come in as
 * callbacks, so the component renders in vitest without JupyterLab.
 */
import { useEffect, useId, useMemo, useState } from 'react';
import type { CondaStoreClient } from '../api';
import type { Route } from '../views';
import type { KernelsModel } from './kernels';
import { ActiveNotebookSection, KernelLine, useSignal } from './kernelViews';
import type { EnvironmentRow, EnvironmentsModel, ModelState } from './model';
import { groupRows } from './model';
import type { NotebooksModel } from './notebooks';

/** The current build's downloads the panel offers, by the artifact that must exist. */
const DOWNLOADS = [
  { type: 'LOCKFILE', kind: 'lockfile', label: 'Lockfile' },
  { type: 'YAML', kind: 'yaml', label: 'YAML' },
  { type: 'CONDA_PACK', kind: 'archive', label: 'Archive' }
] as const;

export interface PanelActions {
  open(route: Route): void;
  /** Queue a new build of the row's build; resolves to the new build id. */
  rebuild(row: EnvironmentRow): Promise<number>;
  copy(text: string, what: string): void;
  /** Submit the row's current specification with ipykernel added; resolves to the new build id. */
  addIpykernel?(row: EnvironmentRow): Promise<number>;
}

export interface PanelProps {
  model: EnvironmentsModel;
  client: CondaStoreClient;
  actions: PanelActions;
  /** host[:port] of the registry for `docker pull` lines. */
  registryHost: string;
  /** Why the service cannot be used (from the extension's config), shown instead of the list. */
  problem?: string | null;
  /** Environments as kernels (status per row); absent: no kernel line. */
  kernels?: KernelsModel;
  /** The active notebook's kernel; absent: no such section. */
  notebooks?: NotebooksModel;
}

export function useModelState(model: EnvironmentsModel): ModelState {
  const [state, setState] = useState(model.state);
  useEffect(() => {
    const onChange = (_: EnvironmentsModel, next: ModelState) => setState(next);
    model.changed.connect(onChange);
    setState(model.state);
    return () => void model.changed.disconnect(onChange);
  }, [model]);
  return state;
}

/** The status text of a row: `BUILDING · solve`, `COMPLETED`, `no build`. */
export function statusText(row: EnvironmentRow): string {
  if (!row.build) return 'no build';
  return row.step && row.build.status === 'BUILDING' ? `BUILDING · ${row.step}` : row.build.status;
}

export function EnvironmentsPanel(props: PanelProps) {
  const { model, actions } = props;
  const state = useModelState(model);
  const [filter, setFilter] = useState('');
  const [expanded, setExpanded] = useState<string | undefined>();
  const filterId = useId();
  const groups = useMemo(() => groupRows(state.rows, filter), [state.rows, filter]);
  const kernels = useSignal(props.kernels?.changed, () => props.kernels?.state); // rows show each kernel's status

  let body;
  if (props.problem || state.error) {
    body = (
      <div className="cs-panel-message" data-kind="error" role="alert">
        <strong>conda-store is not available.</strong>
        <div>{props.problem ?? state.error?.message}</div>
        <button type="button" className="cs-panel-action" onClick={() => model.refreshSoon()}>Retry</button>
      </div>
    );
  } else if (!state.loaded) {
    body = <div className="cs-panel-message" role="status">Loading environments…</div>;
  } else if (state.rows.length === 0) {
    body = <p className="cs-panel-empty">No environments yet. Use “New environment” to create one.</p>;
  } else if (groups.length === 0) {
    body = <p className="cs-panel-empty">No environment matches “{filter}”.</p>;
  } else {
    body = groups.map((group) => (
      <section key={group.namespace} className="cs-panel-group" aria-label={`Namespace ${group.namespace}`}>
        <h3>{group.namespace}</h3>
        <ul className="cs-panel-list">
          {group.rows.map((row) => {
            const key = `${row.namespace}/${row.name}`;
            return (
              <PanelRow key={key} row={row} {...props} expanded={expanded === key}
                onToggle={() => setExpanded(expanded === key ? undefined : key)} />
            );
          })}
        </ul>
      </section>
    ));
  }

  return (
    <div className="cs-panel cs-lab">
      <div className="cs-panel-header">
        <h2 className="cs-panel-title">conda-store</h2>
        <button type="button" className="cs-panel-icon-btn" title="New environment" aria-label="New environment"
          onClick={() => actions.open({ kind: 'create' })}><PlusIcon /></button>
        <button type="button" className="cs-panel-icon-btn" title="Refresh" aria-label="Refresh environments"
          onClick={() => model.refreshSoon()}><RefreshIcon /></button>
      </div>
      <label htmlFor={filterId} className="cs-visually-hidden">Filter environments</label>
      <input id={filterId} type="search" className="cs-panel-filter" placeholder="Filter environments"
        value={filter} onChange={(e) => setFilter(e.target.value)} />
      {props.notebooks ? <ActiveNotebookSection notebooks={props.notebooks} kernels={props.kernels} /> : null}
      {kernels?.error && !props.problem && !state.error ? (
        <div className="cs-kernel-line cs-kernel-notice" data-kernel-status="unavailable" role="status">
          Kernels may be out of date: {kernels.error}
        </div>
      ) : null}
      <div className="cs-panel-body" aria-live="polite" aria-busy={!state.loaded}>{body}</div>
    </div>
  );
}

function PanelRow(props: PanelProps & { row: EnvironmentRow; expanded: boolean; onToggle(): void }) {
  const { row, actions, client } = props;
  const label = `${row.namespace}/${row.name}`;
  const build = row.build;
  const current = row.environment.current_build;
  const [rebuilding, setRebuilding] = useState(false);
  const [error, setError] = useState<string | undefined>();
  const status = build?.status ?? 'NONE';
  const tag = current?.build_key ?? 'latest';
  // Only what the current build has (a failed or running build has no lockfile yet).
  const artifacts = new Set((current?.build_artifacts ?? []).map((a) => a.artifact_type));
  const rebuild = async () => {
    setRebuilding(true);
    setError(undefined);
    try {
      actions.open({ kind: 'build', id: await actions.rebuild(row) });
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setRebuilding(false);
    }
  };
  return (
    <li className="cs-panel-item" data-environment={label} data-expanded={props.expanded}>
      <div className="cs-panel-row">
        <button type="button" className="cs-panel-name" title={`Open ${label}`} aria-label={`Open ${label}`}
          onClick={() => actions.open({ kind: 'environment', namespace: row.namespace, name: row.name })}>
          {row.name}
        </button>
        <button type="button" className="cs-panel-status" data-status={status}
          title={build ? `Build #${build.id}: ${statusText(row)}${build.status_info ? ` (${build.status_info})` : ''}` : 'no build'}
          aria-label={build ? `Open build ${build.id} of ${label}: ${statusText(row)}` : `${label} has no build`}
          disabled={!build} onClick={() => build && actions.open({ kind: 'build', id: build.id })}>
          {statusText(row)}
        </button>
        <button type="button" className="cs-panel-icon-btn" aria-expanded={props.expanded}
          aria-label={`Actions for ${label}`} title="Actions" onClick={props.onToggle}>⋯</button>
      </div>
      {props.kernels ? (
        <KernelLine entry={props.kernels.entry(row.namespace, row.name)} label={label} building={row.inFlight}
          addIpykernel={async () => {
            if (!actions.addIpykernel) throw new Error('adding ipykernel is not available here');
            actions.open({ kind: 'build', id: await actions.addIpykernel(row) });
          }} />
      ) : null}
      {props.expanded ? (
        <div className="cs-panel-actions" role="group" aria-label={`Actions for ${label}`}>
          <button type="button" className="cs-panel-action"
            onClick={() => actions.open({ kind: 'environment', namespace: row.namespace, name: row.name })}>Open</button>
          <button type="button" className="cs-panel-action" disabled={!build || rebuilding}
            onClick={() => void rebuild()}>{rebuilding ? 'Rebuilding…' : 'Rebuild'}</button>
          <button type="button" className="cs-panel-action"
            onClick={() => actions.copy(`conda-store run ${label} -- python`, 'conda-store run line')}>
            Copy run line
          </button>
          <button type="button" className="cs-panel-action"
            onClick={() => actions.copy(`docker pull ${props.registryHost}/${label}:${tag}`, 'docker pull line')}>
            Copy docker pull
          </button>
          {DOWNLOADS.filter((d) => artifacts.has(d.type)).map((d) => (
            <a key={d.kind} className="cs-panel-action" href={client.artifactUrl(current!.id, d.kind)} download
              aria-label={`Download the ${d.label} of ${label}`}>{d.label}</a>
          ))}
          {error ? <div className="cs-panel-message" data-kind="error" role="alert">Rebuild: {error}</div> : null}
        </div>
      ) : null}
    </li>
  );
}

// Material Design icons (Apache-2.0), the set JupyterLab's own toolbar icons come from.
function PlusIcon() {
  return <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M19 13h-6v6h-2v-6H5v-2h6V5h2v6h6v2z" /></svg>;
}

function RefreshIcon() {
  return (
    <svg viewBox="0 0 24 24" aria-hidden="true">
      <path d="M17.65 6.35A7.958 7.958 0 0 0 12 4c-4.42 0-7.99 3.58-7.99 8s3.57 8 7.99 8c3.73 0 6.84-2.55 7.73-6h-2.08A5.99 5.99 0 0 1 12 18c-3.31 0-6-2.69-6-6s2.69-6 6-6c1.66 0 3.14.69 4.22 1.78L13 11h7V4l-2.35 2.35z" />
    </svg>
  );
}
