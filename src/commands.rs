//! What each subcommand does: assemble the parts from the config and run them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use shortlink_control::auth::new_key_record;
use shortlink_control::ingest::Ingestor;
use shortlink_control::{Backends, ControlConfig};
use shortlink_core::time_util::{parse_rfc3339, to_rfc3339};
use shortlink_core::{ClickBatch, Role, Scope, Scopes};
use shortlink_cql::{CqlStore, MigrationProgress, Retention};
use shortlink_embedded::{EmbeddedConfig, EmbeddedStore, Pacing};
use shortlink_objects::ObjectsConfig;
use shortlink_proxy::listen::Listening;
use shortlink_proxy::{Fatal, LocalIngest, LocalIngestError};
use shortlink_store::Store;
use tracing::error;

use crate::config::{Config, Engine};

/// Libraries whose debug and trace lines print whole request heads and bodies, keys and
/// cookies included: capped at `info` whatever the filter asks for.
const VERBOSE_LIBRARIES: [&str; 4] = ["pingora_proxy", "pingora_core", "hyper", "h2"];

/// Sets up structured logs on stderr (coloured on a terminal only); `RUST_LOG` overrides the configured filter. Whatever
/// either says, the libraries of [`VERBOSE_LIBRARIES`] log at `info` at most, so no
/// secret reaches a log line.
pub(crate) fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journal gets plain `key=value` text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(cap_verbose_libraries(filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// `filter` with [`VERBOSE_LIBRARIES`] at `info`, or at the filter's own most verbose
/// level where that is quieter (a `warn` filter keeps them at `warn`).
fn cap_verbose_libraries(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::filter::LevelFilter;
    let cap = filter
        .max_level_hint()
        .map_or(LevelFilter::INFO, |most| most.min(LevelFilter::INFO));
    VERBOSE_LIBRARIES.iter().fold(filter, |filter, target| {
        match format!("{target}={cap}").parse() {
            Ok(directive) => filter.add_directive(directive),
            Err(_) => filter,
        }
    })
}

pub(crate) fn open_store(config: &Config) -> Result<Arc<dyn Store>> {
    if config.store.engine == Engine::Cql {
        let runtime = cql_runtime()?;
        let store = runtime
            .block_on(CqlStore::open(
                &config.store.cql,
                Retention {
                    click_days: config.control.click_retention_days,
                    event_hours: config.control.events_retain_hours,
                },
            ))
            .context("cannot open the CQL store")?;
        return Ok(store);
    }
    let mut embedded = EmbeddedConfig::new(&config.data_dir);
    embedded.route_feed_retain = config.store.route_feed_retain;
    embedded.click_retention_days = i64::from(config.control.click_retention_days);
    embedded.ingest_pacing = Pacing {
        idle_class: config.store.ingest_idle_class,
        ..Pacing::new(
            Duration::from_micros(config.store.ingest_slice_us),
            Duration::from_micros(config.store.ingest_rest_us),
        )
    };
    let store = EmbeddedStore::open(embedded)
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    Ok(store)
}

/// The runtime the CQL driver's connections live on, for the whole process: the planes'
/// own runtimes (pingora's, the control plane's) call into it through the session.
fn cql_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cql-driver")
        .enable_all()
        .build()
        .context("cannot start the CQL driver's runtime")?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// `shortlink migrate`: brings the configured store's schema up to this binary's.
pub(crate) fn migrate(config: Config) -> Result<()> {
    if config.store.engine != Engine::Cql {
        // The embedded store applies its own migrations whenever it opens.
        open_store(&config)?;
        println!(
            "embedded store in {} is up to date",
            config.data_dir.display()
        );
        return Ok(());
    }
    let cql = &config.store.cql;
    // Statement by statement on a terminal (one line, rewritten); a log gets whole lines.
    let live = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let version = cql_runtime()?
        .block_on(CqlStore::migrate(cql, &mut |step| match step {
            MigrationProgress::Keyspace {
                name,
                replication,
                reason,
            } => println!(
                "keyspace {name}: {reason}; replication {}",
                replication
                    .as_deref()
                    .unwrap_or("(a strategy shortlink does not read)")
            ),
            MigrationProgress::UpToDate(v) => println!("schema is at version {v}: up to date"),
            MigrationProgress::Start(v, name, n) => {
                let plural = if n == 1 { "" } else { "s" };
                println!("applying migration {v} ({name}): {n} statement{plural}")
            }
            MigrationProgress::Statement(i) if live => {
                print!("\r  statement {i} done");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }
            MigrationProgress::Statement(_) => {}
            MigrationProgress::Applied(v) if live => println!("\nmigration {v} applied"),
            MigrationProgress::Applied(v) => println!("migration {v} applied"),
        }))
        .context("migration failed")?;
    println!("keyspace {} is at schema version {version}", cql.keyspace);
    Ok(())
}

pub(crate) fn small_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")
}

/// Creates the admin user and key if needed; prints a generated key once.
fn bootstrap(config: &Config, store: &Arc<dyn Store>) -> Result<()> {
    let generated = small_runtime()?.block_on(shortlink_control::bootstrap_admin(
        store.as_ref(),
        config.admin_key.as_deref(),
    ))?;
    if let Some(key) = generated {
        println!("Generated the admin API key (shown only this once; only its hash is stored):");
        println!("  {key}");
        println!("Set SHORTLINK_ADMIN_KEY to choose your own, or run `shortlink key create`.");
    }
    Ok(())
}

/// The control plane as a pingora service, sharing the server's lifecycle and, on an
/// upgrade, handing its listening socket over like the proxy.
struct ControlService {
    listening: Listening,
    threads: usize,
    config: ControlConfig,
    public_url: String,
    internal_secret: Option<String>,
    store: Arc<dyn Store>,
    ingestor: Arc<Ingestor>,
    objects: ObjectsConfig,
    objects_dir: PathBuf,
    /// Stops the whole server when the control plane cannot run.
    fatal: Fatal,
}

#[async_trait]
impl Service for ControlService {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        let config = &self.config;
        let bind = |_: &str| shortlink_control::bind(config).map_err(std::io::Error::other);
        let listener = match self.listening.open(fds.as_ref(), bind) {
            Ok(listener) => listener,
            Err(e) => {
                let addr = self.listening.addr();
                error!(error = %e, addr, "the control plane cannot listen");
                self.fatal
                    .stop(format!("the control plane cannot listen on {addr}: {e}"));
                return;
            }
        };
        let objects = match shortlink_objects::open(&self.objects, &self.objects_dir).await {
            Ok(objects) => objects,
            Err(e) => {
                error!(error = %e, "cannot open object storage");
                self.fatal.stop(format!("cannot open object storage: {e}"));
                return;
            }
        };
        let backends = Backends {
            store: self.store.clone(),
            objects,
            ingestor: self.ingestor.clone(),
        };
        if let Err(e) = shortlink_control::serve(
            listener,
            self.config.clone(),
            &self.public_url,
            self.internal_secret.clone(),
            backends,
            stop,
        )
        .await
        {
            error!(error = %e, "control plane stopped");
            self.fatal.stop(e.to_string());
        }
    }

    fn name(&self) -> &str {
        "control plane"
    }

    fn threads(&self) -> Option<usize> {
        Some(self.threads)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(vec![self.listening.addr().to_owned()])
    }
}

