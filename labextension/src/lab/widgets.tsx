/**
 * The Lumino side of the Lab host: a main-area view (the shared `App` for one route; where its
 * links lead is the plugin's business, see ViewHost.navigate) and the sidebar panel widget. Both
 * only render; the plugin (index.ts) wires them.
 */
import { ReactWidget } from '@jupyterlab/apputils';
import type { CondaStoreClient } from '../api';
import type { LabConfig } from '../api/labTransport';
import { App, routePath, routeTitle } from '../views';
import type { Navigator, Route } from '../views';
import type { KernelsModel } from './kernels';
import type { EnvironmentsModel } from './model';
import type { NotebooksModel } from './notebooks';
import { EnvironmentsPanel } from './panel';
import type { PanelActions } from './panel';

/** What views need from the plugin. */
export interface ViewHost {
  client: CondaStoreClient;
  config(): LabConfig | undefined;
  /**
   * A link or action inside `view` leads to `route`. The plugin shows it in place of the view
   * (a new tab for the new route, the old one closed), so every tab keeps one route for its
   * life and the layout restorer sees each change.
   */
  navigate(view: CondaStoreView, route: Route): void;
}

/**
 * Stable identity of a route: one tab per key. The environment list is one tab whatever its
 * search and page (typing in its search box updates that tab in place).
 */
export function routeKey(route: Route): string {
  return route.kind === 'home' ? 'home' : routePath(route);
}

/** A link target: the service's own page when users can reach it, else nothing to follow. */
export function routeHref(config: LabConfig | undefined, route: Route): string {
  return config?.public_url ? `${config.public_url.replace(/\/$/, '')}/${routePath(route)}` : '#';
}

export class CondaStoreView extends ReactWidget {
  constructor(private readonly host: ViewHost, route: Route) {
    super();
    this.addClass('cs-lab');
    this.addClass('cs-lab-view');
    this._route = route;
    this.nav = {
      href: (to) => routeHref(this.host.config(), to),
      go: (to) => this.host.navigate(this, to)
    };
    this.syncTitle();
  }

  get route(): Route {
    return this._route;
  }

  /** Only within the same key (see routeKey): a new key gets a new tab. */
  set route(route: Route) {
    this._route = route;
    this.syncTitle();
    this.update();
  }

  render() {
    const config = this.host.config();
    return (
      <App client={this.host.client} nav={this.nav} route={this._route} loginMode="host"
        registryHost={config?.registry ?? window.location.host} header={false} />
    );
  }

  private syncTitle(): void {
    this.title.label = routeTitle(this._route);
    this.title.caption = `conda-store: ${routeTitle(this._route)}`;
  }

  private readonly nav: Navigator;
  private _route: Route;
}

export class PanelWidget extends ReactWidget {
  constructor(
    private readonly model: EnvironmentsModel,
    private readonly client: CondaStoreClient,
    private readonly actions: PanelActions,
    private readonly kernelParts: { kernels?: KernelsModel; notebooks?: NotebooksModel } = {}
  ) {
    super();
    this.addClass('cs-panel-widget');
  }

  /** The extension's config, once known (registry host; why the service is unusable). */
  set config(config: LabConfig | undefined) {
    this._config = config;
    this.update();
  }

  set configError(message: string | undefined) {
    this._configError = message;
    this.update();
  }

  render() {
    const config = this._config;
    const problem = this._configError ?? (config && !config.configured ? config.message : null);
    return (
      <EnvironmentsPanel model={this.model} client={this.client} actions={this.actions}
        registryHost={config?.registry ?? window.location.host} problem={problem}
        kernels={this.kernelParts.kernels} notebooks={this.kernelParts.notebooks} />
    );
  }

  private _config?: LabConfig;
  private _configError?: string;
}
