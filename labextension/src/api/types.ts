/** The shapes of conda-store-jupyter's REST API v1 (server/serialize.py), one interface per object. */

export type BuildStatus = 'QUEUED' | 'BUILDING' | 'COMPLETED' | 'FAILED' | 'CANCELED';

export const FINISHED_STATUSES: ReadonlySet<BuildStatus> = new Set(['COMPLETED', 'FAILED', 'CANCELED']);

export type ArtifactType =
  | 'LOCKFILE'
  | 'LOGS'
  | 'YAML'
  | 'CONDA_PACK'
  | 'DOCKER_MANIFEST'
  | 'CONSTRUCTOR_INSTALLER'
  | string;

/** Every answer: `{status, data, message}`; listings add `page`, `size`, `count`. */
export interface Envelope<T> {
  status: 'ok' | 'error';
  data: T;
  message: string | null;
}

export interface PagedEnvelope<T> extends Envelope<T[]> {
  page: number;
  size: number;
  count: number;
}

export interface Page<T> {
  items: T[];
  page: number;
  size: number;
  count: number;
}

export interface NamespaceRef {
  id: number;
  name: string;
}

export interface RoleMapping {
  id: number;
  entity: string;
  role: string;
}

export interface Namespace extends NamespaceRef {
  metadata_?: Record<string, unknown>;
  role_mappings?: RoleMapping[];
}

export interface Specification {
  id: number;
  name: string;
  spec: Record<string, unknown>;
  /** Submitted as a conda-lock file: `spec` is `{name, description, lockfile}`, not environment.yaml. */
  is_lockfile?: boolean;
  sha256: string;
  created_on: string | null;
}

export interface Artifact {
  id: number;
  artifact_type: ArtifactType;
  key: string;
}

/** State of one artifact: those made after COMPLETED (archive, image) are PENDING first. */
export type ArtifactStatus = 'PENDING' | 'READY' | 'FAILED';

export interface ArtifactState {
  type: ArtifactType;
  status: ArtifactStatus;
  /** Why a FAILED artifact will not come (the build itself stays COMPLETED and usable). */
  reason: string | null;
}

export interface Build {
  id: number;
  environment_id: number;
  specification: Specification | null;
  status: BuildStatus;
  status_info: string | null;
  size: number;
  scheduled_on: string | null;
  started_on: string | null;
  ended_on: string | null;
  deleted_on: string | null;
  build_artifacts: Artifact[] | null;
  /** Every artifact the build has or will have, with its state (added by this server; absent upstream). */
  artifacts?: ArtifactState[];
  /** Names the build's prefix, artifacts and image tag (added by this server; absent upstream). */
  build_key?: string;
  /** The build's environment (detail answers only; added by this server). */
  environment?: { namespace: string; name: string };
}

export interface Environment {
  id: number;
  namespace: NamespaceRef;
  name: string;
  current_build_id: number | null;
  current_build: Build | null;
  description: string | null;
}

export interface PackageBuild {
  id: number;
  channel: { id: number; name: string };
  license: string | null;
  name: string;
  version: string;
  summary: string | null;
  build: string;
  build_number: number;
  subdir: string | null;
  sha256: string | null;
  size: number | null;
}

export interface Permissions {
  authenticated: boolean;
  primary_namespace: string;
  username: string | null;
  entity_permissions: Record<string, string[]>;
  entity_roles: Record<string, string[]>;
  expiration: string | null;
}

export interface TokenInfo {
  id: number;
  primary_namespace: string;
  role_bindings: Record<string, string[]>;
  note: string | null;
  created_on: string | null;
  expires_at: string | null;
  last_used: string | null;
  scoped: boolean;
}

export interface IssuedToken {
  token: string;
  id: number;
  expiration: string | null;
  primary_namespace: string;
  role_bindings: Record<string, string[]>;
}

export interface LoginResult {
  username: string;
  primary_namespace: string;
  expiration: string | null;
}

/** Paging and filters of `GET /api/v1/environment/`. */
export interface EnvironmentQuery {
  page?: number;
  size?: number;
  search?: string;
  namespace?: string;
  status?: BuildStatus;
}

export interface BuildQuery {
  page?: number;
  size?: number;
  environment_id?: number;
  status?: BuildStatus;
  order?: 'asc' | 'desc';
  sort_by?: string;
}