/// The internal secret for planes running apart: they must share a configured one.
fn required_secret(config: &Config) -> Result<String> {
    config.internal_secret.clone().context(
        "internal_secret (or SHORTLINK_INTERNAL_SECRET) must be set to the same value on every \
         proxy and control plane when they run apart",
    )
}

/// The control plane's ingestion, called by the proxy's shipper in the same process.
struct InProcessIngest(Arc<Ingestor>);

#[async_trait]
impl LocalIngest for InProcessIngest {
    async fn ingest(&self, batch: &ClickBatch) -> Result<(), LocalIngestError> {
        match self.0.apply(batch).await {
            Ok(_) => Ok(()),
            Err(e) if e.status().is_client_error() => {
                Err(LocalIngestError::Rejected(e.code().as_str().into()))
            }
            Err(e) => Err(LocalIngestError::Unavailable(e.code().as_str().into())),
        }
    }
}

/// The pingora server with the proxy in it. With `upgrade`, it has first taken the running
/// process's listening sockets.
fn proxy_server(
    config: &Config,
    store: Arc<dyn Store>,
    internal_secret: String,
    local: Option<Arc<dyn LocalIngest>>,
    upgrade: bool,
    fatal: &Fatal,
) -> Result<pingora::server::Server> {
    let mut proxy_config = config.proxy.clone();
    proxy_config.control_upstreams = config.control_upstreams();
    if upgrade {
        println!(
            "shortlink: waiting for the running process's sockets on {} (send it SIGQUIT)",
            proxy_config
                .upgrade_socket
                .as_deref()
                .unwrap_or(Path::new("?"))
                .display()
        );
    }
    let mut server = shortlink_proxy::new_server(&proxy_config, upgrade);
    // Targeting reads countries from the same GeoIP database as analytics.
    let country_lookup = match &config.control.geoip_database {
        Some(path) => {
            let geoip = Arc::new(
                shortlink_analytics::Enricher::new(Some(path), false)
                    .with_context(|| format!("cannot open {}", path.display()))?,
            );
            let lookup: shortlink_proxy::CountryLookup = Arc::new(move |ip| {
                let country = geoip.country(Some(ip), None);
                (country != "unknown").then_some(country)
            });
            Some(lookup)
        }
        None => None,
    };
    let public_url = config.public_url();
    let authority = public_url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    let edge = shortlink_proxy::Edge {
        default_host: shortlink_core::normalize_host(authority),
        country_lookup,
        fatal: fatal.clone(),
        pages: config.pages.clone(),
    };
    shortlink_proxy::add_proxy(
        &mut server,
        &proxy_config,
        edge,
        store,
        Some(internal_secret),
        local,
    )?;
    Ok(server)
}

