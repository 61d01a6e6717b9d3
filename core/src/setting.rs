//! The one error every configuration check returns, and how list settings are read.

use std::fmt::Display;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};
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

/// Reads a list setting from a list, or from one string of comma-separated items (how an
/// environment variable gives it: `SHORTLINK_STORE__CQL__NODES=10.0.0.1:9042,10.0.0.2:9042`).
/// Items are trimmed; empty ones are skipped, so an empty string is an empty list.
pub fn list_setting<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText<T> {
        List(Vec<T>),
        Text(String),
    }
    match ListOrText::<T>::deserialize(deserializer)? {
        ListOrText::List(items) => Ok(items),
        ListOrText::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse()
                    .map_err(|e| serde::de::Error::custom(format!("'{item}': {e}")))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Lists {
        #[serde(deserialize_with = "list_setting")]
        hosts: Vec<String>,
        #[serde(deserialize_with = "list_setting")]
        ips: Vec<std::net::IpAddr>,
    }

    #[test]
    fn lists_are_read_from_lists_or_comma_separated_text() {
        let lists: Lists =
            serde_json::from_str(r#"{"hosts": ["a:1", "b:2"], "ips": " 10.0.0.1 , ::1,"}"#)
                .unwrap();
        assert_eq!(lists.hosts, ["a:1", "b:2"]);
        assert_eq!(
            lists.ips,
            [
                "10.0.0.1".parse::<std::net::IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        let lists: Lists = serde_json::from_str(r#"{"hosts": "one:1", "ips": ""}"#).unwrap();
        assert_eq!(lists.hosts, ["one:1"]);
        assert!(lists.ips.is_empty());
        let bad = serde_json::from_str::<Lists>(r#"{"hosts": [], "ips": "10.0.0.1,nope"}"#);
        assert!(bad.unwrap_err().to_string().contains("'nope'"));
    }

    #[test]
    fn the_text_names_the_key_then_the_problem() {
        let e = InvalidSetting::new("proxy.threads", "must be at least 1");
        assert_eq!(e.to_string(), "proxy.threads must be at least 1");
        assert_eq!(e.key, "proxy.threads");
    }
}
