//! The whole configuration file: shared settings plus one table per plane.
//!
//! Sources, later ones winning: built-in defaults, the TOML file given with `--config`,
//! then environment variables (`SHORTLINK_DATA_DIR`, `SHORTLINK_PROXY_LISTEN`,
//! `SHORTLINK_CONTROL_LISTEN`, `SHORTLINK_PUBLIC_URL`, `SHORTLINK_ADMIN_KEY`,
//! `SHORTLINK_ADMIN_KEY_FILE`, `SHORTLINK_LOG`, and any key as `SHORTLINK_<TABLE>__<KEY>`;
//! list settings there take comma-separated values, see [`shortlink_core::list_setting`]).

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use shortlink_control::ControlConfig;
use shortlink_core::InvalidSetting;
use shortlink_cql::CqlConfig;
use shortlink_objects::ObjectsConfig;
use shortlink_proxy::ProxyConfig;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// `--config` names no file.
    #[error("config file {} does not exist", .0.display())]
    Missing(PathBuf),
    /// A file or variable does not parse, or a value has the wrong type.
    #[error(transparent)]
    Parse(#[from] Box<figment::Error>),
    /// A file a setting names (`admin_key_file`, …) cannot be read.
    #[error("cannot read {key} {}", path.display())]
    Read {
        /// The setting naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// A value parsed but cannot be used.
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
    /// The visitor page templates in `pages_dir` cannot be used.
    #[error(transparent)]
    Pages(#[from] shortlink_core::pages::PagesError),
}

/// The storage engine, as `store.engine` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Engine {
    /// SQLite in `data_dir`: one machine, no server.
    #[default]
    Embedded,
    /// A ScyllaDB or Cassandra cluster shared by every proxy and control plane.
    Cql,
}

/// Where links, clicks, events and upload records live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StoreConfig {
    /// `embedded` (SQLite in `data_dir`, one machine) or `cql` (a ScyllaDB or Cassandra
    /// cluster shared by every proxy and control plane). Default `embedded`.
    pub(crate) engine: Engine,
    /// Embedded: route changes the feed keeps for proxies that fall behind. Default 100 000.
    pub(crate) route_feed_retain: u64,
    /// Embedded: click ingestion runs as slices of this much work (µs) with rests of
    /// `ingest_rest_us` between, so a big batch does not queue redirects on the shared
    /// cores. 0 runs each batch in one go. Default 500.
    pub(crate) ingest_slice_us: u64,
    /// Embedded: the rest after each slice of ingestion (µs). Default 500.
    pub(crate) ingest_rest_us: u64,
    /// Embedded: ingest clicks in the kernel's idle scheduling class (Linux `SCHED_IDLE`)
    /// while the writer keeps up, so redirects never queue behind it; back to the normal
    /// class when behind. Used only where the process may leave that class again (root or
    /// `CAP_SYS_NICE`). Default true.
    pub(crate) ingest_idle_class: bool,
    /// The cluster, when `engine = "cql"`.
    pub(crate) cql: CqlConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            engine: Engine::Embedded,
            route_feed_retain: 100_000,
            ingest_slice_us: 500,
            ingest_rest_us: 500,
            ingest_idle_class: true,
            cql: CqlConfig::default(),
        }
    }
}

/// The configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// Folder for the database, the click spool and (by default) uploaded files. Default `./data`.
    pub(crate) data_dir: PathBuf,
    /// Base of every short URL handed out. Default: derived from `proxy.listen`.
    pub(crate) public_url: Option<String>,
    /// Bootstrap admin API key. Prefer the environment or `admin_key_file`. Default unset.
    pub(crate) admin_key: Option<String>,
    /// File holding the bootstrap admin API key. Default unset.
    pub(crate) admin_key_file: Option<PathBuf>,
    /// Secret proxies present when shipping click batches to control planes (at least 16
    /// characters). Required when the planes run apart; `serve` makes one per start if unset.
    pub internal_secret: Option<String>,
    /// File holding the internal secret. Default unset.
    pub internal_secret_file: Option<PathBuf>,
    /// Log filter, e.g. `info` or `shortlink_proxy=debug`. Default `info,pingora_core=warn`.
    pub(crate) log: String,
    /// Folder of the operator's visitor pages (`404.html`, `410.html`, `password.html`,
    /// `429.html`, `503.html`, each optional; HTML with `{{title}}` and `{{body}}`).
    /// Default unset: the built-in pages.
    pub(crate) pages_dir: Option<PathBuf>,
    /// The visitor pages' templates, read from `pages_dir` at load.
    #[serde(skip)]
    pub(crate) pages: shortlink_core::pages::PageTemplates,
    /// The storage engine.
    pub(crate) store: StoreConfig,
    /// The redirect proxy.
    pub(crate) proxy: ProxyConfig,
    /// The control plane.
    pub(crate) control: ControlConfig,
    /// Where uploaded files are kept.
    pub(crate) objects: ObjectsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            public_url: None,
            admin_key: None,
            admin_key_file: None,
            internal_secret: None,
            internal_secret_file: None,
            log: "info,pingora_core=warn".into(),
            pages_dir: None,
            pages: shortlink_core::pages::PageTemplates::default(),
            store: StoreConfig::default(),
            proxy: ProxyConfig::default(),
            control: ControlConfig::default(),
            objects: ObjectsConfig::default(),
        }
    }
}

