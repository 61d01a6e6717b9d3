/**
 * The typed API client: every operation of the OpenAPI document through
 * {@link Shortlink.request}, and named helpers for the common ones.
 */
import type { paths } from './schema.js';
import { EventStream, type EventStreamOptions } from './events.js';
/** An HTTP method of the API. */
export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';
/** The paths that have an operation for `M`. */
export type PathsWith<M extends Method> = {
    [P in keyof paths]: [NonNullable<paths[P][M & keyof paths[P]]>] extends [never] ? never : P;
}[keyof paths];
/** The operation at `P` for `M`. */
export type Operation<P extends keyof paths, M extends Method> = NonNullable<paths[P][M & keyof paths[P]]>;
type ParametersOf<O> = O extends {
    parameters: infer X;
} ? X : never;
/** The path parameters of an operation. */
export type PathParams<O> = ParametersOf<O> extends {
    path?: infer X;
} ? NonNullable<X> : never;
/** The query parameters of an operation. */
export type QueryParams<O> = ParametersOf<O> extends {
    query?: infer X;
} ? NonNullable<X> : never;
/** The JSON request body of an operation. */
export type JsonBody<O> = O extends {
    requestBody?: infer B;
} ? NonNullable<B> extends {
    content: {
        'application/json': infer T;
    };
} ? T : never : never;
type SuccessCode = 200 | 201 | 202 | 204;
/** What an operation answers when it succeeds (the JSON body; `undefined` for 204). */
export type Success<O> = O extends {
    responses: infer R;
} ? {
    [C in keyof R & SuccessCode]: R[C] extends {
        content: {
            'application/json': infer T;
        };
    } ? T : undefined;
}[keyof R & SuccessCode] : never;
/** Options of one request. */
export interface RequestOptions<O> {
    /** Values for the `{name}` parts of the path. */
    path?: PathParams<O>;
    /** Query parameters (absent and `undefined` values are left out). */
    query?: QueryParams<O>;
    /** A JSON body. */
    body?: JsonBody<O>;
    /** More headers. */
    headers?: Record<string, string>;
    /** Cancels the request. */
    signal?: AbortSignal;
}
/** Options of {@link Shortlink}. */
export interface ShortlinkOptions {
    /** The server's origin, e.g. `https://sho.rt` (default: the page's own origin). */
    baseUrl?: string;
    /** An API key (`sl_...`); without one the session cookie is used (same origin only). */
    apiKey?: string;
    /** A `fetch` to use (default: the global one). */
    fetch?: typeof fetch;
}
/** An error answer of the API (`{"error": {"code", "message"}}`), or no answer at all. */
export declare class ApiError extends Error {
    /** The HTTP status; 0 when the server could not be reached. */
    readonly status: number;
    /** The API's error code, e.g. `alias_taken`, `rate_limited`; `network` without an answer. */
    readonly code: string;
    /** Seconds to wait before retrying, from `Retry-After`. */
    readonly retryAfter: number | null;
    constructor(
    /** The HTTP status; 0 when the server could not be reached. */
    status: number, 
    /** The API's error code, e.g. `alias_taken`, `rate_limited`; `network` without an answer. */
    code: string, message: string, 
    /** Seconds to wait before retrying, from `Retry-After`. */
    retryAfter?: number | null);
}
/** Upload progress: bytes sent of the total. */
export interface Progress {
    loaded: number;
    total: number;
}
/** Options of {@link Shortlink.uploads}' `upload`. */
export interface UploadOptions {
    /** Called as the body is sent (in browsers; elsewhere once, at the end). */
    onProgress?: (progress: Progress) => void;
    /** Cancels the upload. */
    signal?: AbortSignal;
    /** Delete the upload at this time (RFC 3339). */
    expiresAt?: string;
}
type Get<P extends PathsWith<'get'>> = Operation<P, 'get'>;
type Post<P extends PathsWith<'post'>> = Operation<P, 'post'>;
type Patch<P extends PathsWith<'patch'>> = Operation<P, 'patch'>;
/** A link as the API returns it. */
export type Link = Success<Get<'/api/v1/links/{code}'>>;
/** What creating a link takes. */
export type LinkCreate = JsonBody<Post<'/api/v1/links'>>;
/** What changing a link takes. */
export type LinkUpdate = JsonBody<Patch<'/api/v1/links/{code}'>>;
/** A page of links. */
export type LinkPage = Success<Get<'/api/v1/links'>>;
/** The query of the links list. */
export type LinkQuery = QueryParams<Get<'/api/v1/links'>>;
/** A link's statistics. */
export type LinkStats = Success<Get<'/api/v1/links/{code}/stats'>>;
/** The query of a link's (or the account's) statistics. */
export type StatsQuery = QueryParams<Get<'/api/v1/links/{code}/stats'>>;
/** The whole account's statistics. */
export type AccountStats = Success<Get<'/api/v1/stats'>>;
/** An upload's metadata. */
export type Upload = Success<Get<'/api/v1/uploads/{id}'>>;
/** A page of uploads. */
export type UploadPage = Success<Get<'/api/v1/uploads'>>;
/**
 * A client of one shortlink server.
 *
 * ```ts
 * const sl = new Shortlink({ baseUrl: 'https://sho.rt', apiKey: process.env.SHORTLINK_KEY });
 * const link = await sl.links.create({ url: 'https://example.com/a/long/page' });
 * ```
 */