fn banner(config: &Config, proxy: bool, control: bool) {
    let mut parts = Vec::new();
    if proxy {
        parts.push(format!("proxy on {}", config.proxy.listen));
    }
    if control {
        parts.push(format!("control plane on {}", config.control.listen));
    }
    println!(
        "shortlink: {}; short URLs under {}; data in {}",
        parts.join(", "),
        config.public_url(),
        config.data_dir.display()
    );
}

/// Says once whether the click pipeline can wait in the idle scheduling class (see
/// `shortlink_sched`): where it cannot, redirects' p99 under load is higher, and the fix is a
/// capability, not a setting.
fn note_scheduling_class(config: &Config) {
    let wanted = config.store.ingest_idle_class || config.proxy.ship_idle_class;
    if wanted && !shortlink_sched::idle_class_permitted() {
        tracing::info!(
            "click shipping and ingestion run in the normal scheduling class: leaving the idle \
             class again needs root or CAP_SYS_NICE (e.g. systemd AmbientCapabilities=CAP_SYS_NICE)"
        );
    }
}

/// `shortlink serve`: both planes in one process; with `upgrade`, taking over the
/// listening sockets of the running one.
pub(crate) fn serve(config: Config, upgrade: bool) -> Result<()> {
    let store = open_store(&config)?;
    bootstrap(&config, &store)?;
    let listen = &config.control.listen;
    let listening = if upgrade {
        config.control.validate()?;
        Listening::inherited(listen)
    } else {
        Listening::bound(listen, shortlink_control::bind(&config.control)?)
    };
    // Both planes live in this process, so a secret made now is shared by both.
    let secret = config
        .internal_secret
        .clone()
        .unwrap_or_else(shortlink_control::auth::generate_api_key);
    let ingestor = Arc::new(Ingestor::new(store.clone(), &config.control)?);
    let local: Arc<dyn LocalIngest> = Arc::new(InProcessIngest(ingestor.clone()));
    let fatal = Fatal::default();
    let mut server = proxy_server(
        &config,
        store.clone(),
        secret.clone(),
        Some(local),
        upgrade,
        &fatal,
    )?;
    let control = ControlService {
        listening,
        threads: config.control.threads,
        config: config.control_config(),
        public_url: config.public_url(),
        internal_secret: Some(secret),
        store,
        ingestor,
        objects: config.objects.clone(),
        objects_dir: config.data_dir.join("objects"),
        fatal: fatal.clone(),
    };
    server.add_service(control);
    banner(&config, true, true);
    note_scheduling_class(&config);
    shortlink_proxy::run(server, fatal).map_err(anyhow::Error::msg)
}

/// `shortlink proxy`: only the data plane; with `upgrade`, taking over the listening
/// sockets of the running one.
pub(crate) fn proxy(config: Config, upgrade: bool) -> Result<()> {
    let secret = required_secret(&config)?;
    let store = open_store(&config)?;
    let fatal = Fatal::default();
    let server = proxy_server(&config, store, secret, None, upgrade, &fatal)?;
    banner(&config, true, false);
    note_scheduling_class(&config);
    shortlink_proxy::run(server, fatal).map_err(anyhow::Error::msg)
}

