/**
 * The kernel routes of the user's jupyter-server extension (KERNEL-CONTRACT.md), not of the
 * service: `<base_url>conda-store/kernels`, `kernels/refresh`, `kernels/running/<kernel id>`.
 * They answer plain JSON (no `{status, data}` envelope); an envelope is unwrapped all the same,
 * so either shape of the backend works.
 */
import { ApiError, errorOf } from './client';
import type { Transport } from './transport';

export type KernelStatus = 'ready' | 'no-kernel-package' | 'no-build' | 'unavailable';

/** One environment the user may read, as a kernel (or why it is not one). */
export interface KernelEntry {
  namespace: string;
  environment: string;
  /** The stable kernelspec name (one per environment, never per build); null when not a kernel. */
  kernel_name: string | null;
  display_name: string;
  /** The environment's current build. */
  build_id: number | null;
  language: string | null;
  status: KernelStatus;
  message: string;
}

export interface KernelList {
  /** Opaque; changes whenever the list changes (the UI then refreshes Lab's kernelspecs). */
  version: string;
  kernels: KernelEntry[];
  /** The server's last refresh from the service failed: why (the list is its last good one). */
  error?: string | null;
}

/** What a kernel started from an environment runs. */
export interface RunningKernel {
  namespace: string;
  environment: string;
  build_id: number;
  lockfile_sha256: string | null;
  prefix: string;
  source: 'store' | 'cache';
  /** The notebook's pin the launch honoured, if any. */
  pinned: number | null;
  /** The environment's current build now: newer than `build_id` means "restart to use it". */
  current_build_id: number | null;
  started: string;
}

const enc = encodeURIComponent;

export class KernelsClient {
  constructor(readonly transport: Transport) {}

  list(signal?: AbortSignal): Promise<KernelList> {
    return this.json<KernelList>('kernels', { signal });
  }

  /** The list, forced fresh on the server (a build just completed). */
  refresh(): Promise<KernelList> {
    return this.json<KernelList>('kernels/refresh', { method: 'POST' });
  }

  /** What `kernelId` runs; null when it is not a kernel from an environment (404). */
  async running(kernelId: string, signal?: AbortSignal): Promise<RunningKernel | null> {
    try {
      return await this.json<RunningKernel>(`kernels/running/${enc(kernelId)}`, { signal });
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return null;
      throw err;
    }
  }

  private async json<T>(path: string, options: { method?: 'GET' | 'POST'; signal?: AbortSignal }): Promise<T> {
    let response: Response;
    try {
      response = await this.transport.fetch(path, options);
    } catch (err) {
      if ((err as Error)?.name === 'AbortError') throw err;
      throw new ApiError(0, `cannot reach this Jupyter server: ${(err as Error)?.message ?? err}`);
    }
    if (!response.ok) throw await errorOf(response);
    let body: unknown;
    try {
      body = await response.json();
    } catch {
      throw new ApiError(response.status, `${path} answered ${response.status} with a body that is not JSON`);
    }
    const envelope = body as { status?: string; data?: unknown };
    return (envelope && envelope.status === 'ok' && 'data' in envelope ? envelope.data : body) as T;
  }
}
