//! The custom domains API: admins register hosts links may live on and who may use them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shortlink_core::time_util::{now_unix, to_rfc3339};
use std::collections::HashMap;

use shortlink_core::{
    Domain, DomainHttps, IssuanceState, MAX_HSTS_MAX_AGE, UserId, validate_domain,
};
use shortlink_store::ListQuery;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::ApiJson;
use crate::links::checked_target;
use crate::openapi::api_errors;
use crate::state::AppState;

/// Most users one domain may name.
const MAX_DOMAIN_USERS: usize = 1000;

/// Body of `POST /api/v1/domains`: the host name and, optionally, the names of the users
/// who may create links on it (absent or `null`: every user).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDomainRequest {
    /// The host name links will live on (not the default domain): two labels or more,
    /// the last not numeric; internationalized names are taken too and stored in ASCII.
    #[schema(
        max_length = 253,
        pattern = "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
    )]
    name: String,
    /// Names of the users who may create links on it (at most 1000); absent or `null`:
    /// every user.
    #[schema(max_items = 1000)]
    users: Option<Vec<String>>,
    /// Plain-HTTP requests for it get a 308 to its `https://` URL (when the proxy has a
    /// certificate for it); absent or `null`: the installation's `proxy.tls.redirect_http`.
    redirect_http: Option<bool>,
    /// `Strict-Transport-Security` max-age on its HTTPS answers (0: none; at most two
    /// years); absent or `null`: the installation's `proxy.tls.hsts_max_age_seconds`.
    #[schema(maximum = 63072000)]
    hsts_max_age_seconds: Option<u64>,
    /// Where visitors of its links go instead of a 410 (expired, used up or turned off)
    /// when a link has no fallback URL of its own: an absolute http(s) URL.
    #[schema(format = "uri")]
    fallback_url: Option<String>,
}

/// Body of `PATCH /api/v1/domains/{name}`: its HTTPS behaviour and fallback URL; an
/// absent field stays, `null` returns it to the installation's setting (or removes the
/// fallback URL).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchDomainRequest {
    /// Plain-HTTP requests get a 308 to `https://`; `null`: the installation's setting.
    #[serde(default, deserialize_with = "crate::links::double_option")]
    #[schema(value_type = Option<bool>)]
    redirect_http: Option<Option<bool>>,
    /// HSTS max-age (0: none; at most two years); `null`: the installation's setting.
    #[serde(default, deserialize_with = "crate::links::double_option")]
    #[schema(value_type = Option<u64>, maximum = 63072000)]
    hsts_max_age_seconds: Option<Option<u64>>,
    /// Where visitors of its links go instead of a 410; `null`: nowhere (the 410 page).
    #[serde(default, deserialize_with = "crate::links::double_option")]
    #[schema(value_type = Option<String>, format = "uri")]
    fallback_url: Option<Option<String>>,
}

/// A domain as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DomainView {
    /// The host name (normalized: lowercase, ASCII).
    name: String,
    /// User names allowed to use it, or `null` for everyone.
    users: Option<Vec<String>>,
    /// When the domain was registered (RFC 3339).
    #[schema(format = DateTime)]
    created_at: String,
    /// Whether plain-HTTP requests for it are sent to `https://`; `null`: the
    /// installation's setting.
    redirect_http: Option<bool>,
    /// Its HSTS max-age (0: none); `null`: the installation's setting.
    hsts_max_age_seconds: Option<u64>,
    /// Where visitors of its links go instead of a 410 when a link has none of its own.
    fallback_url: Option<String>,
    /// Its TLS certificate, when one is stored or being issued; `null` otherwise.
    certificate: Option<CertificateView>,
}

/// Where a domain's certificate stands.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertificateState {
    /// An order is under way.
    Ordering,
    /// Issued automatically; renewed before it runs out.
    Issued,
    /// The last order failed (see `detail`); retried at `next_attempt_at`.
    Failed,
    /// Imported by an operator (`shortlink cert import`); not renewed here.
    Stored,
}