/// `shortlink control`: only the control plane.
pub(crate) fn control(config: Config) -> Result<()> {
    let secret = required_secret(&config)?;
    let store = open_store(&config)?;
    bootstrap(&config, &store)?;
    let listener = shortlink_control::bind(&config.control)?;
    let ingestor = Arc::new(Ingestor::new(store.clone(), &config.control)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.control.threads)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    banner(&config, false, true);
    note_scheduling_class(&config);
    runtime.block_on(async {
        let stop = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                }
                _ => std::future::pending().await,
            }
        };
        let objects = shortlink_objects::open(&config.objects, &config.data_dir.join("objects"))
            .await
            .context("cannot open object storage")?;
        let backends = Backends {
            store,
            objects,
            ingestor,
        };
        shortlink_control::serve(
            listener,
            config.control_config(),
            &config.public_url(),
            Some(secret),
            backends,
            stop,
        )
        .await
        .map_err(anyhow::Error::from)
    })?;
    Ok(())
}

/// `shortlink user create`.
pub(crate) fn user_create(config: Config, name: &str, role: &str) -> Result<()> {
    shortlink_control::admin::validate_user_name(name)
        .map_err(|e| anyhow::anyhow!("invalid user name ({})", e.code()))?;
    let Some(role) = Role::parse(role) else {
        bail!("role must be 'user' or 'admin'");
    };
    let store = open_store(&config)?;
    let user = small_runtime()?.block_on(store.create_user(name, role))?;
    println!(
        "created user {} (id {}, {})",
        user.name,
        user.id,
        user.role.as_str()
    );
    Ok(())
}

/// `shortlink user list`.
pub(crate) fn user_list(config: Config) -> Result<()> {
    let store = open_store(&config)?;
    let users = small_runtime()?.block_on(store.list_users())?;
    println!(
        "{:<8} {:<24} {:<6} {:<9} created",
        "id", "name", "role", "state"
    );
    for user in users {
        println!(
            "{:<8} {:<24} {:<6} {:<9} {}",
            user.id,
            user.name,
            user.role.as_str(),
            if user.disabled { "disabled" } else { "active" },
            to_rfc3339(user.created_at)
        );
    }
    Ok(())
}

/// `shortlink user disable|enable`.
pub(crate) fn user_set_disabled(config: Config, name: &str, disabled: bool) -> Result<()> {
    let store = open_store(&config)?;
    let runtime = small_runtime()?;
    let Some(user) = runtime.block_on(store.user_by_name(name))? else {
        bail!("no user named '{name}'");
    };
    runtime.block_on(store.set_user_disabled(user.id, disabled))?;
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    runtime.block_on(cli_audit(store.as_ref(), action, name, ""))?;
    println!(
        "{} user {name}",
        if disabled { "disabled" } else { "enabled" }
    );
    Ok(())
}

/// `shortlink user password NAME`: the password is the first line of standard input.
pub(crate) fn user_password(config: Config, name: &str) -> Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    let store = open_store(&config)?;
    let runtime = small_runtime()?;
    let Some(user) = runtime.block_on(store.user_by_name(name))? else {
        bail!("no user named '{name}'");
    };
    let hash = runtime
        .block_on(shortlink_control::protected::hash_password(
            &shortlink_control::protected::PasswordGuard::new(
                shortlink_control::protected::PasswordLimits {
                    per_client: 1,
                    per_link: 1,
                    window: Duration::from_secs(60),
                    memory_mib: config.control.password_memory_mib(),
                },
            ),
            password,
        ))
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    runtime.block_on(store.set_user_password(user.id, Some(hash)))?;
    runtime.block_on(cli_audit(store.as_ref(), "user.password", name, ""))?;
    println!("set the sign-in password of {name}");
    Ok(())
}

/// Records a CLI action in the audit log, as done by the bootstrap admin.
async fn cli_audit(store: &dyn Store, action: &str, target: &str, detail: &str) -> Result<()> {
    let actor = store
        .user_by_name(shortlink_control::ADMIN_USER)
        .await?
        .map_or(0, |u| u.id);
    store
        .append_audit(shortlink_core::NewAuditEntry {
            actor,
            action: action.to_owned(),
            target: target.to_owned(),
            detail: format!(
                "from the command line{}{detail}",
                if detail.is_empty() { "" } else { ": " }
            ),
        })
        .await?;
    Ok(())
}

