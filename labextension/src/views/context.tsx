import { createContext, useContext } from 'react';
import type { CondaStoreClient, Permissions } from '../api';
import type { Route } from './routes';

/** How the host navigates: links get real `href`s, and `go` moves without reloading. */
export interface Navigator {
  href(route: Route): string;
  go(route: Route, options?: { replace?: boolean }): void;
}

/**
 * How a user logs in on this host. `host`: the host itself holds the credential (JupyterLab's
 * server extension), so there is nothing to log in to here, only a problem to report.
 */
export type LoginMode = 'password' | 'token' | 'hub' | 'host';

export interface UIContextValue {
  client: CondaStoreClient;
  nav: Navigator;
  /** Who is logged in (refreshed after login/logout). */
  session: Permissions;
  refreshSession(): Promise<void>;
  loginMode: LoginMode;
  /** host[:port] of the registry, for `docker pull` lines. */
  registryHost: string;
}

export const UIContext = createContext<UIContextValue | null>(null);

export function useUI(): UIContextValue {
  const value = useContext(UIContext);
  if (value === null) {
    throw new Error('conda-store views must be rendered inside <UIContext.Provider>');
  }
  return value;
}
