/** Small building blocks shared by the views: async state, errors, links, status, copy, confirm. */
import { DependencyList, ReactNode, useCallback, useEffect, useId, useRef, useState } from 'react';
import { ApiError, BuildStatus } from '../api';
import { useUI } from './context';
import type { Route } from './routes';
import { LOCKFILE_NOT_EDITABLE } from './yaml';

export interface AsyncState<T> {
  value?: T;
  error?: ApiError | Error;
  loading: boolean;
  reload(): void;
}

/** Run `load` when `deps` change (aborting the previous run); expose value, error and loading. */
export function useAsync<T>(load: (signal: AbortSignal) => Promise<T>, deps: DependencyList): AsyncState<T> {
  const [state, setState] = useState<{ value?: T; error?: Error; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const controller = new AbortController();
    setState((s) => ({ value: s.value, loading: true }));
    load(controller.signal).then(
      (value) => !controller.signal.aborted && setState({ value, loading: false }),
      (error) => !controller.signal.aborted && setState({ error, loading: false })
    );
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

/** Run a user action (a button): busy flag while it runs, its error shown next to it. */
export function useAction<A extends unknown[]>(action: (...args: A) => Promise<void>) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error | undefined>();
  const mounted = useRef(true);
  useEffect(() => () => void (mounted.current = false), []);
  const run = useCallback(
    async (...args: A) => {
      setBusy(true);
      setError(undefined);
      try {
        await action(...args);
      } catch (err) {
        if (mounted.current) setError(err as Error);
      } finally {
        if (mounted.current) setBusy(false);
      }
    },
    [action]
  );
  return { run, busy, error, clearError: () => setError(undefined) };
}

export function Link(props: { to: Route; children: ReactNode; className?: string; 'aria-label'?: string }) {
  const { nav } = useUI();
  return (
    <a
      href={nav.href(props.to)}
      className={props.className}
      aria-label={props['aria-label']}
      onClick={(event) => {
        if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
        event.preventDefault();
        nav.go(props.to);
      }}
    >
      {props.children}
    </a>
  );
}

export function ErrorMessage(props: { error?: Error; context?: string }) {
  if (!props.error) return null;
  return (
    <div className="cs-alert cs-alert-danger" role="alert">
      {props.context ? <strong>{props.context}: </strong> : null}
      {props.error.message}
    </div>
  );
}

export function Loading(props: { what?: string }) {
  return (
    <div className="cs-loading" role="status" aria-live="polite">
      <span className="cs-spinner" aria-hidden="true" /> Loading{props.what ? ` ${props.what}` : ''}…
    </div>
  );
}

export function StatusBadge(props: { status?: BuildStatus | null; current?: boolean }) {
  const status = props.status ?? 'NONE';
  return (
    <span className={`cs-badge cs-status-${status.toLowerCase()}`} data-status={status}>
      {props.status ? status : 'no build'}
      {props.current ? ' · current' : ''}
    </span>
  );
}

/** A read-only command line with a Copy button (clipboard API; select-all as the fallback). */
export function CopyLine(props: { label: string; text: string }) {
  const id = useId();
  const [copied, setCopied] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  return (
    <div className="cs-copyline">
      <label htmlFor={id}>{props.label}</label>
      <div className="cs-input-group">
        <input id={id} ref={input} readOnly value={props.text} className="cs-input cs-mono"
          onFocus={(e) => e.currentTarget.select()} />
        <button
          type="button"
          className="cs-btn cs-btn-outline"
          onClick={async () => {
            try {
              await navigator.clipboard.writeText(props.text);
              setCopied(true);
            } catch {
              input.current?.select();
            }
          }}
        >
          {copied ? 'Copied' : 'Copy'}
        </button>
      </div>
    </div>
  );
}

/**
 * A confirmation dialog for destructive actions; with `typeToConfirm` the user must type that
 * text (e.g. the namespace name) before the button enables.
 */
export function ConfirmDialog(props: {
  title: string;
  body: ReactNode;
  confirmLabel: string;
  typeToConfirm?: string;
  busy?: boolean;
  error?: Error;
  onConfirm(): void;
  onCancel(): void;
}) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [typed, setTyped] = useState('');
  const titleId = useId();
  const inputId = useId();
  useEffect(() => {
    const el = dialog.current;
    if (el && !el.open) {
      // jsdom has no showModal; fall back to the open attribute.
      typeof el.showModal === 'function' ? el.showModal() : el.setAttribute('open', '');
    }
  }, []);
  const ready = !props.typeToConfirm || typed === props.typeToConfirm;
  return (
    <dialog ref={dialog} className="cs-dialog" aria-labelledby={titleId}
      onCancel={(e) => { e.preventDefault(); props.onCancel(); }}>
      <h2 id={titleId}>{props.title}</h2>
      <div>{props.body}</div>
      {props.typeToConfirm ? (
        <div className="cs-field">
          <label htmlFor={inputId}>Type <strong className="cs-mono">{props.typeToConfirm}</strong> to confirm</label>
          <input id={inputId} className="cs-input" value={typed} autoFocus onChange={(e) => setTyped(e.target.value)} />
        </div>
      ) : null}
      <ErrorMessage error={props.error} />
      <div className="cs-actions">
        <button type="button" className="cs-btn cs-btn-outline" onClick={props.onCancel}>Cancel</button>
        <button type="button" className="cs-btn cs-btn-danger" disabled={!ready || props.busy} onClick={props.onConfirm}>
          {props.busy ? 'Working…' : props.confirmLabel}
        </button>
      </div>
    </dialog>
  );
}

export function formatBytes(n?: number | null): string {
  if (!n) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** The API's timestamps are naive UTC; show them in the user's time zone. */
export function formatTime(iso?: string | null): string {
  if (!iso) return '—';
  const date = new Date(/[zZ]|[+-]\d\d:\d\d$/.test(iso) ? iso : iso + 'Z');
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function duration(start?: string | null, end?: string | null): string {
  if (!start) return '—';
  const t0 = new Date(start + (start.endsWith('Z') ? '' : 'Z')).getTime();
  const t1 = end ? new Date(end + (end.endsWith('Z') ? '' : 'Z')).getTime() : Date.now();
  const s = Math.max(0, Math.round((t1 - t0) / 1000));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** Why a lockfile environment has no YAML editor; the `command` shown as code. */
export function LockfileNote(props: { id?: string }) {
  const parts = LOCKFILE_NOT_EDITABLE.split('`');
  return (
    <div className="cs-alert cs-alert-info" id={props.id} data-testid="lockfile-note">
      {parts.map((part, i) => (i % 2 ? <code key={i}>{part}</code> : part))}
    </div>
  );
}
