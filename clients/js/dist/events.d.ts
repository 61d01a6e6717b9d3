/**
 * Live events: one stream that connects over a WebSocket, falls back to Server-Sent
 * Events and then to long polling, and resumes after the last event it delivered across
 * reconnects and transport changes, so no event is missed or delivered twice.
 */
/** An event as the server sends it (`{id, type, at, data}`). */
export interface ShortlinkEvent {
    /** Decimal event id, increasing per installation; resume after it. */
    id: number;
    /** `link.created`, `link.updated`, `link.deleted`, `link.clicked`, `upload.completed`, ... */
    type: string;
    /** RFC 3339 time the event happened. */
    at: string;
    /** The event's payload (the link, the upload, `{code, count, bots, from, to}`, ...). */
    data: unknown;
}
/** How events arrive. */
export type Transport = 'websocket' | 'sse' | 'polling';
/** The stream's state: connecting (or reconnecting), open on a transport, or closed. */
export type StreamStatus = 'connecting' | 'open' | 'closed';
/** Options of {@link EventStream}. */
export interface EventStreamOptions {
    /** The server's origin, e.g. `https://sho.rt` (default: the page's own origin). */
    baseUrl?: string;
    /** An API key; without one the session cookie is used (same origin only). */
    apiKey?: string;
    /** Transports in the order they are tried (default: websocket, sse, polling). */
    transports?: Transport[];
    /** Deliver only events after this id (e.g. one kept from an earlier page view). */
    lastEventId?: number | string | null;
    /** Deliver only these event types (all when absent). */
    types?: string[];
    /** How long a transport may take to open before the next is tried (ms, default 5000). */
    openTimeoutMs?: number;
    /** First reconnect delay (ms, default 500); doubles up to {@link maxDelayMs}. */
    retryDelayMs?: number;
    /** Longest reconnect delay (ms, default 15000). */
    maxDelayMs?: number;
    /** Seconds a long poll waits for an event (default 25; the server allows up to 30). */
    pollWaitSeconds?: number;
    /**
     * An SSE stream silent this long (ms, default 45000: three of the server's 15 s
     * heartbeats) is taken for dead (a laptop that slept, a dropped NAT mapping) and
     * reconnected; a long poll gets this long on top of its wait.
     */
    idleTimeoutMs?: number;
    /** A `fetch` to use (default: the global one). */
    fetch?: typeof fetch;
    /** A `WebSocket` constructor to use (default: the global one, when there is one). */
    WebSocket?: typeof WebSocket;
}
/** Why a stream stopped for good (a refused key: 401, 403, close 4401) or why a transport
 * failed. */
export declare class EventStreamError extends Error {
    /** The transport that failed. */
    readonly transport: Transport;
    /** True when retrying cannot help (the key or session was refused). */
    readonly fatal: boolean;
    constructor(message: string, 
    /** The transport that failed. */
    transport: Transport, 
    /** True when retrying cannot help (the key or session was refused). */
    fatal: boolean);
}
interface Listeners {
    event: (event: ShortlinkEvent) => void;
    status: (status: StreamStatus, transport: Transport | null) => void;
    error: (error: EventStreamError) => void;
}
/**
 * A live stream of the caller's events. Create it, listen with {@link EventStream.on},
 * and {@link EventStream.close} it when done.
 *
 * ```ts
 * const stream = new EventStream({ baseUrl: 'https://sho.rt', apiKey });
 * stream.on('event', (e) => console.log(e.id, e.type));
 * ```
 */
export declare class EventStream {
    #private;
    constructor(options?: EventStreamOptions);
    /** The id of the last event delivered (resume after it), or null. */
    get lastEventId(): string | null;
    /** The transport in use (or being tried). */
    get transport(): Transport | null;
    /** Connecting, open or closed. */
    get status(): StreamStatus;
    /** Listens for events, status changes or errors; returns a function that stops it. */
    on<K extends keyof Listeners>(kind: K, listener: Listeners[K]): () => void;
    /** Ends the stream for good. */
    close(): void;
}
export {};
