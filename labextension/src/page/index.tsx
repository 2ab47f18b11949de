/**
 * The standalone page: the host of the views that `conda-store-server` serves at its URL prefix.
 * The server's HTML shell (conda_store_jupyter/server/pages.py) carries the configuration in data
 * attributes of #conda-store-root, because the Content-Security-Policy allows no inline script.
 */
import { StrictMode, useEffect, useMemo, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { CondaStoreClient, PageTransport } from '../api';
import { App, parseRoute, routePath, routeTitle } from '../views';
import type { LoginMode, Navigator, Route } from '../views';
import '../../style/page.css';
import '../../style/components.css';

interface PageConfig {
  prefix: string;
  xsrf: string;
  loginMode: LoginMode;
  registryHost: string;
}

function readConfig(root: HTMLElement): PageConfig {
  const data = root.dataset;
  const mode = data.loginMode;
  return {
    prefix: data.prefix || '/',
    xsrf: data.xsrf || '',
    loginMode: mode === 'password' || mode === 'hub' ? mode : 'token',
    registryHost: data.registryHost || window.location.host
  };
}

function currentRoute(prefix: string): Route {
  const path = window.location.pathname.startsWith(prefix) ? window.location.pathname.slice(prefix.length) : '';
  return parseRoute(path, window.location.search);
}

function Page({ config }: { config: PageConfig }) {
  const client = useMemo(() => new CondaStoreClient(new PageTransport(config.prefix, config.xsrf)), [config]);
  const [route, setRoute] = useState<Route>(() => currentRoute(config.prefix));
  const nav = useMemo<Navigator>(() => ({
    href: (to) => config.prefix + routePath(to),
    go: (to, options) => {
      const url = config.prefix + routePath(to);
      if (options?.replace) window.history.replaceState(null, '', url);
      else window.history.pushState(null, '', url);
      setRoute(currentRoute(config.prefix));
      if (!options?.replace) window.scrollTo(0, 0);
    }
  }), [config.prefix]);
  useEffect(() => {
    const onPop = () => setRoute(currentRoute(config.prefix));
    window.addEventListener('popstate', onPop);
    return () => window.removeEventListener('popstate', onPop);
  }, [config.prefix]);
  useEffect(() => {
    document.title = `${routeTitle(route)} · conda-store`;
  }, [route]);
  return <App client={client} nav={nav} route={route} loginMode={config.loginMode} registryHost={config.registryHost} />;
}

const root = document.getElementById('conda-store-root');
if (root) {
  createRoot(root).render(<StrictMode><Page config={readConfig(root)} /></StrictMode>);
}
