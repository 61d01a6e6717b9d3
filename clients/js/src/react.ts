/**
 * React hooks over {@link Shortlink}: live events, the links list, a link's statistics and
 * uploads with progress. Each takes the client as its first argument (create one per app,
 * outside render, or keep it in a context).
 */
import { useCallback, useEffect, useRef, useState } from 'react';
import {
  ApiError,
  type Link,
  type LinkCreate,
  type LinkPage,
  type LinkQuery,
  type LinkStats,
  type LinkUpdate,
  type Progress,
  type Shortlink,
  type StatsQuery,
  type Upload,
  type UploadOptions,
} from './client.js';
import type { EventStreamOptions, ShortlinkEvent, StreamStatus, Transport } from './events.js';

/** Options of {@link useEvents}. */
export interface UseEventsOptions extends Omit<EventStreamOptions, 'baseUrl' | 'apiKey' | 'fetch'> {
  /** How many recent events to keep (default 50, newest first). */
  keep?: number;
  /** Called for each event as it arrives. */
  onEvent?: (event: ShortlinkEvent) => void;
  /** False pauses the stream (default true). */
  enabled?: boolean;
}

/** What {@link useEvents} returns. */
export interface EventsState {
  /** Recent events, newest first. */
  events: ShortlinkEvent[];
  status: StreamStatus;
  transport: Transport | null;
  /** The last event id seen: keep it to resume later. */
  lastEventId: string | null;
  /** The last error of a transport (cleared when one opens). */
  error: Error | null;
}

/**
 * The caller's live events: WebSocket first, then Server-Sent Events, then long polling,
 * resuming after the last event across reconnects.
 */
