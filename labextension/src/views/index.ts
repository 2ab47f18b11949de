export { App } from './App';
export type { AppProps } from './App';
export { UIContext, useUI } from './context';
export type { LoginMode, Navigator, UIContextValue } from './context';
export { parseRoute, routePath, routeTitle } from './routes';
export type { Route } from './routes';
