/** Render a view inside the UI context with a fake transport; no host, no server. */
import { act, ReactNode } from 'react';
import { createRoot, Root } from 'react-dom/client';
import { CondaStoreClient } from '../api';
import type { Permissions } from '../api';
import { UIContext } from '../views';
import type { Route, UIContextValue } from '../views';
import { FakeTransport } from './fake';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

export const alice: Permissions = {
  authenticated: true, primary_namespace: 'alice', username: 'alice',
  entity_permissions: { 'alice/*': ['environment:create', 'environment::read'], 'default/*': ['environment::read'] },
  entity_roles: { 'alice/*': ['admin'], 'default/*': ['viewer'] }, expiration: null
};

export interface Rendered {
  container: HTMLElement;
  visits: Route[];
  root: Root;
  unmount(): void;
}

export async function render(ui: ReactNode, transport: FakeTransport, session = alice): Promise<Rendered> {
  const container = document.createElement('div');
  document.body.appendChild(container);
  const visits: Route[] = [];
  const value: UIContextValue = {
    client: new CondaStoreClient(transport),
    nav: { href: (r) => `#${r.kind}`, go: (r) => void visits.push(r) },
    session,
    refreshSession: async () => {},
    loginMode: 'token',
    registryHost: 'registry.example:8080'
  };
  const root = createRoot(container);
  await act(async () => root.render(<UIContext.Provider value={value}>{ui}</UIContext.Provider>));
  return {
    container, visits, root,
    unmount: () => { act(() => root.unmount()); container.remove(); }
  };
}

/** Let pending promises and timers-free effects settle. */
export async function settle(): Promise<void> {
  await act(async () => { for (let i = 0; i < 5; i++) await Promise.resolve(); });
}