export declare class Shortlink {
    #private;
    constructor(options?: ShortlinkOptions);
    /** The server's origin (no trailing slash). */
    get baseUrl(): string;
    /** The headers every request carries: the key, or the marker a cookie session needs. */
    headers(): Record<string, string>;
    /** A URL for `path` with its `{name}` parts and query filled in. */
    url(path: string, params?: Record<string, unknown>, query?: Record<string, unknown>): string;
    /** Sends a request and returns the raw response (for CSV, images, streams); throws {@link ApiError} on an error answer. */
    raw(method: string, url: string, init?: RequestInit): Promise<Response>;
    /** Any operation of the API, typed by its path and method. */
    request<M extends Method, P extends PathsWith<M>>(method: M, path: P, options?: RequestOptions<Operation<P, M>>): Promise<Success<Operation<P, M>>>;
    /** Live events over WebSocket, Server-Sent Events or long polling (see {@link EventStream}). */
    events(options?: Omit<EventStreamOptions, 'baseUrl' | 'apiKey' | 'fetch'>): EventStream;
    /** Signing in and out with a name and password (a session cookie), and who is signed in. */
    readonly auth: {
        login: (name: string, password: string) => Promise<{
            id: number;
            name: string;
            role: import("./schema.js").components["schemas"]["Role"];
            scopes: import("./schema.js").components["schemas"]["Scope"][];
            via: string;
        }>;
        logout: () => Promise<undefined>;
        me: () => Promise<{
            id: number;
            name: string;
            role: import("./schema.js").components["schemas"]["Role"];
            scopes: import("./schema.js").components["schemas"]["Scope"][];
            via: string;
        }>;
    };
    /** The caller's links. */
    readonly links: {
        create: (link: LinkCreate) => Promise<{
            clicks: number;
            code: string;
            created_at: string;
            disabled: boolean;
            domain?: string | null;
            expires_at?: string | null;
            fallback_url?: string | null;
            max_clicks?: number | null;
            moderation?: string | null;
            password_protected: boolean;
            redirect: 301 | 302 | 307 | 308;
            short_url: string;
            state: string;
            tags: string[];
            targeting?: import("./schema.js").components["schemas"]["Targeting"] | null;
            updated_at: string;
            url: string;
        }>;
        list: (query?: LinkQuery) => Promise<{
            items: import("./schema.js").components["schemas"]["LinkView"][];
            next_cursor?: string | null;
        }>;
        /** Every link matching `query`, page after page. */
        all: (query?: {
            limit?: number;
            cursor?: string;
            tag?: string;
            q?: string;
        } | undefined) => AsyncGenerator<{
            clicks: number;
            code: string;
            created_at: string;
            disabled: boolean;
            domain?: string | null;
            expires_at?: string | null;
            fallback_url?: string | null;
            max_clicks?: number | null;
            moderation?: string | null;
            password_protected: boolean;
            redirect: 301 | 302 | 307 | 308;
            short_url: string;
            state: string;
            tags: string[];
            targeting?: import("./schema.js").components["schemas"]["Targeting"] | null;
            updated_at: string;
            url: string;
        }, any, any>;
        get: (code: string, domain?: string) => Promise<{
            clicks: number;
            code: string;
            created_at: string;
            disabled: boolean;
            domain?: string | null;
            expires_at?: string | null;
            fallback_url?: string | null;
            max_clicks?: number | null;
            moderation?: string | null;
            password_protected: boolean;
            redirect: 301 | 302 | 307 | 308;
            short_url: string;
            state: string;
            tags: string[];
            targeting?: import("./schema.js").components["schemas"]["Targeting"] | null;
            updated_at: string;
            url: string;
        }>;
        update: (code: string, change: LinkUpdate, domain?: string) => Promise<{
            clicks: number;
            code: string;
            created_at: string;
            disabled: boolean;
            domain?: string | null;
            expires_at?: string | null;
            fallback_url?: string | null;
            max_clicks?: number | null;
            moderation?: string | null;
            password_protected: boolean;
            redirect: 301 | 302 | 307 | 308;
            short_url: string;
            state: string;
            tags: string[];
            targeting?: import("./schema.js").components["schemas"]["Targeting"] | null;
            updated_at: string;
            url: string;
        }>;
        delete: (code: string, domain?: string) => Promise<undefined>;
        stats: (code: string, query?: StatsQuery) => Promise<{
            bots: number;
            browsers: import("./schema.js").components["schemas"]["KeyCount"][];
            code: string;
            countries: import("./schema.js").components["schemas"]["KeyCount"][];
            devices: import("./schema.js").components["schemas"]["KeyCount"][];
            from: string;
            humans: number;
            include_bots: boolean;
            interval: import("./schema.js").components["schemas"]["Interval"];
            os: import("./schema.js").components["schemas"]["KeyCount"][];
            referrers: import("./schema.js").components["schemas"]["KeyCount"][];
            series: import("./schema.js").components["schemas"]["SeriesPoint"][];
            to: string;
            total: number;
            tz: string;
            unique_visitors: number;
        }>;
        /** The short URL as a QR code image (SVG or PNG). */
        qr: (code: string, query?: QueryParams<Get<"/api/v1/links/{code}/qr">>) => Promise<Blob>;
        /** All links as CSV. */
        export: () => Promise<string>;
        /** Creates links from CSV (the export's columns). */
        import: (csv: string) => Promise<{
            created: number;
            errors: import("./schema.js").components["schemas"]["LineError"][];
            existing: number;
            failed: number;
            rows: number;
        }>;
    };
    /** Statistics across the caller's account. */
    readonly stats: {
        account: (query?: QueryParams<Get<"/api/v1/stats">>) => Promise<{
            bots: number;
            from: string;
            humans: number;
            include_bots: boolean;
            interval: import("./schema.js").components["schemas"]["Interval"];
            links: import("./schema.js").components["schemas"]["TopLink"][];
            series: import("./schema.js").components["schemas"]["SeriesPoint"][];
            to: string;
            total: number;
            tz: string;
        }>;
    };
    /** The caller's uploads. */
    readonly uploads: {
        list: (query?: QueryParams<Get<"/api/v1/uploads">>) => Promise<{
            items: import("./schema.js").components["schemas"]["UploadView"][];
            next_cursor?: string | null;
            quota_bytes: number;
            stored_bytes: number;
        }>;
        get: (id: string) => Promise<{
            content_type: string;
            created_at: string;
            downloads: number;
            expires_at?: string | null;
            filename: string;
            id: string;
            sha256: string;
            short_url?: string | null;
            size: number;
            state: string;
            thumbnails: import("./schema.js").components["schemas"]["ThumbnailsView"];
            url: string;
        }>;
        update: (id: string, change: JsonBody<Patch<"/api/v1/uploads/{id}">>) => Promise<{
            content_type: string;
            created_at: string;
            downloads: number;
            expires_at?: string | null;
            filename: string;
            id: string;
            sha256: string;
            short_url?: string | null;
            size: number;
            state: string;
            thumbnails: import("./schema.js").components["schemas"]["ThumbnailsView"];
            url: string;
        }>;
        delete: (id: string) => Promise<undefined>;
        /** Uploads a file in one request, reporting progress. */
        upload: (file: Blob, options?: UploadOptions) => Promise<Upload>;
    };
    /** API keys. */
    readonly keys: {
        list: (query?: QueryParams<Get<"/api/v1/keys">>) => Promise<{
            items: import("./schema.js").components["schemas"]["KeyView"][];
        }>;
        create: (key: JsonBody<Post<"/api/v1/keys">>) => Promise<{
            created_at: string;
            expires_at?: string | null;
            id: string;
            label: string;
            last_used_at?: string | null;
            prefix: string;
            scopes: import("./schema.js").components["schemas"]["Scope"][];
            user: string;
            user_id: number;
        } & {
            key: string;
        }>;
        revoke: (id: string) => Promise<undefined>;
        rotate: (id: string, grace_seconds?: number) => Promise<{
            created_at: string;
            expires_at?: string | null;
            id: string;
            label: string;
            last_used_at?: string | null;
            prefix: string;
            scopes: import("./schema.js").components["schemas"]["Scope"][];
            user: string;
            user_id: number;
        } & {
            key: string;
        }>;
    };
    /** Webhooks. */
    readonly webhooks: {
        list: () => Promise<{
            items: import("./schema.js").components["schemas"]["WebhookView"][];
        }>;
        create: (hook: JsonBody<Post<"/api/v1/webhooks">>) => Promise<{
            created_at: string;
            disabled_reason?: string | null;
            enabled: boolean;
            events: import("./schema.js").components["schemas"]["EventKind"][];
            id: string;
            previous_secret_until?: string | null;
            updated_at: string;
            url: string;
        } & {
            secret: string;
        }>;
        delete: (id: string) => Promise<undefined>;
        test: (id: string) => Promise<{
            at: string;
            attempt: number;
            error?: string | null;
            event_id: number;
            id: string;
            latency_ms: number;
            manual: boolean;
            message_id: string;
            next_try?: string | null;
            outcome: string;
            status?: number | null;
            type: string;
        }>;
        deliveries: (id: string) => Promise<{
            items: import("./schema.js").components["schemas"]["DeliveryView"][];
            next_cursor?: string | null;
        }>;
    };
    /** Custom domains. */
    readonly domains: {
        list: () => Promise<{
            default_domain: import("./schema.js").components["schemas"]["DefaultDomainView"];
            items: import("./schema.js").components["schemas"]["DomainView"][];
        }>;
    };
}
export {};