/// A domain's TLS certificate: automatic issuance's state, or an imported certificate.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CertificateView {
    /// Where it stands.
    state: CertificateState,
    /// When the stored certificate expires (RFC 3339).
    #[schema(format = DateTime)]
    not_after: Option<String>,
    /// Why the last order failed, in the CA's words (shown to admins only).
    detail: Option<String>,
    /// Failed orders since the last success.
    failures: u32,
    /// When the next order may start (RFC 3339), after a failure.
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
}

/// The default domain: it needs no registration; its certificate is shown like a
/// registered domain's.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DefaultDomainView {
    /// The public URL's host.
    name: String,
    /// Its TLS certificate, when one is stored or being issued.
    certificate: Option<CertificateView>,
}

/// Answer of `GET /api/v1/domains`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DomainList {
    /// The default domain.
    default_domain: DefaultDomainView,
    /// The registered domains.
    items: Vec<DomainView>,
}

/// Every name's certificate as the store knows it: issuance records, and stored
/// certificates (imported ones have no record).
struct CertificateBook(HashMap<String, CertificateView>);

impl CertificateBook {
    async fn read(state: &AppState, admin: bool) -> Result<CertificateBook, ApiError> {
        let store = state.store();
        let mut book = HashMap::new();
        for cert in store.list_certificates().await? {
            book.insert(
                cert.name,
                CertificateView {
                    state: CertificateState::Stored,
                    not_after: Some(to_rfc3339(cert.not_after)),
                    detail: None,
                    failures: 0,
                    next_attempt_at: None,
                },
            );
        }
        for record in store.list_issuances().await? {
            let stored_expiry = book.get(&record.name).and_then(|c| c.not_after.clone());
            let state = match record.state {
                IssuanceState::Ordering => CertificateState::Ordering,
                IssuanceState::Issued => CertificateState::Issued,
                IssuanceState::Failed => CertificateState::Failed,
            };
            book.insert(
                record.name,
                CertificateView {
                    state,
                    // The certificate still served while a renewal is under way or failing.
                    not_after: record.not_after.map(to_rfc3339).or(stored_expiry),
                    detail: record.detail.filter(|_| admin),
                    failures: record.failures,
                    next_attempt_at: record.next_attempt_at.map(to_rfc3339),
                },
            );
        }
        Ok(CertificateBook(book))
    }

    fn of(&self, name: &str) -> Option<CertificateView> {
        self.0.get(name).cloned()
    }
}

async fn view(
    state: &AppState,
    domain: Domain,
    certificate: Option<CertificateView>,
) -> Result<DomainView, ApiError> {
    let users = match domain.users {
        None => None,
        Some(ids) => {
            let mut names = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(user) = state.store().get_user(id).await? {
                    names.push(user.name);
                }
            }
            Some(names)
        }
    };
    Ok(DomainView {
        name: domain.name,
        users,
        created_at: to_rfc3339(domain.created_at),
        redirect_http: domain.https.redirect_http,
        hsts_max_age_seconds: domain.https.hsts_max_age_seconds,
        fallback_url: domain.fallback_url,
        certificate,
    })
}

/// Links a domain's registration check reads per page.
const TARGETED_PAGE: usize = 500;

/// Refuses to register `name` while links point at it (their target or a targeting URL):
/// once registered, each of them would redirect to itself. A link created after the
/// registration is refused instead (`url_loops`).
async fn refuse_if_targeted(state: &AppState, name: &str) -> Result<(), ApiError> {
    let points_here = |url: &str| shortlink_core::target_host(url).is_some_and(|h| h == name);
    let mut query = ListQuery {
        limit: TARGETED_PAGE,
        before_id: None,
        tag: None,
        q: Some(name.to_owned()),
    };
    let mut codes = Vec::new();
    loop {
        let page = state.store().search_links(None, None, &query).await?;
        for link in &page.items {
            let targeted = link
                .targeting
                .as_ref()
                .is_some_and(|t| t.urls().any(points_here));
            if points_here(&link.url) || targeted {
                codes.push(format!("/{}", link.code.as_str()));
            }
        }
        match page.next_before_id {
            Some(before) => query.before_id = Some(before),
            None => break,
        }
    }
    if codes.is_empty() {
        return Ok(());
    }
    let count = codes.len();
    codes.truncate(5);
    Err(ApiError::new(
        ErrorCode::DomainTargeted,
        format!(
            "{count} link(s) point at '{name}' ({}{}); registering it would make them loop: \
             change them first, or allow the host in control.loop_allowed_hosts",
            codes.join(", "),
            if count > codes.len() { ", …" } else { "" }
        ),
    ))
}

