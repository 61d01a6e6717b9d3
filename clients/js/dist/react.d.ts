import { ApiError, type Link, type LinkCreate, type LinkQuery, type LinkStats, type LinkUpdate, type Progress, type Shortlink, type StatsQuery, type Upload, type UploadOptions } from './client.js';
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
export declare function useEvents(client: Shortlink, options?: UseEventsOptions): EventsState;
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
export declare function useLinks(client: Shortlink, query?: LinkQuery): LinksState;
/** What {@link useLinkStats} returns. */
export interface LinkStatsState {
    stats: LinkStats | null;
    loading: boolean;
    error: ApiError | null;
    refresh: () => Promise<void>;
}
/** A link's statistics for `query` (loaded again when the code or query changes). */
export declare function useLinkStats(client: Shortlink, code: string | null, query?: StatsQuery): LinkStatsState;
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
export declare function useUpload(client: Shortlink): UploadState;
