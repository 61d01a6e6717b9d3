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

type ParametersOf<O> = O extends { parameters: infer X } ? X : never;
/** The path parameters of an operation. */
export type PathParams<O> = ParametersOf<O> extends { path?: infer X } ? NonNullable<X> : never;
/** The query parameters of an operation. */
export type QueryParams<O> = ParametersOf<O> extends { query?: infer X } ? NonNullable<X> : never;
/** The JSON request body of an operation. */
export type JsonBody<O> = O extends { requestBody?: infer B }
  ? NonNullable<B> extends { content: { 'application/json': infer T } }
    ? T
    : never
  : never;
type SuccessCode = 200 | 201 | 202 | 204;
/** What an operation answers when it succeeds (the JSON body; `undefined` for 204). */
export type Success<O> = O extends { responses: infer R }
  ? {
      [C in keyof R & SuccessCode]: R[C] extends { content: { 'application/json': infer T } } ? T : undefined;
    }[keyof R & SuccessCode]
  : never;

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
export class ApiError extends Error {
  constructor(
    /** The HTTP status; 0 when the server could not be reached. */
    readonly status: number,
    /** The API's error code, e.g. `alias_taken`, `rate_limited`; `network` without an answer. */
    readonly code: string,
    message: string,
    /** Seconds to wait before retrying, from `Retry-After`. */
    readonly retryAfter: number | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
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
export class Shortlink {
  readonly #options: ShortlinkOptions;

  constructor(options: ShortlinkOptions = {}) {
    this.#options = { ...options };
  }

  /** The server's origin (no trailing slash). */
  get baseUrl(): string {
    const base = this.#options.baseUrl ?? (typeof location !== 'undefined' ? location.origin : '');
    return base.replace(/\/+$/, '');
  }

  /** The headers every request carries: the key, or the marker a cookie session needs. */
  headers(): Record<string, string> {
    // A cookie session's state-changing requests must show they come from a page of this
    // site; a custom header is what no other site can send.
    return this.#options.apiKey
      ? { Authorization: `Bearer ${this.#options.apiKey}` }
      : { 'X-Requested-With': 'shortlink' };
  }

  /** A URL for `path` with its `{name}` parts and query filled in. */
  url(path: string, params: Record<string, unknown> = {}, query: Record<string, unknown> = {}): string {
    const filled = path.replace(/\{(\w+)\}/g, (_, name: string) => {
      const value = params[name];
      if (value === undefined || value === null) throw new Error(`missing path parameter ${name}`);
      const text = String(value);
      // `.` and `..` would be resolved away as path steps, reaching another operation.
      if (text === '' || text === '.' || text === '..') throw new Error(`path parameter ${name} cannot be "${text}"`);
      return encodeURIComponent(text);
    });
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value === undefined || value === null) continue;
      search.set(name, String(value));
    }
    const text = search.toString();
    return `${this.baseUrl}${filled}${text ? `?${text}` : ''}`;
  }

