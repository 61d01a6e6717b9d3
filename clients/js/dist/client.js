import { EventStream } from './events.js';
/** An error answer of the API (`{"error": {"code", "message"}}`), or no answer at all. */
export class ApiError extends Error {
    status;
    code;
    retryAfter;
    constructor(
    /** The HTTP status; 0 when the server could not be reached. */
    status, 
    /** The API's error code, e.g. `alias_taken`, `rate_limited`; `network` without an answer. */
    code, message, 
    /** Seconds to wait before retrying, from `Retry-After`. */
    retryAfter = null) {
        super(message);
        this.status = status;
        this.code = code;
        this.retryAfter = retryAfter;
        this.name = 'ApiError';
    }
}
/**
 * A client of one shortlink server.
 *
 * ```ts
 * const sl = new Shortlink({ baseUrl: 'https://sho.rt', apiKey: process.env.SHORTLINK_KEY });
 * const link = await sl.links.create({ url: 'https://example.com/a/long/page' });
 * ```
 */
export class Shortlink {
    #options;
    constructor(options = {}) {
        this.#options = { ...options };
    }
    /** The server's origin (no trailing slash). */
    get baseUrl() {
        const base = this.#options.baseUrl ?? (typeof location !== 'undefined' ? location.origin : '');
        return base.replace(/\/+$/, '');
    }
    /** The headers every request carries: the key, or the marker a cookie session needs. */
    headers() {
        // A cookie session's state-changing requests must show they come from a page of this
        // site; a custom header is what no other site can send.
        return this.#options.apiKey
            ? { Authorization: `Bearer ${this.#options.apiKey}` }
            : { 'X-Requested-With': 'shortlink' };
    }
    /** A URL for `path` with its `{name}` parts and query filled in. */
    url(path, params = {}, query = {}) {
        const filled = path.replace(/\{(\w+)\}/g, (_, name) => {
            const value = params[name];
            if (value === undefined || value === null)
                throw new Error(`missing path parameter ${name}`);
            const text = String(value);
            // `.` and `..` would be resolved away as path steps, reaching another operation.
            if (text === '' || text === '.' || text === '..')
                throw new Error(`path parameter ${name} cannot be "${text}"`);
            return encodeURIComponent(text);
        });
        const search = new URLSearchParams();
        for (const [name, value] of Object.entries(query)) {
            if (value === undefined || value === null)
                continue;
            search.set(name, String(value));
        }
        const text = search.toString();
        return `${this.baseUrl}${filled}${text ? `?${text}` : ''}`;
    }
    /** Sends a request and returns the raw response (for CSV, images, streams); throws {@link ApiError} on an error answer. */
    async raw(method, url, init = {}) {
        const headers = { ...this.headers(), ...init.headers };
        let response;
        try {
            response = await (this.#options.fetch ?? globalThis.fetch.bind(globalThis))(url, {
                credentials: 'same-origin',
                ...init,
                method: method.toUpperCase(),
                headers,
            });
        }
        catch (error) {
            if (error.name === 'AbortError')
                throw error;
            throw new ApiError(0, 'network', 'The server cannot be reached.');
        }
        if (!response.ok)
            throw await toError(response);
        return response;
    }
    /** Any operation of the API, typed by its path and method. */
    async request(method, path, options = {}) {
        const url = this.url(path, (options.path ?? {}), (options.query ?? {}));
        const headers = { Accept: 'application/json', ...options.headers };
        let body;
        if (options.body !== undefined) {
            body = JSON.stringify(options.body);
            headers['Content-Type'] = 'application/json';
        }
        const response = await this.raw(method, url, { headers, body, signal: options.signal });
        if (response.status === 204)
            return undefined;
        const text = await response.text();
        return (text ? JSON.parse(text) : undefined);
    }
    /** Live events over WebSocket, Server-Sent Events or long polling (see {@link EventStream}). */
    events(options = {}) {
        return new EventStream({
            ...options,
            baseUrl: this.baseUrl,
            apiKey: this.#options.apiKey,
            fetch: this.#options.fetch,
        });
    }
    /** Signing in and out with a name and password (a session cookie), and who is signed in. */
    auth = {
        login: (name, password) => this.request('post', '/api/v1/auth/login', { body: { name, password } }),
        logout: () => this.request('post', '/api/v1/auth/logout'),
        me: () => this.request('get', '/api/v1/auth/me'),
    };
    /** The caller's links. */
    links = {
        create: (link) => this.request('post', '/api/v1/links', { body: link }),
        list: (query = {}) => this.request('get', '/api/v1/links', { query }),
        /** Every link matching `query`, page after page. */
        all: async function* (query = {}) {
            let cursor = query.cursor;
            do {
                const page = await this.links.list({ ...query, cursor: cursor ?? undefined });
                yield* page.items;
                cursor = page.next_cursor;
            } while (cursor);
        }.bind(this),
        get: (code, domain) => this.request('get', '/api/v1/links/{code}', { path: { code }, query: { domain } }),
        update: (code, change, domain) => this.request('patch', '/api/v1/links/{code}', { path: { code }, query: { domain }, body: change }),
        delete: (code, domain) => this.request('delete', '/api/v1/links/{code}', { path: { code }, query: { domain } }),
        stats: (code, query = {}) => this.request('get', '/api/v1/links/{code}/stats', { path: { code }, query }),
        /** The short URL as a QR code image (SVG or PNG). */
        qr: async (code, query = {}) => (await this.raw('get', this.url('/api/v1/links/{code}/qr', { code }, query))).blob(),
        /** All links as CSV. */
        export: async () => (await this.raw('get', this.url('/api/v1/links/export'))).text(),
        /** Creates links from CSV (the export's columns). */
        import: async (csv) => (await (await this.raw('post', this.url('/api/v1/links/import'), {
            body: csv,
            headers: { 'Content-Type': 'text/csv', Accept: 'application/json' },
        })).json()),
    };
    /** Statistics across the caller's account. */
    stats = {
        account: (query = {}) => this.request('get', '/api/v1/stats', { query }),
    };
    /** The caller's uploads. */
    uploads = {
        list: (query = {}) => this.request('get', '/api/v1/uploads', { query }),
        get: (id) => this.request('get', '/api/v1/uploads/{id}', { path: { id } }),
        update: (id, change) => this.request('patch', '/api/v1/uploads/{id}', { path: { id }, body: change }),
        delete: (id) => this.request('delete', '/api/v1/uploads/{id}', { path: { id } }),
        /** Uploads a file in one request, reporting progress. */
        upload: (file, options = {}) => this.#upload(file, options),
    };
    /** API keys. */
    keys = {
        list: (query = {}) => this.request('get', '/api/v1/keys', { query }),
        create: (key) => this.request('post', '/api/v1/keys', { body: key }),
        revoke: (id) => this.request('delete', '/api/v1/keys/{id}', { path: { id } }),
        rotate: (id, grace_seconds) => this.request('post', '/api/v1/keys/{id}/rotate', {
            path: { id },
            body: { grace_seconds },
        }),
    };
    /** Webhooks. */
    webhooks = {
        list: () => this.request('get', '/api/v1/webhooks'),
        create: (hook) => this.request('post', '/api/v1/webhooks', { body: hook }),
        delete: (id) => this.request('delete', '/api/v1/webhooks/{id}', { path: { id } }),
        test: (id) => this.request('post', '/api/v1/webhooks/{id}/test', { path: { id } }),
        deliveries: (id) => this.request('get', '/api/v1/webhooks/{id}/deliveries', { path: { id } }),
    };
    /** Custom domains. */
    domains = {
        list: () => this.request('get', '/api/v1/domains'),
    };
    #upload(file, options) {
        const url = this.url('/api/v1/uploads', {}, { expires_at: options.expiresAt });
        const form = new FormData();
        form.append('file', file, file.name ?? 'file');
        const total = file.size;
        if (typeof XMLHttpRequest === 'undefined') {
            return this.raw('post', url, { body: form, signal: options.signal }).then(async (response) => {
                options.onProgress?.({ loaded: total, total });
                return (await response.json());
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
            for (const [name, value] of Object.entries(this.headers()))
                xhr.setRequestHeader(name, value);
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
async function toError(response) {
    let code = 'http_' + response.status;
    let message = `The server answered ${response.status}.`;
    try {
        const body = (await response.json());
        if (body.error?.code)
            code = body.error.code;
        if (body.error?.message)
            message = body.error.message;
    }
    catch {
        // Not the API's error shape: keep the status.
    }
    const retry = Number.parseInt(response.headers.get('Retry-After') ?? '', 10);
    return new ApiError(response.status, code, message, Number.isFinite(retry) ? retry : null);
}
