//! `shortlink`: one binary for the redirect proxy, the control plane, and admin tasks.
//! Parse options, load config, build, run; a bad config exits with status 64.

mod backup;
mod certificates;
mod commands;
mod config;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's allocator: under load glibc spent about 5 % of the proxy's
/// CPU in `free` and chunk consolidation, much of it for click events allocated on the
/// request threads and freed on the shipper's (see benches/HISTORY.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration error (EX_CONFIG-adjacent EX_USAGE, as linkerd does).
const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "shortlink",
    version,
    about = "Link shortener with a pingora data plane and an axum control plane"
)]
struct Cli {
    /// TOML config file; environment variables override it.
    #[arg(long, global = true, env = "SHORTLINK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy and the control plane in one process on the embedded store.
    Serve {
        /// Take over the listening sockets of the running process, which hands them over
        /// when sent SIGQUIT (within about 5 s of this start), then drains and exits.
        #[arg(long)]
        upgrade: bool,
    },
    /// Run only the redirect proxy.
    Proxy {
        /// Take over the listening sockets of the running proxy (see `serve --upgrade`).
        #[arg(long)]
        upgrade: bool,
    },
    /// Run only the control plane.
    Control,
    /// Create or upgrade the store's schema (a CQL cluster's keyspace); run once per
    /// upgrade, before starting the new version.
    Migrate,
    /// Write a backup of the whole installation (store and objects) to FILE (`-`:
    /// standard output), read from a snapshot on the embedded store; safe while it runs.
    Backup {
        /// Where to write it.
        file: PathBuf,
        /// Whether objects' bytes go in (default: yes on the local disk, only references
        /// on S3).
        #[arg(long, value_enum)]
        objects: Option<backup::ObjectsArg>,
    },
    /// Restore a backup from FILE into the configured store, which must hold no links,
    /// uploads or clicks: the way to move an installation, e.g. from the embedded store to
    /// a CQL cluster. The whole file is checked before anything is written.
    Restore {
        /// The backup.
        file: PathBuf,
    },
    /// Manage users (writes the store directly).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage API keys (writes the store directly).
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Manage the TLS certificates kept in the store, which every proxy serves (writes
    /// the store directly).
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// Manage links through the API.
    Link {
        #[command(subcommand)]
        action: LinkAction,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Create a user.
    Create {
        /// Unique user name.
        name: String,
        /// `user` or `admin`.
        #[arg(long, default_value = "user")]
        role: String,
    },
    /// List users.
    List,
    /// Disable a user: their keys stop working at once; their links keep redirecting.
    Disable {
        /// The user's name.
        name: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// The user's name.
        name: String,
    },
    /// Set a user's sign-in password for the web page, read from the first line of
    /// standard input (never from the command line, where others could see it).
    Password {
        /// The user's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Create an API key for a user and print it (shown only once).
    Create {
        /// The user's name.
        #[arg(long, default_value = "admin")]
        user: String,
        /// A note on what the key is for.
        #[arg(long, default_value = "")]
        label: String,
        /// Scopes (read, links, uploads, admin; repeat or comma-separate). Default:
        /// every scope the user's role allows.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// When the key stops working, RFC 3339. Default: never.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List keys (id, prefix, user, scopes, last use, expiry; never the key).
    List {
        /// Only this user's keys.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a key by its id: refused from then on.
    Revoke {
        /// The key's id (from `key list`).
        id: String,
    },
    /// Make a new key like an old one and print it; the old one keeps working for the
    /// grace period.
    Rotate {
        /// The old key's id (from `key list`).
        id: String,
        /// Seconds the old key keeps working (0: revoked now).
        #[arg(long, default_value_t = 3600)]
        grace_seconds: u64,
    },
}

#[derive(Debug, Subcommand)]
enum CertAction {
    /// Store a certificate (PEM chain and key files) under its first DNS name; every
    /// proxy serves it for the names it lists within `proxy.tls.reload_seconds`.
    Import {
        /// The chain, end-entity certificate first (e.g. certbot's fullchain.pem).
        #[arg(long)]
        cert: PathBuf,
        /// The private key (e.g. certbot's privkey.pem).
        #[arg(long)]
        key: PathBuf,
    },
    /// List stored certificates (name, expiry, when stored; never the key).
    List,
    /// Remove a stored certificate by name.
    Delete {
        /// The name it is stored under (from `cert list`).
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum LinkAction {
    /// Import links from a CSV file (columns url, alias, tags, expires_at), showing
    /// progress; running it again creates nothing twice.
    Import {
        /// The CSV file; its first line names the columns.
        file: PathBuf,
        /// API base URL. Default: the configured control plane.
        #[arg(long, env = "SHORTLINK_API_URL")]
        api: Option<String>,
        /// API key.
        #[arg(long, env = "SHORTLINK_API_KEY", hide_env_values = true)]
        key: String,
    },
    /// Shorten a URL and print the short URL.
    Create {
        /// The target URL.
        url: String,
        /// Custom alias instead of a generated code.
        #[arg(long)]
        alias: Option<String>,
        /// Expiry, RFC 3339.
        #[arg(long)]
        expires_at: Option<String>,
        /// Click limit.
        #[arg(long)]
        max_clicks: Option<u64>,
        /// Redirect status: 301, 302, 307 or 308.
        #[arg(long)]
        redirect: Option<u16>,
        /// Tags (repeat the flag).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// API base URL. Default: the configured control plane.
        #[arg(long, env = "SHORTLINK_API_URL")]
        api: Option<String>,
        /// API key.
        #[arg(long, env = "SHORTLINK_API_KEY", hide_env_values = true)]
        key: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            // With its causes (a file that cannot be read says why).
            eprintln!(
                "shortlink: bad configuration: {:#}",
                anyhow::Error::new(error)
            );
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    commands::init_logging(&config.log);
    // Every redirect, upstream and event stream holds a socket: use all the descriptors
    // the hard limit allows (soft limits are often 1 024).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
    let result = match cli.command {
        Command::Serve { upgrade } => commands::serve(config, upgrade),
        Command::Proxy { upgrade } => commands::proxy(config, upgrade),
        Command::Control => commands::control(config),
        Command::Migrate => commands::migrate(config),
        Command::Backup { file, objects } => backup::run_backup(config, &file, objects),
        Command::Restore { file } => backup::run_restore(config, &file),
        Command::User {
            action: UserAction::Create { name, role },
        } => commands::user_create(config, &name, &role),
        Command::User {
            action: UserAction::List,
        } => commands::user_list(config),
        Command::User {
            action: UserAction::Disable { name },
        } => commands::user_set_disabled(config, &name, true),
        Command::User {
            action: UserAction::Enable { name },
        } => commands::user_set_disabled(config, &name, false),
        Command::User {
            action: UserAction::Password { name },
        } => commands::user_password(config, &name),
        Command::Key {
            action:
                KeyAction::Create {
                    user,
                    label,
                    scopes,
                    expires_at,
                },
        } => commands::key_create(config, &user, &label, &scopes, expires_at.as_deref()),
        Command::Key {
            action: KeyAction::List { user },
        } => commands::key_list(config, user.as_deref()),
        Command::Key {
            action: KeyAction::Revoke { id },
        } => commands::key_revoke(config, &id),
        Command::Key {
            action: KeyAction::Rotate { id, grace_seconds },
        } => commands::key_rotate(config, &id, grace_seconds),
        Command::Cert {
            action: CertAction::Import { cert, key },
        } => certificates::import(config, &cert, &key),
        Command::Cert {
            action: CertAction::List,
        } => certificates::list(config),
        Command::Cert {
            action: CertAction::Delete { name },
        } => certificates::delete(config, &name),
        Command::Link {
            action: LinkAction::Import { file, api, key },
        } => commands::link_import(config, api, &key, &file),
        Command::Link {
            action:
                LinkAction::Create {
                    url,
                    alias,
                    expires_at,
                    max_clicks,
                    redirect,
                    tags,
                    api,
                    key,
                },
        } => {
            let body = serde_json::json!({
                "url": url, "alias": alias, "expires_at": expires_at,
                "max_clicks": max_clicks, "redirect": redirect,
                "tags": if tags.is_empty() { None } else { Some(tags) },
            });
            commands::link_create(config, api, &key, body)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shortlink: {error:#}");
            ExitCode::FAILURE
        }
    }
}
