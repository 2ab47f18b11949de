/**
 * A stored specification (a JSON object) back to environment.yaml text, for display and as the
 * starting point of an edit. Only what environment files contain: mappings, lists and scalars.
 */
export function specToYaml(spec: Record<string, unknown>): string {
  const order = ['name', 'description', 'channels', 'dependencies', 'variables', 'prefix'];
  const keys = [...order.filter((k) => k in spec), ...Object.keys(spec).filter((k) => !order.includes(k))];
  return keys
    .filter((k) => spec[k] !== null && spec[k] !== undefined && !(Array.isArray(spec[k]) && (spec[k] as unknown[]).length === 0))
    .map((k) => emit(k, spec[k], 0))
    .join('');
}

function scalar(value: unknown): string {
  if (typeof value === 'string') {
    // Quote only when YAML would read the plain text as something else.
    return /^[\w.\-+/<>=!*,:@ ~^[\]]+$/.test(value) && !/^[-?:,[\]{}#&*!|>'"%@`]|: | #|^\s|\s$/.test(value) &&
      !/^(true|false|null|yes|no|on|off|~|[-+]?[0-9][0-9_.eE+-]*)$/i.test(value)
      ? value
      : JSON.stringify(value);
  }
  return JSON.stringify(value);
}

function emit(key: string, value: unknown, indent: number): string {
  const pad = ' '.repeat(indent);
  if (Array.isArray(value)) {
    return `${pad}${key}:\n` + value.map((item) => listItem(item, indent + 2)).join('');
  }
  if (value && typeof value === 'object') {
    return `${pad}${key}:\n` + Object.entries(value).map(([k, v]) => emit(k, v, indent + 2)).join('');
  }
  return `${pad}${key}: ${scalar(value)}\n`;
}

function listItem(item: unknown, indent: number): string {
  const pad = ' '.repeat(indent);
  if (item && typeof item === 'object' && !Array.isArray(item)) {
    const entries = Object.entries(item);
    return entries
      .map(([k, v], i) => {
        const text = emit(k, v, indent + 2);
        return i === 0 ? `${pad}- ${text.slice(indent + 2)}` : text;
      })
      .join('');
  }
  return `${pad}- ${scalar(item)}\n`;
}

/** Why a lockfile environment has no YAML editor (what to do instead, in the CLI's words). */
export const LOCKFILE_NOT_EDITABLE =
  'This environment was made from a lockfile, so it cannot be edited as environment.yaml. ' +
  'Submit a new lockfile with `conda-store env update -f conda-lock.yml -n ns/env`; rebuilding a build still works.';

/** How many packages a stored lockfile specification pins (conda-lock v1: `package` list). */
export function lockedPackageCount(spec: Record<string, unknown>): number {
  const lockfile = spec.lockfile as { package?: unknown } | undefined;
  return Array.isArray(lockfile?.package) ? lockfile!.package.length : 0;
}