export function useEvents(client: Shortlink, options: UseEventsOptions = {}): EventsState {
  const { keep = 50, onEvent, enabled = true, ...streamOptions } = options;
  const [state, setState] = useState<EventsState>({
    events: [],
    status: enabled ? 'connecting' : 'closed',
    transport: null,
    lastEventId: options.lastEventId == null ? null : String(options.lastEventId),
    error: null,
  });
  const onEventRef = useRef(onEvent);
  onEventRef.current = onEvent;
  const resumeRef = useRef<string | null>(state.lastEventId);
  const keepRef = useRef(keep);
  keepRef.current = keep;
  // Ids belong to one server: another client starts from its own head.
  const clientRef = useRef(client);
  if (clientRef.current !== client) {
    clientRef.current = client;
    resumeRef.current = null;
  }
  const key = JSON.stringify({ ...streamOptions, lastEventId: undefined });
  useEffect(() => {
    if (!enabled) {
      setState((s) => ({ ...s, status: 'closed', transport: null }));
      return;
    }
    const stream = client.events({ ...streamOptions, lastEventId: resumeRef.current });
    const stops = [
      stream.on('event', (event) => {
        resumeRef.current = stream.lastEventId;
        onEventRef.current?.(event);
        setState((s) => ({ ...s, events: [event, ...s.events].slice(0, keepRef.current), lastEventId: stream.lastEventId }));
      }),
      stream.on('status', (status, transport) =>
        setState((s) => ({ ...s, status, transport, error: status === 'open' ? null : s.error })),
      ),
      stream.on('error', (error) => setState((s) => ({ ...s, error }))),
    ];
    return () => {
      for (const stop of stops) stop();
      resumeRef.current = stream.lastEventId;
      stream.close();
      setState((s) => ({ ...s, status: 'closed', transport: null }));
    };
    // The stream is rebuilt when the client or its options change.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, enabled, key]);
  return state;
}

/** What {@link useLinks} returns. */
export interface LinksState {
  links: Link[];
  loading: boolean;
  error: ApiError | null;
  /** True while more pages exist. */
  hasMore: boolean;
  /** Loads the next page. */
  loadMore: () => Promise<void>;
  /** Loads the first page again. */
  refresh: () => Promise<void>;
  /** Creates a link and puts it first. */
  create: (link: LinkCreate) => Promise<Link>;
  /** Changes a link and replaces it in the list. */
  update: (code: string, change: LinkUpdate, domain?: string) => Promise<Link>;
  /** Deletes a link and removes it from the list. */
  remove: (code: string, domain?: string) => Promise<void>;
}

/** The caller's links (newest first), page by page, with create, update and remove. */
export function useLinks(client: Shortlink, query: LinkQuery = {}): LinksState {
  const [links, setLinks] = useState<Link[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<ApiError | null>(null);
  const key = JSON.stringify(query);
  const generation = useRef(0);
  const load = useCallback(
    async (from: string | null) => {
      const mine = ++generation.current;
      setLoading(true);
      try {
        const page: LinkPage = await client.links.list({ ...query, cursor: from ?? undefined });
        if (mine !== generation.current) return;
        setLinks((current) => (from ? [...current, ...page.items] : page.items));
        setCursor(page.next_cursor ?? null);
        setError(null);
      } catch (e) {
        if (mine === generation.current) setError(asApiError(e));
      } finally {
        if (mine === generation.current) setLoading(false);
      }
    },
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [client, key],
  );
  useEffect(() => {
    // A new query starts from its own first page.
    setCursor(null);
    setLinks([]);
    void load(null);
  }, [load]);
  const same = (link: Link, code: string, domain?: string) =>
    link.code === code && (domain === undefined || (link as { domain?: string | null }).domain === domain);
  return {
    links,
    loading,
    error,
    hasMore: cursor !== null,
    loadMore: () => (cursor && !loading ? load(cursor) : Promise.resolve()),
    refresh: () => load(null),
    create: async (link) => {
      const created = (await client.links.create(link)) as Link;
      setLinks((current) => [created, ...current.filter((l) => l.code !== created.code)]);
      return created;
    },
    update: async (code, change, domain) => {
      const updated = (await client.links.update(code, change, domain)) as Link;
      setLinks((current) => current.map((l) => (same(l, code, domain) ? updated : l)));
      return updated;
    },
    remove: async (code, domain) => {
      await client.links.delete(code, domain);
      setLinks((current) => current.filter((l) => !same(l, code, domain)));
    },
  };
}

/** What {@link useLinkStats} returns. */
export interface LinkStatsState {
  stats: LinkStats | null;
  loading: boolean;
  error: ApiError | null;
  refresh: () => Promise<void>;
}

/** A link's statistics for `query` (loaded again when the code or query changes). */
export function useLinkStats(client: Shortlink, code: string | null, query: StatsQuery = {}): LinkStatsState {
  const [stats, setStats] = useState<LinkStats | null>(null);
  const [loading, setLoading] = useState(code !== null);
  const [error, setError] = useState<ApiError | null>(null);
  const key = JSON.stringify(query);
  const generation = useRef(0);
  const refresh = useCallback(async () => {
    const mine = ++generation.current;
    if (code === null) {
      setStats(null);
      setLoading(false);
      return;
    }
    setLoading(true);
    try {
      const result = await client.links.stats(code, query);
      if (mine !== generation.current) return;
      setStats(result);
      setError(null);
    } catch (e) {
      if (mine === generation.current) setError(asApiError(e));
    } finally {
      if (mine === generation.current) setLoading(false);
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, code, key]);
  useEffect(() => {
    void refresh();
  }, [refresh]);
  return { stats, loading, error, refresh };
}

/** What {@link useUpload} returns. */
export interface UploadState {
  /** Uploads a file; resolves with its metadata. */
  upload: (file: Blob, options?: Omit<UploadOptions, 'onProgress' | 'signal'>) => Promise<Upload>;
  /** Cancels the upload in progress. */
  abort: () => void;
  uploading: boolean;
  /** Bytes sent of the total, while uploading and after. */
  progress: Progress | null;
  result: Upload | null;
  error: Error | null;
}

/** One upload at a time, with progress and cancelling. */
export function useUpload(client: Shortlink): UploadState {
  const [uploading, setUploading] = useState(false);
  const [progress, setProgress] = useState<Progress | null>(null);
  const [result, setResult] = useState<Upload | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const controller = useRef<AbortController | null>(null);
  useEffect(() => () => controller.current?.abort(), []);
  const upload = useCallback(
    async (file: Blob, options: Omit<UploadOptions, 'onProgress' | 'signal'> = {}) => {
      controller.current?.abort();
      const abort = new AbortController();
      controller.current = abort;
      setUploading(true);
      setProgress({ loaded: 0, total: file.size });
      setResult(null);
      setError(null);
      try {
        const uploaded = await client.uploads.upload(file, {
          ...options,
          signal: abort.signal,
          onProgress: (p) => controller.current === abort && setProgress(p),
        });
        if (controller.current === abort) setResult(uploaded);
        return uploaded;
      } catch (e) {
        // A replaced upload's cancellation is not the new upload's error.
        if (controller.current === abort) setError(e as Error);
        throw e;
      } finally {
        if (controller.current === abort) {
          controller.current = null;
          setUploading(false);
        }
      }
    },
    [client],
  );
  return { upload, abort: () => controller.current?.abort(), uploading, progress, result, error };
}

function asApiError(error: unknown): ApiError {
  return error instanceof ApiError ? error : new ApiError(0, 'network', String(error));
}
