//! The headers between the proxy and the control plane, named once for both.
//!
//! The proxy sets them on every request it forwards (and strips client-sent copies): the
//! internal secret vouches for the client's address and scheme as the proxy saw them.
//! Click batches carry the secret the same way.

/// The internal secret shared by proxies and control planes.
pub const SECRET_HEADER: &str = "x-shortlink-internal-secret";
/// The client's address as the proxy saw it.
pub const CLIENT_IP_HEADER: &str = "x-shortlink-client-ip";
/// The scheme the client used at the proxy (`http` or `https`).
pub const CLIENT_PROTO_HEADER: &str = "x-shortlink-client-proto";
