/**
 * The JupyterLab plugin: the conda-store sidebar panel, the shared views as main-area tabs
 * (restored after a reload), palette commands and build notifications. Every request goes
 * through the user's jupyter-server (LabTransport), never straight to the service.
 */
import { ILayoutRestorer } from '@jupyterlab/application';
import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Clipboard, ICommandPalette, MainAreaWidget, Notification, WidgetTracker } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';
import type { ReadonlyPartialJSONObject } from '@lumino/coreutils';
import { CondaStoreClient } from '../api';
import { KernelsClient } from '../api/kernels';
import { LabTransport } from '../api/labTransport';
import type { LabConfig } from '../api/labTransport';
import type { Route } from '../views';
import { KernelsModel } from './kernels';
import { addIpykernel } from './ipykernel';
import { EnvironmentsModel } from './model';
import type { FinishedBuild } from './model';
import { NotebooksModel } from './notebooks';
import type { NotebookTrackerLike } from './notebooks';
import { CondaStoreView, PanelWidget, routeKey } from './widgets';
import type { ViewHost } from './widgets';

export const PLUGIN_ID = 'conda-store-jupyter:plugin';
export const PANEL_ID = 'conda-store-panel';

export const CommandIDs = {
  open: 'conda-store:open',
  newEnvironment: 'conda-store:new-environment',
  environments: 'conda-store:environments',
  namespaces: 'conda-store:namespaces',
  user: 'conda-store:user',
  showPanel: 'conda-store:show-panel',
  refresh: 'conda-store:refresh'
} as const;

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
<g class="jp-icon3" fill="#616161"><path d="M12 2 3 6.5v11L12 22l9-4.5v-11L12 2zm0 2.2 6.8 3.4L12 11 5.2 7.6 12 4.2zM5 9.3l6 3v7.4l-6-3V9.3zm8 10.4v-7.4l6-3v7.4l-6 3z"/></g>
</svg>`;
export const condaStoreIcon = new LabIcon({ name: 'conda-store-jupyter:icon', svgstr: ICON_SVG });

/** Build-finished notifications: success closes by itself, a failure stays until read. */
export function notifyFinished(finished: FinishedBuild, open: (route: Route) => void): void {
  const { build, namespace, name } = finished;
  const what = `Build #${build.id} of ${namespace}/${name}`;
  const actions = [{ label: 'Open build', callback: () => open({ kind: 'build', id: build.id }) }];
  if (build.status === 'COMPLETED') {
    Notification.success(`${what} completed`, { autoClose: 8000, actions });
  } else {
    const reason = build.status_info ? `: ${build.status_info}` : '';
    Notification.error(`${what} ${build.status === 'CANCELED' ? 'was canceled' : 'failed'}${reason}`,
      { autoClose: false, actions });
  }
}

/** A route from command arguments: `{route}` (as restored), or `{namespace, name}` / `{build}`. */
function routeOf(args: ReadonlyPartialJSONObject): Route {
  const route = args.route as Route | undefined;
  if (route && typeof route === 'object' && typeof route.kind === 'string') return route;
  if (typeof args.build === 'number') return { kind: 'build', id: args.build };
  if (typeof args.namespace === 'string' && typeof args.name === 'string') {
    return { kind: 'environment', namespace: args.namespace, name: args.name };
  }
  return { kind: 'home' };
}

