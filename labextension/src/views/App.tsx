/** The whole UI for one route: header, session handling, and the view of the route. */
import { useCallback, useEffect, useMemo, useState } from 'react';
import type { CondaStoreClient, Permissions } from '../api';
import { UIContext, useUI } from './context';
import type { UIContextValue, LoginMode, Navigator } from './context';
import { ErrorMessage, Link, Loading, useAction } from './common';
import type { Route } from './routes';
import { routePath } from './routes';
import { Home } from './Home';
import { EnvironmentView } from './EnvironmentView';
import { BuildView } from './BuildView';
import { CreateView } from './CreateView';
import { LoginView } from './LoginView';
import { NamespacesView } from './NamespacesView';
import { UserView } from './UserView';

export interface AppProps {
  client: CondaStoreClient;
  nav: Navigator;
  route: Route;
  loginMode: LoginMode;
  registryHost: string;
  /** Show the navigation bar (the page does; JupyterLab has its own: sidebar panel and palette). */
  header?: boolean;
}

export function App(props: AppProps) {
  const { client, nav, route } = props;
  const [session, setSession] = useState<Permissions | undefined>();
  const [sessionError, setSessionError] = useState<Error | undefined>();
  const refreshSession = useCallback(async () => {
    try {
      setSession(await client.permissions());
      setSessionError(undefined);
    } catch (err) {
      setSessionError(err as Error);
    }
  }, [client]);
  useEffect(() => void refreshSession(), [refreshSession]);

  const value = useMemo<UIContextValue | undefined>(
    () => session && { client, nav, session, refreshSession, loginMode: props.loginMode, registryHost: props.registryHost },
    [client, nav, session, refreshSession, props.loginMode, props.registryHost]
  );

  if (sessionError) return <main className="cs-main"><ErrorMessage error={sessionError} context="conda-store" /></main>;
  if (!value) return <main className="cs-main"><Loading /></main>;
  const needsLogin = !value.session.authenticated && route.kind !== 'login';
  return (
    <UIContext.Provider value={value}>
      {props.header === false ? null : <Header />}
      <main className="cs-main" id="cs-main">
        {needsLogin ? <LoginView next={routePath(route)} /> : <RouteView route={route} />}
      </main>
    </UIContext.Provider>
  );
}

function RouteView({ route }: { route: Route }) {
  switch (route.kind) {
    case 'home':
      return <Home search={route.search} namespace={route.namespace} page={route.page} />;
    case 'login':
      return <LoginView next={route.next} />;
    case 'environment':
      return <EnvironmentView key={`${route.namespace}/${route.name}`} namespace={route.namespace} name={route.name} />;
    case 'edit':
      return <CreateView key={`edit-${route.namespace}/${route.name}`} edit={{ namespace: route.namespace, name: route.name }} />;
    case 'build':
      return <BuildView key={route.id} id={route.id} />;
    case 'create':
      return <CreateView key="create" namespace={route.namespace} />;
    case 'namespaces':
      return <NamespacesView />;
    case 'user':
      return <UserView />;
    case 'notfound':
      return (
        <section>
          <h1>Page not found</h1>
          <p>There is no page at <code>{route.path}</code>. <Link to={{ kind: 'home' }}>Go to the environments</Link>.</p>
        </section>
      );
  }
}

function Header() {
  const { session, client, nav, refreshSession } = useUI();
  const logout = useAction(async () => {
    await client.logout();
    await refreshSession();
    nav.go({ kind: 'login' });
  });
  return (
    <header className="cs-navbar">
      <a className="cs-skip" href="#cs-main">Skip to content</a>
      <Link to={{ kind: 'home' }} className="cs-brand">conda-store</Link>
      {session.authenticated ? (
        <>
          <nav aria-label="Main" className="cs-nav">
            <Link to={{ kind: 'home' }}>Environments</Link>
            <Link to={{ kind: 'create' }}>New environment</Link>
            <Link to={{ kind: 'namespaces' }}>Namespaces</Link>
          </nav>
          <div className="cs-nav cs-nav-end">
            <Link to={{ kind: 'user' }} aria-label={`User ${session.username ?? ''}`}>{session.username ?? session.primary_namespace}</Link>
            <button type="button" className="cs-btn cs-btn-sm cs-btn-outline-light" disabled={logout.busy}
              onClick={() => void logout.run()}>Log out</button>
          </div>
        </>
      ) : null}
      {logout.error ? <ErrorMessage error={logout.error} context="Log out" /> : null}
    </header>
  );
}
