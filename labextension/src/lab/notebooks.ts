/**
 * Notebooks whose kernel runs in an environment: after every kernel start and restart, what the
 * kernel runs (`kernels/running/<id>`) is written into the notebook model as
 * `metadata.conda_store = {namespace, environment, build_id, lockfile_sha256, started}` (a pin
 * already there is kept), so a saved notebook says which build it ran on. For the active
 * notebook the panel shows that record, whether the environment's current build is another one
 * ("restart to use build N"), and pins ("always use build N": `metadata.conda_store.pin_build`,
 * saved at once because the server reads the pin from the saved file at launch).
 *
 * Lab's notebook objects are seen through the few members used here (structural types), so the
 * model is tested in vitest with small fakes and no JupyterLab.
 */
import { ISignal, Signal } from '@lumino/signaling';
import type { KernelsClient, RunningKernel } from '../api/kernels';

/** What is read and written of a notebook model (INotebookModel in Lab 4). */
export interface NotebookModelLike {
  getMetadata(key: string): unknown;
  setMetadata(key: string, value: unknown): void;
  readonly isDisposed?: boolean;
}

export interface KernelLike {
  readonly id: string;
  readonly name: string;
}

export interface SessionContextLike {
  readonly session: { readonly kernel: KernelLike | null } | null;
  readonly kernelChanged: ISignal<unknown, unknown>;
  readonly statusChanged: ISignal<unknown, string>;
  restartKernel(): Promise<void>;
}

export interface NotebookLike {
  readonly id: string;
  readonly isDisposed: boolean;
  readonly disposed: ISignal<unknown, unknown>;
  readonly sessionContext: SessionContextLike;
  readonly context: { readonly path: string; readonly model: NotebookModelLike; save(): Promise<void> };
}

export interface NotebookTrackerLike {
  readonly currentWidget: NotebookLike | null;
  readonly currentChanged: ISignal<unknown, NotebookLike | null>;
  readonly widgetAdded: ISignal<unknown, NotebookLike>;
  forEach(fn: (widget: NotebookLike) => void): void;
}

/** `metadata.conda_store` of a notebook. */
export interface NotebookRecord {
  namespace?: string;
  environment?: string;
  build_id?: number;
  lockfile_sha256?: string | null;
  started?: string;
  pin_build?: number;
}

export const METADATA_KEY = 'conda_store';

export function notebookRecord(model: NotebookModelLike): NotebookRecord {
  const value = model.getMetadata(METADATA_KEY);
  return value && typeof value === 'object' && !Array.isArray(value) ? { ...(value as NotebookRecord) } : {};
}

/** The active notebook as the panel shows it. */
export interface ActiveNotebook {
  path: string;
  /** The notebook has a kernel now (a notebook without one shows nothing more). */
  hasKernel: boolean;
  /** What its kernel runs; null when its kernel is not from an environment (or not known yet). */
  running: RunningKernel | null;
  /** `pin_build` of the notebook's metadata. */
  pin: number | null;
  loading: boolean;
  error?: string;
}

export interface NotebooksOptions {
  /**
   * Whether a kernelspec is one of ours (its `metadata.conda_store`); undefined when Lab does not
   * know the spec (yet): the server is asked, and its 404 says no.
   */
  isOurs(kernelName: string): boolean | undefined;
  /** Wait between two asks when the server does not know a kernel of ours yet (just started). */
  retryDelay?: number;
}

const RETRIES = 3;

export class NotebooksModel {
  constructor(
    readonly client: KernelsClient,
    readonly tracker: NotebookTrackerLike,
    private readonly options: NotebooksOptions
  ) {
    tracker.forEach((w) => this.follow(w));
    tracker.widgetAdded.connect((_, w) => this.follow(w), this);
    tracker.currentChanged.connect(() => this.showActive(), this);
    this.showActive();
  }

  get active(): ActiveNotebook | null {
    return this._active;
  }

  get changed(): ISignal<this, ActiveNotebook | null> {
    return this._changed;
  }

  dispose(): void {
    Signal.clearData(this);
  }

  /** Restart the active notebook's kernel (the server resolves the environment's build again). */
  async restartActive(): Promise<void> {
    const widget = this.tracker.currentWidget;
    if (!widget) throw new Error('no notebook is active');
    await widget.sessionContext.restartKernel();
  }

  /** Pin the active notebook to `build` (null: unpin) and save it, so the next launch honours it. */
  async pinActive(build: number | null): Promise<void> {
    const widget = this.tracker.currentWidget;
    if (!widget) throw new Error('no notebook is active');
    const model = widget.context.model;
    const record = notebookRecord(model);
    if (build === null) delete record.pin_build;
    else record.pin_build = build;
    model.setMetadata(METADATA_KEY, record);
    this.update(widget, { pin: build });
    await widget.context.save();
  }

  /** Ask the server again what the active notebook's kernel runs (and record it). */
  reloadActive(): Promise<void> {
    const widget = this.tracker.currentWidget;
    return widget ? this.record(widget) : Promise.resolve();
  }

