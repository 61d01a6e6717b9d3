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
export class EventStreamError extends Error {
  constructor(
    message: string,
    /** The transport that failed. */
    readonly transport: Transport,
    /** True when retrying cannot help (the key or session was refused). */
    readonly fatal: boolean,
  ) {
    super(message);
    this.name = 'EventStreamError';
  }
}

interface Listeners {
  event: (event: ShortlinkEvent) => void;
  status: (status: StreamStatus, transport: Transport | null) => void;
  error: (error: EventStreamError) => void;
}

/** A transport's connection: `close` ends it without reconnecting. */
interface Connection {
  close(): void;
}

/** What a transport reports to the stream. */
interface Sink {
  opened(): void;
  event(event: ShortlinkEvent): void;
  /** The connection ended; `fatal` stops the stream. */
  ended(error: EventStreamError | null): void;
}

const WS_CLOSE_UNAUTHORIZED = 4401;
const WS_CLOSE_BAD_REQUEST = 4400;

/**
 * A live stream of the caller's events. Create it, listen with {@link EventStream.on},
 * and {@link EventStream.close} it when done.
 *
 * ```ts
 * const stream = new EventStream({ baseUrl: 'https://sho.rt', apiKey });
 * stream.on('event', (e) => console.log(e.id, e.type));
 * ```
 */