fn domain_not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::DomainNotFound,
        format!("domain '{name}' is not registered"),
    )
}

api_errors!(CreateDomainErrors: AUTH, JSON_BODY, TARGET; InvalidDomain, InvalidUsers, UnknownUser, DomainTargeted, DomainExists);

/// `POST /api/v1/domains` (admin): 201 with the domain; 409 if registered already.
#[utoipa::path(
    post,
    path = "/api/v1/domains",
    tag = "domains",
    request_body = CreateDomainRequest,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "The registered domain.", body = DomainView,
         links(
            ("deleteDomain" = (operation_id = "delete_domain", parameters(("name" = "$response.body#/name")))),
         )),
        CreateDomainErrors,
    ),
)]
pub async fn create_domain(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateDomainRequest>,
) -> Result<(StatusCode, Json<DomainView>), ApiError> {
    caller.require_admin()?;
    state.check_write(&caller.key_hash)?;
    let name = validate_domain(&request.name)
        .map_err(|e| ApiError::new(ErrorCode::InvalidDomain, e.to_string()))?;
    if state.is_default_host(&name) {
        return Err(ApiError::new(
            ErrorCode::InvalidDomain,
            format!("'{name}' is the default domain; it needs no registration"),
        ));
    }
    let users = match request.users {
        None => None,
        Some(names) => {
            if names.len() > MAX_DOMAIN_USERS {
                return Err(ApiError::new(
                    ErrorCode::InvalidUsers,
                    format!("a domain may name at most {MAX_DOMAIN_USERS} users"),
                ));
            }
            let mut ids: Vec<UserId> = Vec::with_capacity(names.len());
            for name in &names {
                let user = state.store().user_by_name(name).await?.ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::UnknownUser,
                        format!("there is no user named '{name}'"),
                    )
                })?;
                if !ids.contains(&user.id) {
                    ids.push(user.id);
                }
            }
            Some(ids)
        }
    };
    if !state.rules().loop_allowed(&name) {
        refuse_if_targeted(&state, &name).await?;
    }
    let https = DomainHttps {
        redirect_http: request.redirect_http,
        hsts_max_age_seconds: request.hsts_max_age_seconds,
    };
    check_hsts(https.hsts_max_age_seconds)?;
    let fallback_url = match request.fallback_url.as_deref() {
        Some(url) => Some(checked_target(&state, url).await?),
        None => None,
    };
    let domain = Domain {
        name,
        users,
        created_at: now_unix(),
        https,
        fallback_url,
    };
    state.store().create_domain(domain.clone()).await?;
    Ok((StatusCode::CREATED, Json(view(&state, domain, None).await?)))
}

api_errors!(ListDomainsErrors: AUTH; );

