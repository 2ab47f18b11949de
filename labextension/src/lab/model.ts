/**
 * What the sidebar panel shows, kept fresh by polling: every environment the user may read, the
 * build that decides its status (the one in flight, else the current one), the running step of
 * a building one, and a signal when a watched build finishes (the plugin turns it into a
 * notification). No Lab imports: the model is tested on its own (vitest) with a fake transport.
 */
import { ISignal, Signal } from '@lumino/signaling';
import type { Build, BuildStatus, CondaStoreClient, Environment } from '../api';
import { FINISHED_STATUSES } from '../api';
import { logSummary } from '../views/LogView';

/** One environment as the panel lists it. */
export interface EnvironmentRow {
  environment: Environment;
  namespace: string;
  name: string;
  /** The build whose status is shown: the newest one queued or building, else the current one. */
  build: Build | null;
  /** True when `build` is queued or building (not yet the current build). */
  inFlight: boolean;
  /** The step a building build is in (from the log's step markers), when known. */
  step?: string;
}

export interface NamespaceGroup {
  namespace: string;
  rows: EnvironmentRow[];
}

/** A watched build reached COMPLETED, FAILED or CANCELED. */
export interface FinishedBuild {
  build: Build;
  namespace: string;
  name: string;
}

export interface ModelState {
  rows: EnvironmentRow[];
  /** The last refresh failed (service down, not configured…): its message is shown. */
  error?: Error;
  /** At least one refresh has finished (with rows or an error). */
  loaded: boolean;
}

const PAGE_SIZE = 100; // the service's default max_page_size
const IN_FLIGHT: BuildStatus[] = ['QUEUED', 'BUILDING'];

/** Rows grouped by namespace (sorted), keeping rows whose `namespace/name` contains the filter. */
export function groupRows(rows: readonly EnvironmentRow[], filter = ''): NamespaceGroup[] {
  const needle = filter.trim().toLowerCase();
  const groups = new Map<string, EnvironmentRow[]>();
  for (const row of rows) {
    if (needle && !`${row.namespace}/${row.name}`.toLowerCase().includes(needle)) continue;
    const list = groups.get(row.namespace) ?? [];
    list.push(row);
    groups.set(row.namespace, list);
  }
  return [...groups.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([namespace, list]) => ({ namespace, rows: list.sort((a, b) => a.name.localeCompare(b.name)) }));
}

/** The step a build is in: the last step that started and has not ended. */
export function currentStep(log: string): string | undefined {
  const { steps } = logSummary(log.split('\n'));
  const running = [...steps].reverse().find((s) => s.seconds === undefined);
  return running?.name;
}

export class EnvironmentsModel {
  constructor(
    readonly client: CondaStoreClient,
    /** Milliseconds between two refreshes. */
    readonly interval = 3000
  ) {}

  get state(): ModelState {
    return this._state;
  }

  /** Emitted after every refresh. */
  get changed(): ISignal<this, ModelState> {
    return this._changed;
  }

  /** Emitted once per watched build when it finishes. */
  get finished(): ISignal<this, FinishedBuild> {
    return this._finished;
  }

  /** Start polling (first refresh at once). */
  start(): void {
    if (this._running || this._disposed) return;
    this._running = true;
    void this.loop();
  }

  dispose(): void {
    this._disposed = true;
    this._running = false;
    if (this._timer !== undefined) clearTimeout(this._timer);
    Signal.clearData(this);
  }

  /**
   * Follow `buildId` until it finishes, also when it finishes before the next poll sees it in
   * flight (a fast build started from Lab). Builds already finished are ignored.
   */
  async watch(buildId: number): Promise<void> {
    if (this._watched.has(buildId)) return;
    const build = await this.client.build(buildId);
    if (!FINISHED_STATUSES.has(build.status)) {
      this._watched.set(buildId, this.placeOf(build));
      this.refreshSoon();
    }
  }

  /** Refresh now (a user action changed something), without waiting for the next tick. */
  refreshSoon(): void {
    if (!this._running) return;
    if (this._timer !== undefined) clearTimeout(this._timer);
    this._timer = undefined;
    if (!this._busy) void this.loop();
    else this._again = true;
  }

