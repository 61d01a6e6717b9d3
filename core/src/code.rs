//! Short codes: generation from a hash of the target, and the rules for custom aliases.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use xxhash_rust::xxh3::Xxh3;

use crate::UserId;

/// Length of a generated code: 62^7 ≈ 3.5 × 10^12 codes.
pub const GENERATED_LEN: usize = 7;
/// Shortest custom alias.
pub const ALIAS_MIN_LEN: usize = 3;
/// Longest custom alias (and so longest code of any kind).
pub const ALIAS_MAX_LEN: usize = 64;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// First path segments that belong to the service itself and can never be a code.
///
/// Compared case-insensitively, so `API` is refused as well as `api`.
pub const RESERVED: &[&str] = &[
    "api",
    "internal",
    "ui",
    "f",
    "p",
    "metrics",
    "healthz",
    "readyz",
    "livez",
    "shorten",
    "static",
    "assets",
    "admin",
    "login",
    "logout",
    "docs",
    "qr",
    // `/api/v1/links/import` and `/export` are endpoints, so no link may be called that.
    "import",
    "export",
    "robots.txt",
    "favicon.ico",
    "well-known",
    ".well-known",
];

/// A link's short code: the path segment after the host.
///
/// Either generated (7 base62 characters) or a custom alias (`[A-Za-z0-9_-]{3,64}`).
/// Case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShortCode(String);

impl ShortCode {
    /// Wraps a code read back from a store, which only ever holds valid codes.
    pub fn from_stored(code: String) -> ShortCode {
        ShortCode(code)
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the code into its text.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ShortCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `segment` names one of the service's own paths (case-insensitive).
pub fn is_reserved(segment: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(segment))
}

/// Whether `text` could be a code at all: the characters and length any code has.
///
/// The proxy uses this to decide, without a lookup, that a path is not a short link.
pub fn is_code_shaped(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= ALIAS_MAX_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Why a custom alias was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AliasError {
    /// Shorter than [`ALIAS_MIN_LEN`] or longer than [`ALIAS_MAX_LEN`].
    #[error("alias must be {ALIAS_MIN_LEN} to {ALIAS_MAX_LEN} characters long")]
    Length,
    /// Holds a character outside `[A-Za-z0-9_-]`.
    #[error("alias may contain only letters, digits, '_' and '-'")]
    Characters,
    /// One of the service's own path segments.
    #[error("alias '{0}' is reserved")]
    Reserved(String),
}

/// Checks a requested custom alias against the alias rules.
pub fn validate_alias(alias: &str) -> Result<ShortCode, AliasError> {
    if alias.len() < ALIAS_MIN_LEN || alias.len() > ALIAS_MAX_LEN {
        return Err(AliasError::Length);
    }
    if !is_code_shaped(alias) {
        return Err(AliasError::Characters);
    }
    if is_reserved(alias) {
        return Err(AliasError::Reserved(alias.to_owned()));
    }
    Ok(ShortCode(alias.to_owned()))
}

/// Generates codes from `xxh3_64(normalized url, owner, attempt)` with a per-installation salt.
///
/// Deterministic for the same inputs, so a retry after a collision passes the next `attempt`.
#[derive(Debug, Clone, Copy)]
pub struct CodeGenerator {
    salt: u64,
}

impl CodeGenerator {
    /// A generator seeded with `salt` (keep it stable per installation).
    pub fn new(salt: u64) -> CodeGenerator {
        CodeGenerator { salt }
    }

    /// The code for `url` owned by `owner` at collision retry number `attempt`.
    pub fn generate(&self, url: &str, owner: UserId, attempt: u32) -> ShortCode {
        let mut hasher = Xxh3::with_seed(self.salt);
        hasher.update(url.as_bytes());
        hasher.update(&owner.to_le_bytes());
        hasher.update(&attempt.to_le_bytes());
        let mut value = hasher.digest();
        let mut out = [0u8; GENERATED_LEN];
        for slot in out.iter_mut() {
            *slot = BASE62[(value % 62) as usize];
            value /= 62;
        }
        // Every byte comes from BASE62, so this is ASCII.
        ShortCode(out.iter().map(|&b| b as char).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_alias(input: &str, expected: Result<(), AliasError>) {
        assert_eq!(
            validate_alias(input).map(|_| ()),
            expected,
            "alias {input:?}"
        );
    }

    #[test]
    fn alias_rules() {
        check_alias("abc", Ok(()));
        check_alias("My_Link-2", Ok(()));
        check_alias(&"a".repeat(64), Ok(()));
        check_alias("ab", Err(AliasError::Length));
        check_alias(&"a".repeat(65), Err(AliasError::Length));
        check_alias("has space", Err(AliasError::Characters));
        check_alias("dot.ted", Err(AliasError::Characters));
        check_alias("ünï", Err(AliasError::Characters));
        check_alias("api", Err(AliasError::Reserved("api".into())));
        check_alias("API", Err(AliasError::Reserved("API".into())));
        check_alias("healthz", Err(AliasError::Reserved("healthz".into())));
    }

    #[test]
    fn generated_codes_are_seven_base62_and_deterministic() {
        let generator = CodeGenerator::new(42);
        let a = generator.generate("https://example.com/", 1, 0);
        assert_eq!(a.as_str().len(), GENERATED_LEN);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(a, generator.generate("https://example.com/", 1, 0));
        assert_ne!(a, generator.generate("https://example.com/", 1, 1));
        assert_ne!(a, generator.generate("https://example.com/", 2, 0));
        assert_ne!(
            a,
            CodeGenerator::new(43).generate("https://example.com/", 1, 0)
        );
    }

    #[test]
    fn generated_codes_spread() {
        let generator = CodeGenerator::new(7);
        let codes: std::collections::HashSet<_> = (0..10_000)
            .map(|i| generator.generate(&format!("https://e.com/{i}"), 1, 0))
            .collect();
        assert_eq!(codes.len(), 10_000);
    }
}
