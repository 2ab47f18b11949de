/**
 * The panel's kernel parts: per environment, whether it is a kernel (and the action "add
 * ipykernel and rebuild" when it has no kernel package); for the active notebook, which
 * environment and build its kernel runs, whether the current build is another one (restart to
 * use it) and the pin ("always use build N"). Rendered by panel.tsx; models in kernels.ts and
 * notebooks.ts.
 */
import { useEffect, useState } from 'react';
import type { ISignal } from '@lumino/signaling';
import type { KernelEntry } from '../api/kernels';
import type { KernelsModel } from './kernels';
import type { ActiveNotebook, NotebooksModel } from './notebooks';

/** The state behind a signal, re-rendered on every emission. */
export function useSignal<S, T>(signal: ISignal<S, T> | undefined, read: () => T): T {
  const [value, setValue] = useState(read);
  useEffect(() => {
    if (!signal) return;
    const on = (_: S, next: T) => setValue(next);
    signal.connect(on);
    setValue(read());
    return () => void signal.disconnect(on);
  }, [signal]); // eslint-disable-line react-hooks/exhaustive-deps
  return value;
}

export interface KernelLineProps {
  entry: KernelEntry | undefined;
  label: string;
  /** A build of the environment is queued or running (its result decides the kernel). */
  building?: boolean;
  /** Submit the current specification with ipykernel added; resolves when queued. */
  addIpykernel(): Promise<void>;
}

/** Under an environment's row: its kernel status, and the fix when it has no kernel package. */
export function KernelLine({ entry, label, building, addIpykernel }: KernelLineProps) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>();
  if (!entry || entry.status === 'no-build') return null;
  if (entry.status === 'ready') {
    return (
      <div className="cs-kernel-line" data-kernel-status="ready"
        title={`Kernel ${entry.display_name}: starts the current build${entry.build_id ? ` (#${entry.build_id})` : ''}`}>
        <KernelIcon />
        <span>Kernel{entry.language ? ` · ${entry.language}` : ''}{entry.build_id ? ` · build ${entry.build_id}` : ''}</span>
      </div>
    );
  }
  if (entry.status === 'unavailable') {
    return (
      <div className="cs-kernel-line" data-kernel-status="unavailable">
        <span>Kernel unavailable{entry.message ? `: ${entry.message}` : ''}</span>
      </div>
    );
  }
  const add = async () => {
    setBusy(true);
    setError(undefined);
    try {
      await addIpykernel();
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="cs-kernel-line" data-kernel-status="no-kernel-package">
      <span title={entry.message || undefined}>No kernel package</span>
      <button type="button" className="cs-panel-action" disabled={busy || building} onClick={() => void add()}
        aria-label={`Add ipykernel to ${label} and rebuild`}>
        {busy ? 'Adding ipykernel…' : 'Add ipykernel and rebuild'}
      </button>
      {error ? <span className="cs-kernel-error" role="alert">{error}</span> : null}
    </div>
  );
}

export interface ActiveNotebookProps {
  notebooks: NotebooksModel;
  kernels?: KernelsModel;
}

/** The active notebook's kernel: environment, build, source; restart to the current build; pin. */
export function ActiveNotebookSection({ notebooks, kernels }: ActiveNotebookProps) {
  const active = useSignal(notebooks.changed, () => notebooks.active);
  useSignal(kernels?.changed, () => kernels?.state); // the current build moves with the kernel list
  const [busy, setBusy] = useState<string | undefined>();
  const [error, setError] = useState<string | undefined>();
  if (!active) return null;
  const act = async (what: string, step: () => Promise<void>) => {
    setBusy(what);
    setError(undefined);
    try {
      await step();
    } catch (err) {
      setError(`${what}: ${(err as Error).message}`);
    } finally {
      setBusy(undefined);
    }
  };
  return (
    <section className="cs-active-notebook" aria-label="Active notebook kernel">
      <h3>Active notebook</h3>
      <div className="cs-active-path" title={active.path}>{basename(active.path)}</div>
      <ActiveBody active={active} kernels={kernels} busy={busy}
        restart={() => void act('Restart', () => notebooks.restartActive())}
        pin={(build) => void act(build === null ? 'Unpin' : 'Pin', () => notebooks.pinActive(build))} />
      {error ? <div className="cs-kernel-error" role="alert">{error}</div> : null}
    </section>
  );
}

function ActiveBody(props: { active: ActiveNotebook; kernels?: KernelsModel; busy?: string;
  restart(): void; pin(build: number | null): void }) {
  const { active, kernels, busy } = props;
  if (!active.hasKernel) return <p className="cs-active-note">No kernel.</p>;
  if (active.error) return <p className="cs-kernel-error" role="alert">{active.error}</p>;
  const running = active.running;
  if (!running) {
    return <p className="cs-active-note">{active.loading ? 'Looking up its kernel…' : 'Its kernel is not from a conda-store environment.'}</p>;
  }
  const entry = kernels?.entry(running.namespace, running.environment);
  // The kernel list is polled every 2 s; the running record's own value is from its lookup.
  const current = entry?.build_id ?? running.current_build_id;
  const other = current !== null && current !== undefined && current !== running.build_id ? current : null;
  return (
    <>
      <dl className="cs-active-facts">
        <dt>Environment</dt><dd data-field="environment">{running.namespace}/{running.environment}</dd>
        <dt>Build</dt>
        <dd data-field="build">#{running.build_id}{running.source === 'cache' ? ' (local copy)' : ''}</dd>
      </dl>
      {other !== null && active.pin === null ? (
        <div className="cs-active-newer" data-field="newer">
          <span>Build {other} is the current build.</span>
          <button type="button" className="cs-panel-action" disabled={busy !== undefined} onClick={props.restart}>
            {busy === 'Restart' ? 'Restarting…' : `Restart to use build ${other}`}
          </button>
        </div>
      ) : null}
      {active.pin !== null ? (
        <div className="cs-active-pin" data-field="pin">
          <span>Always uses build {active.pin}.</span>
          <button type="button" className="cs-panel-action" disabled={busy !== undefined} onClick={() => props.pin(null)}
            aria-label={`Unpin build ${active.pin}: follow the current build`}>Unpin</button>
        </div>
      ) : (
        <button type="button" className="cs-panel-action" data-field="pin" disabled={busy !== undefined}
          onClick={() => props.pin(running.build_id)}
          title="Saved in the notebook: every start of its kernel uses this build, even after a rebuild">
          Always use build {running.build_id}
        </button>
      )}
    </>
  );
}

function basename(path: string): string {
  return path.split('/').pop() || path;
}

// Material Design "memory" icon (Apache-2.0): a chip, for "this environment is a kernel".
function KernelIcon() {
  return (
    <svg viewBox="0 0 24 24" aria-hidden="true" className="cs-kernel-icon">
      <path d="M15 9H9v6h6V9zm-2 4h-2v-2h2v2zm8-2V9h-2V7c0-1.1-.9-2-2-2h-2V3h-2v2h-2V3H9v2H7c-1.1 0-2 .9-2 2v2H3v2h2v2H3v2h2v2c0 1.1.9 2 2 2h2v2h2v-2h2v2h2v-2h2c1.1 0 2-.9 2-2v-2h2v-2h-2v-2h2zm-4 6H7V7h10v10z" />
    </svg>
  );
}
