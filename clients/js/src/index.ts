/**
 * `@shortlink/client`: a typed client of the shortlink API and its live events.
 * React hooks are in `@shortlink/client/react`.
 */
export {
  ApiError,
  Shortlink,
  type AccountStats,
  type JsonBody,
  type Link,
  type LinkCreate,
  type LinkPage,
  type LinkQuery,
  type LinkStats,
  type LinkUpdate,
  type Method,
  type Operation,
  type PathParams,
  type PathsWith,
  type Progress,
  type QueryParams,
  type RequestOptions,
  type ShortlinkOptions,
  type StatsQuery,
  type Success,
  type Upload,
  type UploadOptions,
  type UploadPage,
} from './client.js';
export {
  EventStream,
  EventStreamError,
  type EventStreamOptions,
  type ShortlinkEvent,
  type StreamStatus,
  type Transport,
} from './events.js';
export type { components, paths } from './schema.js';