/// The scopes `--scope` names (repeated or comma-separated); none: every scope of `role`.
fn parse_scopes(scopes: &[String], role: Role) -> Result<Scopes> {
    if scopes.is_empty() {
        return Ok(Scopes::full(role));
    }
    let names: Vec<String> = scopes
        .iter()
        .flat_map(|s| s.split(','))
        .map(|name| name.trim().to_owned())
        .collect();
    let parsed = shortlink_control::keys::parse_scopes(&names)
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    if parsed.allows(Scope::Admin) && role != Role::Admin {
        bail!("only an admin's key may hold the admin scope");
    }
    Ok(parsed)
}

/// `shortlink key create`.
pub(crate) fn key_create(
    config: Config,
    user: &str,
    label: &str,
    scopes: &[String],
    expires_at: Option<&str>,
) -> Result<()> {
    if label == shortlink_control::keys::BOOTSTRAP_LABEL {
        bail!("the label 'bootstrap' is reserved for the configured admin key");
    }
    let expires_at = expires_at
        .map(|t| parse_rfc3339(t).context("--expires-at must be an RFC 3339 time"))
        .transpose()?;
    let store = open_store(&config)?;
    let runtime = small_runtime()?;
    let Some(found) = runtime.block_on(store.user_by_name(user))? else {
        bail!("no user named '{user}'; create it with `shortlink user create {user}`");
    };
    let scopes = parse_scopes(scopes, found.role)?;
    let key = shortlink_control::auth::generate_api_key();
    let record = new_key_record(&key, &found, label, scopes, expires_at);
    runtime.block_on(store.add_api_key(record.clone()))?;
    runtime.block_on(cli_audit(store.as_ref(), "key.create", &record.id(), user))?;
    println!("{key}");
    eprintln!("key id {} for {user} (shown only this once)", record.id());
    Ok(())
}

/// `shortlink key list`.
pub(crate) fn key_list(config: Config, user: Option<&str>) -> Result<()> {
    let store = open_store(&config)?;
    let runtime = small_runtime()?;
    let users = runtime.block_on(store.list_users())?;
    let filter = match user {
        Some(name) => Some(
            users
                .iter()
                .find(|u| u.name == name)
                .with_context(|| format!("no user named '{name}'"))?
                .id,
        ),
        None => None,
    };
    let keys = runtime.block_on(store.list_api_keys(filter))?;
    println!(
        "{:<16} {:<10} {:<16} {:<22} {:<20} {:<20} label",
        "id", "prefix", "user", "scopes", "last used", "expires"
    );
    for key in keys {
        let name = users
            .iter()
            .find(|u| u.id == key.user_id)
            .map_or("?", |u| u.name.as_str());
        let scopes: Vec<&str> = key.scopes.iter().map(Scope::as_str).collect();
        println!(
            "{:<16} {:<10} {:<16} {:<22} {:<20} {:<20} {}",
            key.id(),
            key.prefix,
            name,
            scopes.join(","),
            key.last_used_at
                .map(to_rfc3339)
                .unwrap_or_else(|| "never".into()),
            key.expires_at
                .map(to_rfc3339)
                .unwrap_or_else(|| "never".into()),
            key.label
        );
    }
    Ok(())
}

/// `shortlink key revoke`.
pub(crate) fn key_revoke(config: Config, id: &str) -> Result<()> {
    let store = open_store(&config)?;
    let runtime = small_runtime()?;
    let Some(key) = runtime.block_on(store.get_api_key(id))? else {
        bail!("no key with id '{id}' (see `shortlink key list`)");
    };
    runtime.block_on(store.delete_api_key(key.key_hash))?;
    runtime.block_on(cli_audit(store.as_ref(), "key.revoke", id, &key.label))?;
    println!("revoked key {id}");
    Ok(())
}