  /** Resolves when every recording started so far has finished (tests). */
  idle(): Promise<void> {
    return Promise.all([...this._pending]).then(() => undefined);
  }

  private follow(widget: NotebookLike): void {
    if (this._followed.has(widget)) return;
    this._followed.add(widget);
    const session = widget.sessionContext;
    let restarting = false;
    const onKernel = () => {
      restarting = false;
      void this.record(widget);
    };
    // A restart keeps the kernel id but starts a new process, maybe of another build. Lab says
    // 'restarting' for its own restarts; one made elsewhere (REST, another tab) only shows as the
    // new process's 'starting'. Asked at 'starting' and again once it is idle or busy, because the
    // server may still be launching at 'starting' (an unchanged answer writes nothing).
    const onStatus = (_: unknown, status: string) => {
      if (status === 'restarting' || status === 'autorestarting') restarting = true;
      else if (status === 'starting') {
        restarting = true;
        void this.record(widget);
      } else if (restarting && (status === 'idle' || status === 'busy')) {
        restarting = false;
        void this.record(widget);
      }
    };
    session.kernelChanged.connect(onKernel, this);
    session.statusChanged.connect(onStatus, this);
    widget.disposed.connect(() => {
      session.kernelChanged.disconnect(onKernel, this);
      session.statusChanged.disconnect(onStatus, this);
      this._followed.delete(widget);
      this._views.delete(widget);
      if (this.tracker.currentWidget === widget || this.tracker.currentWidget === null) this.showActive();
    }, this);
    if (session.session?.kernel) void this.record(widget);
  }

  /** Look up what `widget`'s kernel runs; write it into the notebook when it is ours. */
  private record(widget: NotebookLike): Promise<void> {
    const run = this.doRecord(widget).finally(() => this._pending.delete(run));
    this._pending.add(run);
    return run;
  }

  private async doRecord(widget: NotebookLike): Promise<void> {
    const kernel = widget.sessionContext.session?.kernel ?? null;
    const token = (this._tokens.get(widget) ?? 0) + 1;
    this._tokens.set(widget, token);
    const latest = () => this._tokens.get(widget) === token && !widget.isDisposed;
    if (!kernel) {
      this.update(widget, { hasKernel: false, running: null, loading: false, error: undefined });
      return;
    }
    const ours = this.options.isOurs(kernel.name);
    if (ours === false) {
      this.update(widget, { hasKernel: true, running: null, loading: false, error: undefined });
      return;
    }
    this.update(widget, { hasKernel: true, loading: true, error: undefined });
    try {
      let running = await this.client.running(kernel.id);
      // The spec says ours but the server has no record yet: the launch is still finishing.
      for (let i = 0; running === null && ours === true && i < RETRIES && latest(); i++) {
        await new Promise((resolve) => setTimeout(resolve, this.options.retryDelay ?? 500));
        running = await this.client.running(kernel.id);
      }
      if (!latest()) return;
      if (running) this.write(widget, running);
      this.update(widget, { running, loading: false });
    } catch (err) {
      if (latest()) this.update(widget, { running: null, loading: false, error: (err as Error).message });
    }
  }

  private write(widget: NotebookLike, running: RunningKernel): void {
    const model = widget.context.model;
    if (model.isDisposed) return;
    const previous = notebookRecord(model);
    const record: NotebookRecord = {
      namespace: running.namespace,
      environment: running.environment,
      build_id: running.build_id,
      lockfile_sha256: running.lockfile_sha256,
      started: running.started
    };
    if (typeof previous.pin_build === 'number') record.pin_build = previous.pin_build;
    // Unchanged (the same start seen twice): no write, so the notebook is not marked dirty again.
    if (JSON.stringify(previous) !== JSON.stringify(record)) model.setMetadata(METADATA_KEY, record);
  }

  private update(widget: NotebookLike, patch: Partial<ActiveNotebook>): void {
    const base = this._views.get(widget) ?? this.blank(widget);
    this._views.set(widget, { ...base, ...patch, path: widget.context.path });
    if (this.tracker.currentWidget === widget) this.showActive();
  }

  private blank(widget: NotebookLike): ActiveNotebook {
    const pin = notebookRecord(widget.context.model).pin_build;
    return { path: widget.context.path, hasKernel: !!widget.sessionContext.session?.kernel, running: null,
      pin: typeof pin === 'number' ? pin : null, loading: false };
  }

  private showActive(): void {
    const widget = this.tracker.currentWidget;
    if (!widget || widget.isDisposed) {
      this._active = null;
    } else {
      const view = this._views.get(widget) ?? this.blank(widget);
      const pin = notebookRecord(widget.context.model).pin_build;
      this._active = { ...view, pin: typeof pin === 'number' ? pin : null };
    }
    this._changed.emit(this._active);
  }

  private _active: ActiveNotebook | null = null;
  private _changed = new Signal<this, ActiveNotebook | null>(this);
  private _followed = new Set<NotebookLike>();
  private _views = new Map<NotebookLike, ActiveNotebook>();
  private _tokens = new Map<NotebookLike, number>();
  private _pending = new Set<Promise<void>>();
}