function activate(app: JupyterFrontEnd, palette: ICommandPalette | null, restorer: ILayoutRestorer | null,
  notebookTracker: INotebookTracker | null): void {
  const transport = new LabTransport();
  const client = new CondaStoreClient(transport);
  const model = new EnvironmentsModel(client);
  const kernelsClient = new KernelsClient(transport);
  const specs = app.serviceManager.kernelspecs;
  const kernels = new KernelsModel(kernelsClient, { refreshSpecs: () => specs.refreshSpecs(), document });
  const notebooks = notebookTracker
    ? new NotebooksModel(kernelsClient, notebookTracker as unknown as NotebookTrackerLike, {
      isOurs: (name) => {
        const spec = specs.specs?.kernelspecs[name];
        // The contract marks our specs with metadata.conda_store; names are never parsed.
        return spec ? Boolean((spec.metadata as { conda_store?: unknown } | undefined)?.conda_store) : undefined;
      }
    })
    : undefined;
  const tracker = new WidgetTracker<MainAreaWidget<CondaStoreView>>({ namespace: 'conda-store' });
  let config: LabConfig | undefined;

  const watch = (route: Route) => {
    if (route.kind === 'build') {
      model.watch(route.id).catch(() => undefined); // a build that cannot be read is shown by its view
    }
  };
  const host: ViewHost = {
    client,
    config: () => config,
    navigate: (view, route) => {
      model.refreshSoon(); // the view may have created, rebuilt or deleted something
      const from = tracker.find((w) => w.content === view);
      if (from && routeKey(route) === routeKey(view.route)) {
        view.route = route; // same place (the list's search): in place, its restore data updated
        from.title.label = view.title.label;
        void tracker.save(from);
        return;
      }
      const widget = open(route, from);
      if (from && widget !== from) {
        // After the current event: the view that asked is still handling it (React).
        setTimeout(() => from.dispose(), 0);
      }
    }
  };

  /** The tab of `route` (activated), made if needed; next to `after` when given. */
  const open = (route: Route, after?: MainAreaWidget<CondaStoreView>): MainAreaWidget<CondaStoreView> => {
    const key = routeKey(route);
    const existing = tracker.find((w) => routeKey(w.content.route) === key);
    if (existing) {
      app.shell.activateById(existing.id);
      return existing;
    }
    const content = new CondaStoreView(host, route);
    const widget = new MainAreaWidget({ content });
    widget.id = `conda-store-${Private.nextId++}`;
    widget.addClass('cs-lab-tab');
    widget.title.icon = condaStoreIcon;
    widget.title.closable = true;
    widget.title.label = content.title.label;
    widget.title.caption = content.title.caption;
    void tracker.add(widget);
    app.shell.add(widget, 'main', after ? { ref: after.id, mode: 'tab-after' } : undefined);
    app.shell.activateById(widget.id);
    watch(route);
    return widget;
  };

  const panel = new PanelWidget(model, client, {
    open: (route) => void open(route),
    rebuild: async (row) => {
      const source = row.environment.current_build ?? row.build;
      if (!source) throw new Error(`${row.namespace}/${row.name} has no build to rebuild`);
      const id = await client.rebuild(source.id);
      model.refreshSoon();
      return id;
    },
    copy: (text, what) => {
      Clipboard.copyToSystem(text);
      Notification.info(`Copied the ${what}: ${text}`, { autoClose: 3000 });
    },
    addIpykernel: async (row) => {
      const id = await addIpykernel(client, row);
      model.refreshSoon();
      return id;
    }
  }, { kernels, notebooks });
  panel.id = PANEL_ID;
  panel.title.icon = condaStoreIcon;
  panel.title.caption = 'conda-store environments';
  app.shell.add(panel, 'left', { rank: 650 });

  model.finished.connect((_, finished) => {
    notifyFinished(finished, (route) => void open(route));
    // The new build is the environment's kernel now: the Launcher shows it without waiting.
    if (finished.build.status === 'COMPLETED') void kernels.buildCompleted();
  });
  transport.config().then(
    (value) => {
      config = value;
      panel.config = value;
      for (const w of tracker.filter(() => true)) w.content.update(); // registry host for docker lines
    },
    (err: Error) => (panel.configError = `the conda-store extension of this Jupyter server did not answer: ${err.message}`)
  );
  model.start();
  kernels.start();

  const { commands } = app;
  commands.addCommand(CommandIDs.open, {
    label: (args) => (args.route || args.build || args.name ? 'Open in conda-store' : 'conda-store: Environments'),
    execute: (args) => void open(routeOf(args))
  });
  commands.addCommand(CommandIDs.newEnvironment, {
    label: 'conda-store: New Environment',
    caption: 'Create a conda environment from a specification',
    icon: condaStoreIcon,
    execute: (args) => void open({ kind: 'create', namespace: (args.namespace as string) || undefined })
  });
  commands.addCommand(CommandIDs.environments, {
    label: 'conda-store: All Environments',
    execute: () => void open({ kind: 'home' })
  });
  commands.addCommand(CommandIDs.namespaces, {
    label: 'conda-store: Namespaces',
    execute: () => void open({ kind: 'namespaces' })
  });
  commands.addCommand(CommandIDs.user, {
    label: 'conda-store: User and API Tokens',
    execute: () => void open({ kind: 'user' })
  });
  commands.addCommand(CommandIDs.showPanel, {
    label: 'conda-store: Show Environments Panel',
    execute: () => app.shell.activateById(PANEL_ID)
  });
  commands.addCommand(CommandIDs.refresh, {
    label: 'conda-store: Refresh Environments',
    execute: () => model.refreshSoon()
  });
  if (palette) {
    for (const command of [CommandIDs.newEnvironment, CommandIDs.environments, CommandIDs.namespaces,
      CommandIDs.user, CommandIDs.showPanel, CommandIDs.refresh]) {
      palette.addItem({ command, category: 'conda-store' });
    }
  }

  if (restorer) {
    restorer.add(panel, PANEL_ID);
    void restorer.restore(tracker, {
      command: CommandIDs.open,
      args: (w) => ({ route: w.content.route as unknown as ReadonlyPartialJSONObject }),
      name: (w) => routeKey(w.content.route)
    });
  }
}

namespace Private {
  export let nextId = 1;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'conda-store environments in JupyterLab: sidebar panel, views, notifications.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, INotebookTracker],
  activate
};

export default plugin;
