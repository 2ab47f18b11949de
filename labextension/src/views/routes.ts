/**
 * The places of the UI, as data. A host turns them into URLs (the page: paths under the service
 * prefix; JupyterLab: main-area widgets), so views never know where they run.
 */
export type Route =
  | { kind: 'home'; search?: string; namespace?: string; page?: number }
  | { kind: 'login'; next?: string }
  | { kind: 'environment'; namespace: string; name: string }
  | { kind: 'edit'; namespace: string; name: string }
  | { kind: 'build'; id: number }
  | { kind: 'create'; namespace?: string }
  | { kind: 'namespaces' }
  | { kind: 'user' }
  | { kind: 'notfound'; path: string };

const enc = encodeURIComponent;

/** A route as a path relative to the service prefix (no leading slash). */
export function routePath(route: Route): string {
  switch (route.kind) {
    case 'home': {
      const q = new URLSearchParams();
      if (route.search) q.set('search', route.search);
      if (route.namespace) q.set('namespace', route.namespace);
      if (route.page && route.page > 1) q.set('page', String(route.page));
      const s = q.toString();
      return s ? `?${s}` : '';
    }
    case 'login':
      return route.next ? `login/?next=${enc(route.next)}` : 'login/';
    case 'environment':
      return `environment/${enc(route.namespace)}/${enc(route.name)}/`;
    case 'edit':
      return `environment/${enc(route.namespace)}/${enc(route.name)}/edit/`;
    case 'build':
      return `build/${route.id}/`;
    case 'create':
      return route.namespace ? `create/?namespace=${enc(route.namespace)}` : 'create/';
    case 'namespaces':
      return 'namespaces/';
    case 'user':
      return 'user/';
    case 'notfound':
      return route.path;
  }
}

/** The inverse of routePath: `path` relative to the prefix (no leading slash), `search` with `?`. */
export function parseRoute(path: string, search = ''): Route {
  const q = new URLSearchParams(search);
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const intParam = (v: string | null) => (v && /^[0-9]+$/.test(v) ? Number(v) : undefined);
  if (parts.length === 0) {
    return { kind: 'home', search: q.get('search') ?? undefined, namespace: q.get('namespace') ?? undefined,
      page: intParam(q.get('page')) };
  }
  const [first, a, b, c] = parts;
  if (first === 'login' && parts.length === 1) return { kind: 'login', next: q.get('next') ?? undefined };
  if (first === 'environment' && parts.length === 3) return { kind: 'environment', namespace: a, name: b };
  if (first === 'environment' && parts.length === 4 && c === 'edit') return { kind: 'edit', namespace: a, name: b };
  if (first === 'build' && parts.length === 2 && /^[0-9]+$/.test(a)) return { kind: 'build', id: Number(a) };
  if (first === 'create' && parts.length === 1) return { kind: 'create', namespace: q.get('namespace') ?? undefined };
  if (first === 'namespaces' && parts.length === 1) return { kind: 'namespaces' };
  if (first === 'user' && parts.length === 1) return { kind: 'user' };
  return { kind: 'notfound', path };
}

/** A short title for a route (browser tab on the page, main-area tab in JupyterLab). */
export function routeTitle(route: Route): string {
  switch (route.kind) {
    case 'home': return 'Environments';
    case 'environment': return `${route.namespace}/${route.name}`;
    case 'edit': return `Edit ${route.namespace}/${route.name}`;
    case 'build': return `Build #${route.id}`;
    case 'create': return 'New environment';
    case 'namespaces': return 'Namespaces';
    case 'user': return 'User';
    case 'login': return 'Log in';
    case 'notfound': return 'Not found';
  }
}