/// `GET /api/v1/domains`: every domain for an admin; the ones the caller may use otherwise.
#[utoipa::path(
    get,
    path = "/api/v1/domains",
    tag = "domains",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The domains the caller may see.", body = DomainList), ListDomainsErrors),
)]
pub async fn list_domains(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<DomainList>, ApiError> {
    let admin = caller.require_admin().is_ok();
    let book = CertificateBook::read(&state, admin).await?;
    let mut items = Vec::new();
    for domain in state.store().list_domains().await? {
        if admin || domain.allows(caller.user.id) {
            let certificate = book.of(&domain.name);
            items.push(view(&state, domain, certificate).await?);
        }
    }
    let name = state.default_host().to_owned();
    let default_domain = DefaultDomainView {
        certificate: book.of(&name),
        name,
    };
    Ok(Json(DomainList {
        default_domain,
        items,
    }))
}

/// Refuses an HSTS max-age over two years.
fn check_hsts(max_age: Option<u64>) -> Result<(), ApiError> {
    match max_age {
        Some(max_age) if max_age > MAX_HSTS_MAX_AGE => Err(ApiError::new(
            ErrorCode::InvalidDomain,
            format!("hsts_max_age_seconds may be at most {MAX_HSTS_MAX_AGE} (two years)"),
        )),
        _ => Ok(()),
    }
}

api_errors!(PatchDomainErrors: AUTH, JSON_BODY, TARGET; InvalidDomain, DomainNotFound);

/// `PATCH /api/v1/domains/{name}` (admin): changes its HTTPS behaviour or fallback URL;
/// 200 with the domain. Proxies apply it at their next poll of the domains.
#[utoipa::path(
    patch,
    path = "/api/v1/domains/{name}",
    tag = "domains",
    params(("name" = String, Path, description = "The domain's host name.")),
    request_body = PatchDomainRequest,
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The changed domain.", body = DomainView), PatchDomainErrors),
)]
pub async fn update_domain(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<PatchDomainRequest>,
) -> Result<Json<DomainView>, ApiError> {
    caller.require_admin()?;
    state.check_write(&caller.key_hash)?;
    let normalized = validate_domain(&name).map_err(|_| domain_not_found(&name))?;
    let store = state.store();
    let mut domain = store
        .get_domain(&normalized)
        .await?
        .ok_or_else(|| domain_not_found(&name))?;
    if let Some(redirect_http) = request.redirect_http {
        domain.https.redirect_http = redirect_http;
    }
    if let Some(max_age) = request.hsts_max_age_seconds {
        check_hsts(max_age)?;
        domain.https.hsts_max_age_seconds = max_age;
    }
    let fallback = match request.fallback_url {
        Some(Some(url)) => Some(Some(checked_target(&state, &url).await?)),
        Some(None) => Some(None),
        None => None,
    };
    if !store.set_domain_https(&normalized, domain.https).await? {
        return Err(domain_not_found(&name));
    }
    if let Some(fallback) = fallback {
        if !store
            .set_domain_fallback(&normalized, fallback.clone())
            .await?
        {
            return Err(domain_not_found(&name));
        }
        domain.fallback_url = fallback;
    }
    let book = CertificateBook::read(&state, true).await?;
    let certificate = book.of(&domain.name);
    Ok(Json(view(&state, domain, certificate).await?))
}

api_errors!(DeleteDomainErrors: AUTH; DomainNotFound);

/// `DELETE /api/v1/domains/{name}` (admin): 204. The domain's links stay stored and
/// answer again if it is registered anew.
#[utoipa::path(
    delete,
    path = "/api/v1/domains/{name}",
    tag = "domains",
    params(("name" = String, Path, description = "The domain's host name.")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 204, description = "The domain is no longer registered."), DeleteDomainErrors),
)]
pub async fn delete_domain(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    state.check_write(&caller.key_hash)?;
    let normalized = validate_domain(&name).map_err(|_| domain_not_found(&name))?;
    if state.store().delete_domain(&normalized).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(domain_not_found(&name))
    }
}

/// The domain a link request names: the default (empty) when absent or the default host;
/// else a registered domain the caller may use.
pub(crate) async fn resolve_domain(
    state: &AppState,
    caller_id: UserId,
    requested: Option<&str>,
) -> Result<String, ApiError> {
    let Some(requested) = requested.map(str::trim).filter(|d| !d.is_empty()) else {
        return Ok(String::new());
    };
    let unknown = || {
        ApiError::new(
            ErrorCode::UnknownDomain,
            format!("domain '{requested}' is not registered"),
        )
    };
    if state.is_default_host(requested) {
        return Ok(String::new());
    }
    let name = validate_domain(requested).map_err(|_| unknown())?;
    match state.store().get_domain(&name).await? {
        Some(domain) if domain.allows(caller_id) => Ok(domain.name),
        Some(_) => Err(ApiError::forbidden(format!(
            "you may not create links on domain '{name}'"
        ))),
        None => Err(unknown()),
    }
}
