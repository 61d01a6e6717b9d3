/**
 * `@shortlink/client`: a typed client of the shortlink API and its live events.
 * React hooks are in `@shortlink/client/react`.
 */
export { ApiError, Shortlink, } from './client.js';
export { EventStream, EventStreamError, } from './events.js';
