/**
 * "Add ipykernel and rebuild": an environment without a kernel package gets one by submitting
 * its current specification with `ipykernel` added, through the same client and route as any
 * edit (the service's rules, permissions and errors apply unchanged).
 */
import type { CondaStoreClient } from '../api';
import { specToYaml } from '../views/yaml';
import type { EnvironmentRow } from './model';

/** The name a dependency line installs: `ipykernel>=6`, `conda-forge::ipykernel 6.*` → `ipykernel`. */
export function dependencyName(dep: string): string {
  const bare = dep.trim().split('::').pop() ?? '';
  return bare.split(/[\s=<>!~[]/)[0].toLowerCase();
}

/** `spec` with `name` added to its conda dependencies (the same object when already there). */
export function withPackage(spec: Record<string, unknown>, name: string): Record<string, unknown> {
  const deps = Array.isArray(spec.dependencies) ? [...spec.dependencies] : [];
  if (deps.some((d) => typeof d === 'string' && dependencyName(d) === name)) return spec;
  // Before a `pip:` block, where a reader of the YAML expects the conda packages to end.
  const pip = deps.findIndex((d) => d !== null && typeof d === 'object');
  deps.splice(pip === -1 ? deps.length : pip, 0, name);
  return { ...spec, dependencies: deps };
}

/** The environment's current specification with ipykernel added, queued as its next build. */
export async function addIpykernel(client: CondaStoreClient, row: EnvironmentRow): Promise<number> {
  const current = row.environment.current_build;
  let spec = current?.specification?.spec;
  if (!spec && row.environment.current_build_id !== null) {
    spec = (await client.build(row.environment.current_build_id)).specification?.spec;
  }
  if (!spec) throw new Error(`${row.namespace}/${row.name} has no current specification to add ipykernel to`);
  return client.submitSpecification({
    namespace: row.namespace, environmentName: row.name, specification: specToYaml(withPackage(spec, 'ipykernel'))
  });
}