/// `shortlink key rotate`: a new key like the old one; the old one works for `grace`
/// more seconds (0: revoked now).
pub(crate) fn key_rotate(config: Config, id: &str, grace_seconds: u64) -> Result<()> {
    let store = open_store(&config)?;
    let runtime = small_runtime()?;
    let Some(old) = runtime.block_on(store.get_api_key(id))? else {
        bail!("no key with id '{id}' (see `shortlink key list`)");
    };
    let user = runtime
        .block_on(store.get_user(old.user_id))?
        .context("the key's user no longer exists")?;
    let (key, record) = runtime.block_on(shortlink_control::keys::rotate(
        store.as_ref(),
        &old,
        &user,
        grace_seconds,
    ))?;
    runtime.block_on(cli_audit(
        store.as_ref(),
        "key.rotate",
        id,
        &format!(
            "new key {}, old one valid for {grace_seconds} s",
            record.id()
        ),
    ))?;
    println!("{key}");
    eprintln!(
        "new key id {}; the old key {id} works for {grace_seconds} more seconds",
        record.id()
    );
    Ok(())
}

/// `shortlink link create`: calls `POST /api/v1/links`.
pub(crate) fn link_create(
    config: Config,
    api: Option<String>,
    key: &str,
    body: serde_json::Value,
) -> Result<()> {
    let base = api.unwrap_or_else(|| format!("http://{}", config.control_upstreams()[0]));
    let url = format!("{}/api/v1/links", base.trim_end_matches('/'));
    let response = small_runtime()?.block_on(async {
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let json: serde_json::Value = response.json().await.context("the API answered non-JSON")?;
        anyhow::Ok((status, json))
    })?;
    let (status, json) = response;
    if !status.is_success() {
        let message = json["error"]["message"].as_str().unwrap_or("unknown error");
        let code = json["error"]["code"].as_str().unwrap_or("unknown");
        bail!("{message} ({code}, HTTP {})", status.as_u16());
    }
    println!("{}", json["short_url"].as_str().unwrap_or_default());
    Ok(())
}

/// `shortlink link import FILE`: streams a CSV file to the import endpoint, showing how
/// much of it was sent, then the report (created, existing, refused rows by line).
pub(crate) fn link_import(
    config: Config,
    api: Option<String>,
    key: &str,
    file: &Path,
) -> Result<()> {
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    let base = api.unwrap_or_else(|| format!("http://{}", config.control_upstreams()[0]));
    let url = format!("{}/api/v1/links/import", base.trim_end_matches('/'));
    let total = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let (status, json) = small_runtime()?.block_on(async {
        let handle = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot open {}", file.display()))?;
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let chunks = futures_util::stream::unfold(handle, |mut handle| async move {
            use tokio::io::AsyncReadExt;
            let mut buffer = vec![0u8; 256 * 1024];
            match handle.read(&mut buffer).await {
                Ok(0) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    Some((Ok::<_, std::io::Error>(buffer), handle))
                }
                Err(e) => Some((Err(e), handle)),
            }
        })
        .map(move |chunk| {
            if let Ok(bytes) = &chunk {
                counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            chunk
        });
        let progress = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let done = sent.load(Ordering::Relaxed);
                eprint!(
                    "\rsent {} of {} KiB ({}%)",
                    done / 1024,
                    total / 1024,
                    (done * 100).checked_div(total).unwrap_or(100)
                );
                if done >= total {
                    eprintln!("; the server is creating the links…");
                    return;
                }
            }
        });
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(key)
            .header("content-type", "text/csv")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        progress.abort();
        let status = response.status();
        let json: serde_json::Value = response.json().await.context("the API answered non-JSON")?;
        anyhow::Ok((status, json))
    })?;
    if !status.is_success() {
        let message = json["error"]["message"].as_str().unwrap_or("unknown error");
        let code = json["error"]["code"].as_str().unwrap_or("unknown");
        bail!("{message} ({code}, HTTP {})", status.as_u16());
    }
    println!(
        "{} rows: {} created, {} already there, {} refused",
        json["rows"], json["created"], json["existing"], json["failed"]
    );
    for error in json["errors"].as_array().into_iter().flatten() {
        println!(
            "  line {}: {} ({})",
            error["line"],
            error["message"].as_str().unwrap_or_default(),
            error["code"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_libraries_log_at_info_at_most_and_never_louder_than_the_filter() {
        let capped = |base: &str| {
            cap_verbose_libraries(tracing_subscriber::EnvFilter::new(base)).to_string()
        };
        let trace = capped("trace");
        assert!(trace.contains("pingora_core=info"), "{trace}");
        assert!(trace.contains("hyper=info"), "{trace}");
        let warn = capped("warn");
        assert!(warn.contains("pingora_core=warn"), "{warn}");
        assert!(!warn.contains("=info"), "{warn}");
    }
}