  /** One refresh; resolves when the state (and the signals) are updated. */
  async refresh(): Promise<void> {
    try {
      const [environments, inFlight] = await Promise.all([this.allEnvironments(), this.inFlightBuilds()]);
      const byEnvironment = new Map<number, Build>();
      for (const build of inFlight) {
        const seen = byEnvironment.get(build.environment_id);
        if (!seen || seen.id < build.id) byEnvironment.set(build.environment_id, build);
      }
      const rows = await Promise.all(environments.map((env) => this.rowOf(env, byEnvironment.get(env.id))));
      this._places = new Map(rows.map((r) => [r.environment.id, { namespace: r.namespace, name: r.name }]));
      this._state = { rows, loaded: true };
      for (const build of inFlight) {
        if (!this._watched.has(build.id)) this._watched.set(build.id, this.placeOf(build));
      }
      await this.reportFinished(new Set(inFlight.map((b) => b.id)));
    } catch (error) {
      this._state = { rows: this._state.rows, error: error as Error, loaded: true };
    }
    this._changed.emit(this._state);
  }

  private async loop(): Promise<void> {
    this._busy = true;
    try {
      do {
        this._again = false;
        // A browser tab nobody looks at does not poll; it catches up (and notifies) when shown.
        if (typeof document === 'undefined' || !document.hidden) await this.refresh();
      } while (this._again && this._running);
    } finally {
      this._busy = false;
    }
    if (this._running) {
      this._timer = setTimeout(() => {
        this._timer = undefined;
        void this.loop();
      }, this.interval);
    }
  }

  private async allEnvironments(): Promise<Environment[]> {
    const all: Environment[] = [];
    for (let page = 1; ; page++) {
      const result = await this.client.environments({ page, size: PAGE_SIZE });
      all.push(...result.items);
      if (result.items.length === 0 || all.length >= result.count) return all;
    }
  }

  private async inFlightBuilds(): Promise<Build[]> {
    const pages = await Promise.all(
      IN_FLIGHT.map((status) => this.client.builds({ status, size: PAGE_SIZE, order: 'desc', sort_by: 'id' }))
    );
    return pages.flatMap((p) => p.items);
  }

  private async rowOf(environment: Environment, inFlight: Build | undefined): Promise<EnvironmentRow> {
    const row: EnvironmentRow = {
      environment,
      namespace: environment.namespace.name,
      name: environment.name,
      build: inFlight ?? environment.current_build,
      inFlight: inFlight !== undefined
    };
    if (inFlight?.status === 'BUILDING') {
      try {
        row.step = currentStep(await this.client.buildLog(inFlight.id));
      } catch {
        // the step is a nicety: the status alone is still right
      }
    }
    return row;
  }

  /** Builds watched before and no longer in flight: look each up once and report how it ended. */
  private async reportFinished(inFlight: Set<number>): Promise<void> {
    const gone = [...this._watched.keys()].filter((id) => !inFlight.has(id));
    for (const id of gone) {
      let build: Build;
      try {
        build = await this.client.build(id);
      } catch {
        this._watched.delete(id); // deleted meanwhile: nothing to report
        continue;
      }
      if (!FINISHED_STATUSES.has(build.status)) continue; // between two states: ask again next time
      const place = this._watched.get(id) ?? this.placeOf(build);
      this._watched.delete(id);
      if (place) this._finished.emit({ build, ...place });
    }
  }

  private placeOf(build: Build): { namespace: string; name: string } | undefined {
    return build.environment ?? this._places.get(build.environment_id);
  }

  private _state: ModelState = { rows: [], loaded: false };
  private _changed = new Signal<this, ModelState>(this);
  private _finished = new Signal<this, FinishedBuild>(this);
  private _watched = new Map<number, { namespace: string; name: string } | undefined>();
  private _places = new Map<number, { namespace: string; name: string }>();
  private _timer?: ReturnType<typeof setTimeout>;
  private _running = false;
  private _busy = false;
  private _again = false;
  private _disposed = false;
}
