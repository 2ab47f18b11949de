/**
 * Kernel freshness: the environments-as-kernels list of this Jupyter server, polled every ~2 s
 * while the page is visible (at once when it becomes visible again). When its `version`
 * changes, Lab's kernelspecs are refreshed, so the Launcher shows a new kernel seconds after its
 * build completes instead of after Lab's own 61 s poll. A build the panel saw complete forces
 * the server's view fresh (`POST kernels/refresh`) and the kernelspecs at once.
 * No Lab imports: tested in vitest with a fake transport and a counter for refreshSpecs.
 */
import { ISignal, Signal } from '@lumino/signaling';
import { ApiError } from '../api/client';
import type { KernelEntry, KernelList, KernelsClient } from '../api/kernels';

export interface KernelsState {
  /** By `namespace/environment`. */
  entries: ReadonlyMap<string, KernelEntry>;
  version: string | null;
  /** The last poll failed (server gone), or the server could not refresh its list: why. */
  error?: string;
  /** This server offers no environment kernels (its routes answer 404): nothing to poll or show. */
  disabled?: boolean;
  loaded: boolean;
}

export interface KernelsModelOptions {
  /** Make Lab re-read `/api/kernelspecs` (serviceManager.kernelspecs.refreshSpecs). */
  refreshSpecs(): Promise<void>;
  /** Milliseconds between two polls while visible. */
  interval?: number;
  /** Where visibility is read and watched; none (tests) means always visible. */
  document?: Document;
}

export const kernelKey = (namespace: string, environment: string): string => `${namespace}/${environment}`;

export class KernelsModel {
  constructor(
    readonly client: KernelsClient,
    private readonly options: KernelsModelOptions
  ) {
    this.interval = options.interval ?? 2000;
  }

  readonly interval: number;

  get state(): KernelsState {
    return this._state;
  }

  get changed(): ISignal<this, KernelsState> {
    return this._changed;
  }

  entry(namespace: string, environment: string): KernelEntry | undefined {
    return this._state.entries.get(kernelKey(namespace, environment));
  }

  /** Poll now and then every `interval` while the page is visible. */
  start(): void {
    if (this._running || this._disposed) return;
    this._running = true;
    this.options.document?.addEventListener('visibilitychange', this._onVisibility);
    this.schedule(0);
  }

  dispose(): void {
    this._disposed = true;
    this._running = false;
    this.options.document?.removeEventListener('visibilitychange', this._onVisibility);
    if (this._timer !== undefined) clearTimeout(this._timer);
    Signal.clearData(this);
  }

  /** One poll (`GET kernels`); kernelspecs refreshed when the version changed. */
  poll(): Promise<void> {
    return this.serial(async () => this.apply(await this.client.list(), false));
  }

  /**
   * A build completed: the server's view is refreshed now (not at its next ~1 s expiry) and Lab
   * re-reads the kernelspecs at once, whether or not the version moved.
   */
  buildCompleted(): Promise<void> {
    return this.serial(async () => this.apply(await this.client.refresh(), true));
  }

  private serial(step: () => Promise<void>): Promise<void> {
    const run = this._queue.then(async () => {
      try {
        await step();
      } catch (error) {
        const disabled = error instanceof ApiError && error.status === 404;
        if (disabled) this._running = false; // kernels are off here (enable_kernels): stop asking
        this._state = { ...this._state, error: disabled ? undefined : (error as Error).message, disabled, loaded: true };
        this._changed.emit(this._state);
      }
    });
    this._queue = run;
    return run;
  }

  private async apply(list: KernelList, force: boolean): Promise<void> {
    const previous = this._state.version;
    this._state = {
      entries: new Map(list.kernels.map((k) => [kernelKey(k.namespace, k.environment), k])),
      version: list.version,
      error: list.error || undefined,
      loaded: true
    };
    this._changed.emit(this._state);
    // The first answer matches what Lab loaded at start; later changes are what it has not seen.
    if (force || (previous !== null && previous !== list.version)) {
      try {
        await this.options.refreshSpecs();
      } catch {
        // Lab's own poll still catches up; the next version change tries again
      }
    }
  }

  private schedule(delay: number): void {
    if (this._timer !== undefined) clearTimeout(this._timer);
    this._timer = setTimeout(() => void this.tick(), delay);
  }

  private async tick(): Promise<void> {
    this._timer = undefined;
    if (!this._running) return;
    // A hidden tab does not poll; visibilitychange brings it back at once.
    if (this.visible()) await this.poll();
    if (this._running && this.visible()) this.schedule(this.interval);
  }

  private visible(): boolean {
    return !this.options.document?.hidden;
  }

  private _onVisibility = (): void => {
    if (this._running && this.visible()) this.schedule(0);
  };

  private _state: KernelsState = { entries: new Map(), version: null, loaded: false };
  private _changed = new Signal<this, KernelsState>(this);
  private _queue: Promise<void> = Promise.resolve();
  private _timer?: ReturnType<typeof setTimeout>;
  private _running = false;
  private _disposed = false;
}