  /** Sends a request and returns the raw response (for CSV, images, streams); throws {@link ApiError} on an error answer. */
  async raw(method: string, url: string, init: RequestInit = {}): Promise<Response> {
    const headers = { ...this.headers(), ...(init.headers as Record<string, string> | undefined) };
    let response: Response;
    try {
      response = await (this.#options.fetch ?? globalThis.fetch.bind(globalThis))(url, {
        credentials: 'same-origin',
        ...init,
        method: method.toUpperCase(),
        headers,
      });
    } catch (error) {
      if ((error as { name?: string }).name === 'AbortError') throw error;
      throw new ApiError(0, 'network', 'The server cannot be reached.');
    }
    if (!response.ok) throw await toError(response);
    return response;
  }

  /** Any operation of the API, typed by its path and method. */
  async request<M extends Method, P extends PathsWith<M>>(
    method: M,
    path: P,
    options: RequestOptions<Operation<P, M>> = {},
  ): Promise<Success<Operation<P, M>>> {
    const url = this.url(
      path as string,
      (options.path ?? {}) as Record<string, unknown>,
      (options.query ?? {}) as Record<string, unknown>,
    );
    const headers: Record<string, string> = { Accept: 'application/json', ...options.headers };
    let body: string | undefined;
    if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['Content-Type'] = 'application/json';
    }
    const response = await this.raw(method, url, { headers, body, signal: options.signal });
    if (response.status === 204) return undefined as Success<Operation<P, M>>;
    const text = await response.text();
    return (text ? JSON.parse(text) : undefined) as Success<Operation<P, M>>;
  }

  /** Live events over WebSocket, Server-Sent Events or long polling (see {@link EventStream}). */
  events(options: Omit<EventStreamOptions, 'baseUrl' | 'apiKey' | 'fetch'> = {}): EventStream {
    return new EventStream({
      ...options,
      baseUrl: this.baseUrl,
      apiKey: this.#options.apiKey,
      fetch: this.#options.fetch,
    });
  }

  /** Signing in and out with a name and password (a session cookie), and who is signed in. */
  readonly auth = {
    login: (name: string, password: string) =>
      this.request('post', '/api/v1/auth/login', { body: { name, password } as JsonBody<Post<'/api/v1/auth/login'>> }),
    logout: () => this.request('post', '/api/v1/auth/logout'),
    me: () => this.request('get', '/api/v1/auth/me'),
  };

  /** The caller's links. */
  readonly links = {
    create: (link: LinkCreate) => this.request('post', '/api/v1/links', { body: link }),
    list: (query: LinkQuery = {}) => this.request('get', '/api/v1/links', { query }),
    /** Every link matching `query`, page after page. */
    all: async function* (this: Shortlink, query: LinkQuery = {}): AsyncGenerator<NonNullable<LinkPage>['items'][number]> {
      let cursor: string | null | undefined = query.cursor;
      do {
        const page: LinkPage = await this.links.list({ ...query, cursor: cursor ?? undefined });
        yield* page.items;
        cursor = page.next_cursor;
      } while (cursor);
    }.bind(this),
    get: (code: string, domain?: string) =>
      this.request('get', '/api/v1/links/{code}', { path: { code }, query: { domain } }),
    update: (code: string, change: LinkUpdate, domain?: string) =>
      this.request('patch', '/api/v1/links/{code}', { path: { code }, query: { domain }, body: change }),
    delete: (code: string, domain?: string) =>
      this.request('delete', '/api/v1/links/{code}', { path: { code }, query: { domain } }),
    stats: (code: string, query: StatsQuery = {}) =>
      this.request('get', '/api/v1/links/{code}/stats', { path: { code }, query }),
    /** The short URL as a QR code image (SVG or PNG). */
    qr: async (code: string, query: QueryParams<Get<'/api/v1/links/{code}/qr'>> = {}): Promise<Blob> =>
      (await this.raw('get', this.url('/api/v1/links/{code}/qr', { code }, query))).blob(),
    /** All links as CSV. */
    export: async (): Promise<string> => (await this.raw('get', this.url('/api/v1/links/export'))).text(),
    /** Creates links from CSV (the export's columns). */
    import: async (csv: string) =>
      (await (
        await this.raw('post', this.url('/api/v1/links/import'), {
          body: csv,
          headers: { 'Content-Type': 'text/csv', Accept: 'application/json' },
        })
      ).json()) as Success<Post<'/api/v1/links/import'>>,
  };

  /** Statistics across the caller's account. */
  readonly stats = {
    account: (query: QueryParams<Get<'/api/v1/stats'>> = {}) => this.request('get', '/api/v1/stats', { query }),
  };

  /** The caller's uploads. */
  readonly uploads = {
    list: (query: QueryParams<Get<'/api/v1/uploads'>> = {}) => this.request('get', '/api/v1/uploads', { query }),
    get: (id: string) => this.request('get', '/api/v1/uploads/{id}', { path: { id } }),
    update: (id: string, change: JsonBody<Patch<'/api/v1/uploads/{id}'>>) =>
      this.request('patch', '/api/v1/uploads/{id}', { path: { id }, body: change }),
    delete: (id: string) => this.request('delete', '/api/v1/uploads/{id}', { path: { id } }),
    /** Uploads a file in one request, reporting progress. */
    upload: (file: Blob, options: UploadOptions = {}): Promise<Upload> => this.#upload(file, options),
  };

  /** API keys. */
  readonly keys = {
    list: (query: QueryParams<Get<'/api/v1/keys'>> = {}) => this.request('get', '/api/v1/keys', { query }),
    create: (key: JsonBody<Post<'/api/v1/keys'>>) => this.request('post', '/api/v1/keys', { body: key }),
    revoke: (id: string) => this.request('delete', '/api/v1/keys/{id}', { path: { id } }),
    rotate: (id: string, grace_seconds?: number) =>
      this.request('post', '/api/v1/keys/{id}/rotate', {
        path: { id },
        body: { grace_seconds } as JsonBody<Post<'/api/v1/keys/{id}/rotate'>>,
      }),
  };

  /** Webhooks. */
  readonly webhooks = {
    list: () => this.request('get', '/api/v1/webhooks'),
    create: (hook: JsonBody<Post<'/api/v1/webhooks'>>) => this.request('post', '/api/v1/webhooks', { body: hook }),
    delete: (id: string) => this.request('delete', '/api/v1/webhooks/{id}', { path: { id } }),
    test: (id: string) => this.request('post', '/api/v1/webhooks/{id}/test', { path: { id } }),
    deliveries: (id: string) => this.request('get', '/api/v1/webhooks/{id}/deliveries', { path: { id } }),
  };

  /** Custom domains. */
  readonly domains = {
    list: () => this.request('get', '/api/v1/domains'),
  };

  #upload(file: Blob, options: UploadOptions): Promise<Upload> {
    const url = this.url('/api/v1/uploads', {}, { expires_at: options.expiresAt });
    const form = new FormData();
    form.append('file', file, (file as File).name ?? 'file');
    const total = file.size;
    if (typeof XMLHttpRequest === 'undefined') {
      return this.raw('post', url, { body: form, signal: options.signal }).then(async (response) => {
        options.onProgress?.({ loaded: total, total });
        return (await response.json()) as Upload;
      });
    }
    // fetch cannot report upload progress; XMLHttpRequest can.
    return new Promise((resolve, reject) => {
      if (options.signal?.aborted) {
        reject(new DOMException('The upload was cancelled.', 'AbortError'));
        return;
      }
      const xhr = new XMLHttpRequest();
      xhr.open('POST', url);
      xhr.withCredentials = false;
      for (const [name, value] of Object.entries(this.headers())) xhr.setRequestHeader(name, value);
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.upload.onprogress = (e) => options.onProgress?.({ loaded: e.loaded, total: e.lengthComputable ? e.total : total });
      const abort = () => xhr.abort();
      xhr.onloadend = () => options.signal?.removeEventListener('abort', abort);
      xhr.onload = () => {
        if (xhr.status === 204 || xhr.status === 205) {
          reject(new ApiError(xhr.status, `http_${xhr.status}`, `The server answered ${xhr.status}.`));
          return;
        }
        const response = new Response(xhr.responseText, {
          status: xhr.status,
          headers: { 'Content-Type': 'application/json', 'Retry-After': xhr.getResponseHeader('Retry-After') ?? '' },
        });
        if (!response.ok) {
          toError(response).then(reject, reject);
          return;
        }
        options.onProgress?.({ loaded: total, total });
        response.json().then(resolve, reject);
      };
      xhr.onerror = () => reject(new ApiError(0, 'network', 'The server cannot be reached.'));
      xhr.onabort = () => reject(new DOMException('The upload was cancelled.', 'AbortError'));
      options.signal?.addEventListener('abort', abort, { once: true });
      xhr.send(form);
    });
  }
}

async function toError(response: Response): Promise<ApiError> {
  let code = 'http_' + response.status;
  let message = `The server answered ${response.status}.`;
  try {
    const body = (await response.json()) as { error?: { code?: string; message?: string } };
    if (body.error?.code) code = body.error.code;
    if (body.error?.message) message = body.error.message;
  } catch {
    // Not the API's error shape: keep the status.
  }
  const retry = Number.parseInt(response.headers.get('Retry-After') ?? '', 10);
  return new ApiError(response.status, code, message, Number.isFinite(retry) ? retry : null);
}