/// Environment variable names with a fixed meaning, mapped to their config keys.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("proxy_listen", "proxy.listen"),
    ("control_listen", "control.listen"),
];

impl Config {
    /// Loads defaults, then `file` (if given), then the environment; validates the result.
    pub(crate) fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Missing(file.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = Env::prefixed("SHORTLINK_")
            .ignore(&["config", "api_key", "api_url"])
            .map(|key| {
                let lower = key.as_str().to_ascii_lowercase();
                match ENV_ALIASES.iter().find(|(k, _)| *k == lower) {
                    Some((_, mapped)) => (*mapped).into(),
                    None => lower.replace("__", ".").into(),
                }
            });
        let mut config: Config = figment.merge(env).extract().map_err(Box::new)?;
        if config.admin_key.is_none()
            && let Some(path) = &config.admin_key_file
        {
            let key = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                key: "admin_key_file",
                path: path.clone(),
                source,
            })?;
            config.admin_key = Some(key.trim().to_owned());
        }
        if config.internal_secret.is_none()
            && let Some(path) = &config.internal_secret_file
        {
            let secret = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                key: "internal_secret_file",
                path: path.clone(),
                source,
            })?;
            config.internal_secret = Some(secret.trim().to_owned());
        }
        if config.proxy.route_snapshot.is_none() {
            config.proxy.route_snapshot = Some(config.data_dir.join("routes.snapshot"));
        }
        if config.proxy.spool_dir.is_none() {
            config.proxy.spool_dir = Some(config.data_dir.join("spool"));
        }
        if config.proxy.upgrade_socket.is_none() {
            config.proxy.upgrade_socket = Some(config.data_dir.join("upgrade.sock"));
        }
        config.validate()?;
        config.pages = shortlink_core::pages::PageTemplates::load(config.pages_dir.as_deref())?;
        Ok(config)
    }

    /// Checks every table.
    pub(crate) fn validate(&self) -> Result<(), InvalidSetting> {
        if self.store.engine == Engine::Cql {
            self.store.cql.validate()?;
        }
        // Slices and rests are sub-millisecond by design; a rest of more than 100 ms
        // would slow ingestion to a crawl.
        if self.store.ingest_slice_us > 1_000_000 {
            return Err(InvalidSetting::new(
                "store.ingest_slice_us",
                "must be at most 1000000 (1 s)",
            ));
        }
        if self.store.ingest_rest_us > 100_000 {
            return Err(InvalidSetting::new(
                "store.ingest_rest_us",
                "must be at most 100000 (100 ms)",
            ));
        }
        if self
            .admin_key
            .as_deref()
            .is_some_and(|k| k.trim().len() < 16)
        {
            return Err(InvalidSetting::new(
                "admin_key",
                "must be at least 16 characters",
            ));
        }
        if let Some(url) = &self.public_url {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                _ => {
                    return Err(InvalidSetting::new(
                        "public_url",
                        format!("'{url}' must be an absolute http(s) URL like https://sho.rt"),
                    ));
                }
            }
        }
        self.proxy.validate()?;
        self.control.validate()?;
        Ok(())
    }

    /// The base of short URLs: `public_url`, or `http://<proxy host>:<port>` with an
    /// unspecified listen host shown as `localhost`.
    pub(crate) fn public_url(&self) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        match self.proxy.listen.parse::<std::net::SocketAddr>() {
            Ok(addr) => {
                let host = if addr.ip().is_unspecified() {
                    "localhost".to_owned()
                } else if addr.is_ipv6() {
                    format!("[{}]", addr.ip())
                } else {
                    addr.ip().to_string()
                };
                format!("http://{host}:{}", addr.port())
            }
            Err(_) => "http://localhost:8080".into(),
        }
    }

    /// Control upstreams for the proxy: as configured, or the control plane's own address.
    /// The control plane's settings, with the service's own listen hosts added (links to
    /// them would loop). A listen address on all interfaces names no host.
    pub(crate) fn control_config(&self) -> shortlink_control::ControlConfig {
        let mut control = self.control.clone();
        control.pages = self.pages.clone();
        for listen in [&self.proxy.listen, &self.control.listen] {
            if let Ok(addr) = listen.parse::<std::net::SocketAddr>()
                && !addr.ip().is_unspecified()
            {
                control.own_hosts.push(addr.ip().to_string());
            }
        }
        control
    }

    pub(crate) fn control_upstreams(&self) -> Vec<String> {
        if !self.proxy.control_upstreams.is_empty() {
            return self.proxy.control_upstreams.clone();
        }
        let listen = &self.control.listen;
        match listen.parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.ip().is_unspecified() => vec![format!("127.0.0.1:{}", addr.port())],
            _ => vec![listen.clone()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_configs_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let config: Config = Figment::from(Serialized::defaults(Config::default()))
                    .merge(Toml::string(&text))
                    .extract()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                config
                    .validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 1, "no config files found in {}", dir.display());
    }

    #[test]
    // figment's `Jail` fixes the closure's error type (figment's own, large).
    #[allow(clippy::result_large_err)]
    fn list_settings_take_comma_separated_environment_values() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "SHORTLINK_STORE__CQL__NODES",
                "10.0.0.1:9042, 10.0.0.2:9042",
            );
            jail.set_env("SHORTLINK_PROXY__TRUSTED_PROXIES", "10.0.0.9");
            jail.set_env("SHORTLINK_CONTROL__BLOCKED_HOSTS", "");
            // TOML syntax keeps working.
            jail.set_env(
                "SHORTLINK_PROXY__CONTROL_UPSTREAMS",
                r#"["127.0.0.1:1","127.0.0.1:2"]"#,
            );
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.store.cql.nodes, ["10.0.0.1:9042", "10.0.0.2:9042"]);
            assert_eq!(
                config.proxy.trusted_proxies,
                ["10.0.0.9".parse::<std::net::IpAddr>().unwrap()]
            );
            assert!(config.control.blocked_hosts.is_empty());
            assert_eq!(
                config.proxy.control_upstreams,
                ["127.0.0.1:1", "127.0.0.1:2"]
            );
            jail.set_env("SHORTLINK_PROXY__TRUSTED_PROXIES", "10.0.0.9,not-an-ip");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("not-an-ip"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn the_listen_hosts_are_the_control_planes_own_hosts() {
        let mut config = Config::default();
        config.proxy.listen = "10.1.2.3:8080".into();
        config.control.listen = "127.0.0.1:8081".into();
        assert_eq!(
            config.control_config().own_hosts,
            ["10.1.2.3", "127.0.0.1"],
            "a specific address is its own host"
        );
        config.proxy.listen = "0.0.0.0:8080".into();
        assert_eq!(
            config.control_config().own_hosts,
            ["127.0.0.1"],
            "all interfaces name no host"
        );
    }

    #[test]
    fn public_url_is_derived_from_the_proxy_listen_address() {
        let mut config = Config::default();
        assert_eq!(config.public_url(), "http://localhost:8080");
        config.proxy.listen = "127.0.0.2:9000".into();
        assert_eq!(config.public_url(), "http://127.0.0.2:9000");
        config.public_url = Some("https://sho.rt/".into());
        assert_eq!(config.public_url(), "https://sho.rt");
    }

    #[test]
    // figment's `Jail` fixes the closure's error type (figment's own, large).
    #[allow(clippy::result_large_err)]
    fn bad_values_are_named() {
        let mut config = Config::default();
        config.proxy.listen = "nope".into();
        assert_eq!(config.validate().unwrap_err().key, "proxy.listen");
        let config = Config {
            public_url: Some("ftp://x".into()),
            ..Config::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "public_url");
        // An unknown engine is refused while parsing, naming the key and the choices. In a
        // jail: loading reads the environment, which another test's jail sets.
        figment::Jail::expect_with(|_jail| {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("bad.toml");
            std::fs::write(&file, "[store]\nengine = \"mongo\"\n").unwrap();
            let error = Config::load(Some(&file)).unwrap_err().to_string();
            assert!(
                error.contains("store.engine") && error.contains("cql"),
                "{error}"
            );
            Ok(())
        });
        // A Unix socket path holds 107 bytes.
        let mut config = Config::default();
        config.proxy.upgrade_socket = Some(PathBuf::from(format!("/{}", "d".repeat(106))));
        config.validate().unwrap();
        config.proxy.upgrade_socket = Some(PathBuf::from(format!("/{}", "d".repeat(107))));
        assert_eq!(config.validate().unwrap_err().key, "proxy.upgrade_socket");
        let mut config = Config::default();
        config.store.ingest_rest_us = 100_001;
        assert_eq!(config.validate().unwrap_err().key, "store.ingest_rest_us");
        config.store.ingest_rest_us = 100_000;
        config.store.ingest_slice_us = 1_000_001;
        assert_eq!(config.validate().unwrap_err().key, "store.ingest_slice_us");
    }
}