export class EventStream {
  #options: Required<
    Pick<EventStreamOptions, 'openTimeoutMs' | 'retryDelayMs' | 'maxDelayMs' | 'pollWaitSeconds' | 'idleTimeoutMs'>
  > &
    EventStreamOptions;
  #transports: Transport[];
  #index = 0;
  #last: bigint | null;
  #status: StreamStatus = 'connecting';
  #transport: Transport | null = null;
  #connection: Connection | null = null;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #failures = 0;
  /** How far a polling start has read towards the newest event. */
  #head: number | null = null;
  #closed = false;
  #listeners: { [K in keyof Listeners]: Set<Listeners[K]> } = {
    event: new Set(),
    status: new Set(),
    error: new Set(),
  };

  constructor(options: EventStreamOptions = {}) {
    this.#options = {
      openTimeoutMs: 5000,
      retryDelayMs: 500,
      maxDelayMs: 15000,
      pollWaitSeconds: 25,
      idleTimeoutMs: 45000,
      ...options,
    };
    const wanted = options.transports ?? ['websocket', 'sse', 'polling'];
    this.#transports = wanted.filter((t) => t !== 'websocket' || this.#webSocket() !== undefined);
    if (this.#transports.length === 0) throw new Error('no usable transport');
    this.#last = parseId(options.lastEventId);
    // Back online: a reconnect waiting out its backoff goes now.
    if (typeof addEventListener === 'function') addEventListener('online', this.#online);
    // Listeners attached right after construction see the first status.
    queueMicrotask(() => this.#connect());
  }

  #online = (): void => {
    if (this.#timer === null || this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#connect();
  };

  /** The id of the last event delivered (resume after it), or null. */
  get lastEventId(): string | null {
    return this.#last === null ? null : this.#last.toString();
  }

  /** The transport in use (or being tried). */
  get transport(): Transport | null {
    return this.#transport;
  }

  /** Connecting, open or closed. */
  get status(): StreamStatus {
    return this.#status;
  }

  /** Listens for events, status changes or errors; returns a function that stops it. */
  on<K extends keyof Listeners>(kind: K, listener: Listeners[K]): () => void {
    this.#listeners[kind].add(listener);
    return () => this.#listeners[kind].delete(listener);
  }

  /** Ends the stream for good. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (typeof removeEventListener === 'function') removeEventListener('online', this.#online);
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#connection?.close();
    this.#connection = null;
    this.#setStatus('closed');
  }

  #emit<K extends keyof Listeners>(kind: K, ...args: Parameters<Listeners[K]>): void {
    for (const listener of [...this.#listeners[kind]]) {
      try {
        (listener as (...a: Parameters<Listeners[K]>) => void)(...args);
      } catch (error) {
        // A listener's failure must not stop the stream.
        setTimeout(() => {
          throw error;
        });
      }
    }
  }

  #setStatus(status: StreamStatus): void {
    if (this.#status === status && status !== 'open') return;
    this.#status = status;
    this.#emit('status', status, this.#transport);
  }

  #connect(): void {
    if (this.#closed) return;
    const transport = this.#transports[this.#index % this.#transports.length] as Transport;
    this.#transport = transport;
    this.#setStatus('connecting');
    let opened = false;
    let openedAt = 0;
    let delivered = false;
    let done = false;
    const openTimer = setTimeout(() => {
      if (!opened) sink.ended(new EventStreamError(`${transport} did not open in time`, transport, false));
    }, this.#options.openTimeoutMs);
    const sink: Sink = {
      opened: () => {
        if (done || opened) return;
        opened = true;
        openedAt = Date.now();
        clearTimeout(openTimer);
        this.#setStatus('open');
      },
      event: (event) => {
        if (done) return;
        if (!delivered) {
          delivered = true;
          this.#failures = 0;
        }
        const id = BigInt(event.id);
        // A replay may repeat what another transport delivered: deliver each id once.
        if (this.#last !== null && id <= this.#last) return;
        this.#last = id;
        const types = this.#options.types;
        if (!types || types.includes(event.type)) this.#emit('event', event);
      },
      ended: (error) => {
        if (done) return;
        done = true;
        clearTimeout(openTimer);
        connection.close();
        if (this.#connection === connection) this.#connection = null;
        if (this.#closed) return;
        if (error) this.#emit('error', error);
        if (error?.fatal) {
          this.close();
          return;
        }
        // One that opened but ended soon without delivering anything (a proxy that takes
        // the upgrade and drops it) counts as one that never opened.
        if (opened && !delivered && Date.now() - openedAt < this.#options.openTimeoutMs) opened = false;
        else if (opened && Date.now() - openedAt >= this.#options.openTimeoutMs) this.#failures = 0;
        // A transport that never opened gives way to the next; one that did is retried.
        if (!opened) this.#index += 1;
        const tried = opened ? 0 : this.#index % this.#transports.length;
        if (!opened && tried !== 0) {
          this.#connect();
          return;
        }
        this.#failures += 1;
        const delay = Math.min(
          this.#options.maxDelayMs,
          this.#options.retryDelayMs * 2 ** Math.min(this.#failures - 1, 10),
        );
        this.#setStatus('connecting');
        this.#timer = setTimeout(() => {
          this.#timer = null;
          this.#connect();
        }, delay * (0.75 + Math.random() * 0.5));
      },
    };
    const connection =
      transport === 'websocket' ? this.#openWebSocket(sink) : transport === 'sse' ? this.#openSse(sink) : this.#openPolling(sink);
    this.#connection = connection;
  }

  #base(): string {
    const base = this.#options.baseUrl ?? (typeof location !== 'undefined' ? location.origin : '');
    return base.replace(/\/+$/, '');
  }

  #headers(): Record<string, string> {
    const headers: Record<string, string> = {};
    if (this.#options.apiKey) headers.Authorization = `Bearer ${this.#options.apiKey}`;
    return headers;
  }

  #fetch(): typeof fetch {
    return this.#options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  #webSocket(): typeof WebSocket | undefined {
    return this.#options.WebSocket ?? (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
  }

  #openWebSocket(sink: Sink): Connection {
    const Socket = this.#webSocket() as typeof WebSocket;
    const url = new URL(`${this.#base()}/api/v1/ws`, typeof location !== 'undefined' ? location.href : undefined);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.#last !== null) url.searchParams.set('last_event_id', this.#last.toString());
    // The key travels as a subprotocol, never in the URL; the server selects shortlink.v1.
    const protocols = ['shortlink.v1'];
    if (this.#options.apiKey) protocols.push(`bearer.${this.#options.apiKey}`);
    let socket: WebSocket;
    try {
      socket = new Socket(url.toString(), protocols);
    } catch (error) {
      queueMicrotask(() => sink.ended(new EventStreamError(String(error), 'websocket', false)));
      return { close() {} };
    }
    socket.onopen = () => sink.opened();
    socket.onmessage = (message) => {
      if (typeof message.data !== 'string') return;
      const event = parseEvent(message.data);
      if (event) sink.event(event);
    };
    socket.onclose = (close) => {
      if (close.code === WS_CLOSE_BAD_REQUEST) this.#last = null;
      const fatal = close.code === WS_CLOSE_UNAUTHORIZED;
      sink.ended(new EventStreamError(close.reason || `the WebSocket closed (${close.code})`, 'websocket', fatal));
    };
    return {
      close() {
        socket.onopen = socket.onmessage = socket.onclose = null;
        socket.onerror = null;
        if (socket.readyState <= 1) socket.close(1000);
      },
    };
  }

  #openSse(sink: Sink): Connection {
    const abort = new AbortController();
    const headers: Record<string, string> = { ...this.#headers(), Accept: 'text/event-stream' };
    if (this.#last !== null) headers['Last-Event-ID'] = this.#last.toString();
    (async () => {
      const response = await this.#fetch()(`${this.#base()}/api/v1/events`, {
        headers,
        credentials: 'same-origin',
        cache: 'no-store',
        signal: abort.signal,
      });
      if (!response.ok || !response.body) throw await this.#refused(response, 'sse');
      sink.opened();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      let data: string[] = [];
      // Heartbeats are comments: any chunk shows the connection is alive.
      let idle: ReturnType<typeof setTimeout> | null = null;
      const quiet = () => {
        if (idle !== null) clearTimeout(idle);
        idle = setTimeout(() => abort.abort(new EventStreamError('the event stream went quiet', 'sse', false)),
          this.#options.idleTimeoutMs);
      };
      abort.signal.addEventListener('abort', () => idle !== null && clearTimeout(idle));
      for (;;) {
        quiet();
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let newline: number;
        while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
          // A \r at the end may be the first half of a \r\n split across chunks.
          if (newline === buffer.length - 1 && buffer.endsWith('\r')) break;
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + (buffer.startsWith('\r\n', newline) ? 2 : 1));
          if (line === '') {
            const event = data.length ? parseEvent(data.join('\n')) : null;
            data = [];
            if (event) sink.event(event);
          } else if (line.startsWith('data:')) {
            data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
          }
          // `id:` repeats the event's own id, `retry:` and comments are not needed here.
        }
      }
      throw new EventStreamError('the event stream ended', 'sse', false);
    })().catch((error: unknown) => {
      const reason: unknown = abort.signal.reason;
      if (reason instanceof EventStreamError) error = reason;
      sink.ended(error instanceof EventStreamError ? error : new EventStreamError(String(error), 'sse', false));
    });
    return { close: () => abort.abort() };
  }

  /** The error of a refused request: a refused key stops the stream; a refused resume
   * point (400) is dropped, so the next connection starts from now. */
  async #refused(response: Response, transport: Transport): Promise<EventStreamError> {
    if (response.status === 400) this.#last = null;
    const fatal = response.status === 401 || response.status === 403;
    return new EventStreamError(await errorMessage(response), transport, fatal);
  }

  /** One page of `GET /api/v1/notifications`. */
  async #poll(query: URLSearchParams, signal: AbortSignal): Promise<{ items: ShortlinkEvent[]; next: number }> {
    const response = await this.#fetch()(`${this.#base()}/api/v1/notifications?${query}`, {
      headers: this.#headers(),
      credentials: 'same-origin',
      cache: 'no-store',
      signal,
    });
    if (!response.ok) throw await this.#refused(response, 'polling');
    return (await response.json()) as { items: ShortlinkEvent[]; next: number };
  }

  #openPolling(sink: Sink): Connection {
    const abort = new AbortController();
    (async () => {
      let wait = 0;
      // Without a resume point the other transports start at the newest event; polling
      // would start at the oldest retained, so it first reads up to the newest.
      while (this.#last === null) {
        const query = new URLSearchParams({ limit: '1000', wait: '0', after: String(this.#head ?? 0) });
        const page = await this.#poll(query, abort.signal);
        this.#head = page.next;
        if (page.items.length < 1000) this.#last = BigInt(page.next);
      }
      this.#head = null;
      for (;;) {
        const query = new URLSearchParams({ limit: '100', wait: String(wait) });
        if (this.#last !== null) query.set('after', this.#last.toString());
        // A poll unanswered past its wait and the idle allowance is taken for lost.
        const late = setTimeout(() => abort.abort(new EventStreamError('a long poll went unanswered', 'polling', false)),
          wait * 1000 + this.#options.idleTimeoutMs);
        const page = await this.#poll(query, abort.signal).finally(() => clearTimeout(late));
        sink.opened();
        for (const event of page.items) sink.event(event);
        // A full page: fetch the rest at once; otherwise wait for the next event.
        wait = page.items.length >= 100 ? 0 : this.#options.pollWaitSeconds;
      }
    })().catch((error: unknown) => {
      const reason: unknown = abort.signal.reason;
      if (reason instanceof EventStreamError) error = reason;
      sink.ended(error instanceof EventStreamError ? error : new EventStreamError(String(error), 'polling', false));
    });
    return { close: () => abort.abort() };
  }
}

function parseId(id: number | string | null | undefined): bigint | null {
  if (id === null || id === undefined || id === '') return null;
  try {
    return BigInt(id);
  } catch {
    return null;
  }
}

/** An event from a message, or null for a `resync` notice or anything else. */
function parseEvent(text: string): ShortlinkEvent | null {
  try {
    const value = JSON.parse(text) as Partial<ShortlinkEvent>;
    if (typeof value.id === 'number' && typeof value.type === 'string') return value as ShortlinkEvent;
  } catch {
    // Not JSON: nothing to deliver.
  }
  return null;
}

async function errorMessage(response: Response): Promise<string> {
  try {
    const body = (await response.json()) as { error?: { message?: string } };
    if (body.error?.message) return body.error.message;
  } catch {
    // Not the API's error shape.
  }
  return `the server answered ${response.status}`;
}
