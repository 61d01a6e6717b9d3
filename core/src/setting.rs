//! The one error every configuration check returns.

use thiserror::Error;

/// A setting that parsed but cannot be used: which key, and what is wrong with its value.
/// Its text is `"<key> <problem>"`, e.g. `proxy.threads must be at least 1`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{key} {problem}")]
pub struct InvalidSetting {
    /// The key as written in the config file (`table.key`); for a check of several keys,
    /// the first one.
    pub key: &'static str,
    /// What is wrong, for people; it may name further keys.
    pub problem: String,
}

impl InvalidSetting {
    /// `key`'s value is not usable because of `problem`.
    pub fn new(key: &'static str, problem: impl Into<String>) -> InvalidSetting {
        InvalidSetting {
            key,
            problem: problem.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_the_key_then_the_problem() {
        let e = InvalidSetting::new("proxy.threads", "must be at least 1");
        assert_eq!(e.to_string(), "proxy.threads must be at least 1");
        assert_eq!(e.key, "proxy.threads");
    }
}
