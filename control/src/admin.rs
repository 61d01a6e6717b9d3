//! Admin endpoints: users, moderation of anyone's links, and the audit log. Every
//! change made here is recorded in the audit log.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shortlink_core::time_util::to_rfc3339;
use shortlink_core::{Link, LinkPatch, Role, User, UserId};
use shortlink_store::ListQuery;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery};
use crate::links::{LinkView, link_domain};
use crate::openapi::api_errors;
use crate::state::AppState;

/// Longest user name.
const MAX_NAME_LEN: usize = 64;

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// The unique user name: 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    name: String,
    /// `admin` or `user` (default `user`).
    #[serde(default = "default_role")]
    #[schema(default = "user", pattern = "^(admin|user)$")]
    role: String,
}

fn default_role() -> String {
    "user".into()
}

/// A user as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// The user's numeric id.
    #[schema(value_type = i64)]
    id: UserId,
    /// The unique user name.
    name: String,
    /// `admin` or `user`.
    role: Role,
    /// When the user was made (RFC 3339).
    #[schema(format = DateTime)]
    created_at: String,
    /// Whether the user is disabled (their keys and sessions are refused).
    disabled: bool,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        UserView {
            id: user.id,
            name: user.name,
            role: user.role,
            created_at: to_rfc3339(user.created_at),
            disabled: user.disabled,
        }
    }
}

/// Checks a user name: 1–64 letters, digits, `.`, `_`, `-`, `@`.
pub fn validate_user_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidName,
            format!("name must be 1 to {MAX_NAME_LEN} letters, digits or '.', '_', '-', '@'"),
        ))
    }
}

api_errors!(CreateUserErrors: AUTH, JSON_BODY; InvalidName, InvalidRole, UserExists);

/// `POST /api/v1/users` (admin): 201 with the user.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "accounts",
    request_body = CreateUserRequest,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "The new user.", body = UserView,
         links(
            ("patchUser" = (operation_id = "patch_user", parameters(("name" = "$response.body#/name")))),
         )),
        CreateUserErrors,
    ),
)]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    caller.require_admin()?;
    state.check_write(&caller.key_hash)?;
    validate_user_name(&request.name)?;
    let role = Role::parse(&request.role)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidRole, "role must be 'admin' or 'user'"))?;
    let user = state.store().create_user(&request.name, role).await?;
    state
        .audit(caller.user.id, "user.create", &user.name, role.as_str())
        .await;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Answer of `GET /api/v1/users`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserList {
    /// Every user.
    items: Vec<UserView>,
}

api_errors!(ListUsersErrors: AUTH; );

/// `GET /api/v1/users` (admin): every user.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "accounts",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "Every user.", body = UserList), ListUsersErrors),
)]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<UserList>, ApiError> {
    caller.require_admin()?;
    let users = state.store().list_users().await?;
    Ok(Json(UserList {
        items: users.into_iter().map(UserView::from).collect(),
    }))
}

/// Body of `PATCH /api/v1/users/{name}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUserRequest {
    /// Disable (their keys and sessions stop working at once; their links keep
    /// redirecting) or enable again.
    disabled: Option<bool>,
    /// A new sign-in password (1 to 256 bytes), stored as an argon2id hash.
    #[schema(min_length = 1)]
    password: Option<String>,
}

/// The name of user `id` among `users` (empty if it is not there).
pub(crate) fn name_of(users: &[User], id: UserId) -> String {
    users
        .iter()
        .find(|u| u.id == id)
        .map(|u| u.name.clone())
        .unwrap_or_default()
}

fn user_not_found() -> ApiError {
    ApiError::new(ErrorCode::UserNotFound, "no such user")
}

api_errors!(PatchUserErrors: AUTH, JSON_BODY; UserNotFound, CannotDisableSelf, InvalidPassword, Busy);

/// `PATCH /api/v1/users/{name}` (admin): `{disabled}`.
#[utoipa::path(
    patch,
    path = "/api/v1/users/{name}",
    tag = "accounts",
    params(("name" = String, Path, description = "The user's name.")),
    request_body = PatchUserRequest,
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The user as changed.", body = UserView), PatchUserErrors),
)]
pub async fn patch_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<PatchUserRequest>,
) -> Result<Json<UserView>, ApiError> {
    caller.require_admin()?;
    state.check_write(&caller.key_hash)?;
    let user = state
        .store()
        .user_by_name(&name)
        .await?
        .ok_or_else(user_not_found)?;
    if request.disabled == Some(true) && user.id == caller.user.id {
        return Err(ApiError::new(
            ErrorCode::CannotDisableSelf,
            "an admin cannot disable their own account",
        ));
    }
    if let Some(password) = request.password {
        let hash = crate::protected::hash_password(state.password_guard(), password).await?;
        if !state.store().set_user_password(user.id, Some(hash)).await? {
            return Err(user_not_found());
        }
        state
            .audit(caller.user.id, "user.password", &user.name, "")
            .await;
    }
    let mut user = user;
    if let Some(disabled) = request.disabled {
        if !state.store().set_user_disabled(user.id, disabled).await? {
            return Err(user_not_found());
        }
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        state.audit(caller.user.id, action, &user.name, "").await;
        user.disabled = disabled;
    }
    Ok(Json(UserView::from(user)))
}

/// Query of `GET /api/v1/admin/links`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Text in the URL or the code (case-insensitive).
    q: Option<String>,
    /// The owner's user name.
    owner: Option<String>,
    /// A custom domain (default: every domain).
    domain: Option<String>,
    /// Links per page (default 20, at most the configured maximum, 100 by default).
    #[param(minimum = 1)]
    limit: Option<usize>,
    /// The `next_cursor` of the page before (empty: the first page).
    #[param(pattern = "^[0-9]{0,18}$")]
    cursor: Option<String>,
}

/// A link as moderators see it: with its owner.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModeratedLinkView {
    /// The owner's user name.
    owner: String,
    /// The link.
    #[serde(flatten)]
    link: LinkView,
}

/// Answer of `GET /api/v1/admin/links`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    /// The links, newest first.
    items: Vec<ModeratedLinkView>,
    /// The cursor of the next page; `null` on the last.
    next_cursor: Option<String>,
}

api_errors!(SearchLinksErrors: AUTH, QUERY; InvalidLimit, InvalidCursor, UserNotFound);

/// `GET /api/v1/admin/links` (admin): every user's links, newest first, filtered.
#[utoipa::path(
    get,
    path = "/api/v1/admin/links",
    tag = "admin",
    params(SearchParams),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "A page of every user's links.", body = SearchResponse), SearchLinksErrors),
)]
pub async fn search_links(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Json<SearchResponse>, ApiError> {
    caller.require_admin()?;
    let limit = crate::links::page_limit(&state, params.limit)?;
    let users = state.store().list_users().await?;
    let owner = match params.owner.as_deref().filter(|o| !o.is_empty()) {
        Some(name) => Some(
            users
                .iter()
                .find(|u| u.name == name)
                .ok_or_else(user_not_found)?
                .id,
        ),
        None => None,
    };
    let domain = params
        .domain
        .as_deref()
        .filter(|d| !d.is_empty())
        .map(|d| link_domain(&state, Some(d)));
    let query = ListQuery {
        limit,
        before_id: params
            .cursor
            .as_deref()
            .map(crate::links::decode_cursor)
            .transpose()?
            .flatten(),
        tag: None,
        q: params.q.filter(|q| !q.is_empty()),
    };
    let page = state
        .store()
        .search_links(owner, domain.as_deref(), &query)
        .await?;
    let name_of = |id: UserId| crate::admin::name_of(&users, id);
    Ok(Json(SearchResponse {
        items: page
            .items
            .into_iter()
            .map(|link| ModeratedLinkView {
                owner: name_of(link.owner),
                link: LinkView::new(&state, link),
            })
            .collect(),
        next_cursor: page.next_before_id.map(crate::links::encode_cursor),
    }))
}

/// Query naming a link's domain (default: the default domain).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LinkParams {
    /// The link's custom domain (absent: the default domain).
    domain: Option<String>,
}

/// Body of `POST /api/v1/admin/links/{code}/disable`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableRequest {
    /// Why, for the owner and the audit log (1 to 500 bytes, surrounding whitespace
    /// trimmed).
    #[schema(min_length = 1, pattern = "\\S")]
    reason: String,
}

/// Longest moderation reason, in bytes.
const MAX_REASON_BYTES: usize = 500;

async fn any_link(state: &AppState, domain: &str, code: &str) -> Result<Link, ApiError> {
    state
        .store()
        .get_link(domain, code)
        .await?
        .ok_or_else(ApiError::link_not_found)
}

async fn moderate(
    state: &AppState,
    caller: &Caller,
    code: &str,
    params: LinkParams,
    reason: Option<String>,
) -> Result<Json<LinkView>, ApiError> {
    caller.require_admin()?;
    state.check_write(&caller.key_hash)?;
    let domain = link_domain(state, params.domain.as_deref());
    let link = any_link(state, &domain, code).await?;
    let patch = LinkPatch {
        moderation: Some(reason.clone()),
        ..LinkPatch::default()
    };
    let updated = state
        .store()
        .update_link(link.owner, &domain, code, patch)
        .await?
        .ok_or_else(ApiError::link_not_found)?;
    let target = format!("{domain}/{code}");
    match &reason {
        Some(reason) => state.audit(caller.user.id, "link.disable", &target, reason),
        None => state.audit(caller.user.id, "link.enable", &target, ""),
    }
    .await;
    let view = LinkView::new(state, updated);
    state
        .notify(link.owner, shortlink_core::EventKind::LinkUpdated, &view)
        .await;
    Ok(Json(view))
}

api_errors!(DisableLinkErrors: AUTH, QUERY, JSON_BODY; InvalidReason, NotFound);

/// `POST /api/v1/admin/links/{code}/disable` (admin): disables anyone's link with a
/// reason; visitors get the 410 page and the owner cannot turn it back on.
#[utoipa::path(
    post,
    path = "/api/v1/admin/links/{code}/disable",
    tag = "admin",
    params(("code" = String, Path, description = "The link's short code."), LinkParams),
    request_body = DisableRequest,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The link, disabled by an admin.", body = LinkView,
         links(
            ("enableLink" = (operation_id = "enable_link", parameters(("code" = "$response.body#/code")))),
         )),
        DisableLinkErrors,
    ),
)]
pub async fn disable_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    ApiQuery(params): ApiQuery<LinkParams>,
    ApiJson(request): ApiJson<DisableRequest>,
) -> Result<Json<LinkView>, ApiError> {
    let reason = request.reason.trim().to_owned();
    if reason.is_empty() || reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidReason,
            format!("reason must be 1 to {MAX_REASON_BYTES} bytes"),
        ));
    }
    moderate(&state, &caller, &code, params, Some(reason)).await
}

api_errors!(EnableLinkErrors: AUTH, QUERY; NotFound);

/// `POST /api/v1/admin/links/{code}/enable` (admin): lifts a moderation.
#[utoipa::path(
    post,
    path = "/api/v1/admin/links/{code}/enable",
    tag = "admin",
    params(("code" = String, Path, description = "The link's short code."), LinkParams),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The link, no longer moderated.", body = LinkView), EnableLinkErrors),
)]
pub async fn enable_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    ApiQuery(params): ApiQuery<LinkParams>,
) -> Result<Json<LinkView>, ApiError> {
    moderate(&state, &caller, &code, params, None).await
}

api_errors!(AdminDeleteLinkErrors: AUTH, QUERY; NotFound);

/// `DELETE /api/v1/admin/links/{code}` (admin): deletes anyone's link; 204.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/links/{code}",
    operation_id = "admin_delete_link",
    tag = "admin",
    params(("code" = String, Path, description = "The link's short code."), LinkParams),
    security(("api_key" = []), ("session" = [])),
    responses((status = 204, description = "The link is gone."), AdminDeleteLinkErrors),
)]
pub async fn delete_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    ApiQuery(params): ApiQuery<LinkParams>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    state.check_write(&caller.key_hash)?;
    let domain = link_domain(&state, params.domain.as_deref());
    let link = any_link(&state, &domain, &code).await?;
    if !state
        .store()
        .delete_link(link.owner, &domain, &code)
        .await?
    {
        return Err(ApiError::link_not_found());
    }
    state
        .audit(
            caller.user.id,
            "link.delete",
            &format!("{domain}/{code}"),
            &link.url,
        )
        .await;
    crate::links::notify_deleted(&state, link.owner, &domain, &code).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Audit entries per page when `limit` is not given.
const AUDIT_PAGE: usize = 50;

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Entries older than this id (the previous page's `next_before`).
    before: Option<i64>,
    /// Entries per page (default 50, at most the configured maximum, 100 by default).
    #[param(minimum = 1)]
    limit: Option<usize>,
}

/// An audit entry as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    /// The entry's id (later entries have larger ids).
    id: i64,
    /// When the action happened (RFC 3339).
    #[schema(format = DateTime)]
    at: String,
    /// The id of the user who acted.
    #[schema(value_type = i64)]
    actor_id: UserId,
    /// The name of the user who acted (empty if the user is gone).
    actor: String,
    /// What was done, e.g. `user.create`, `key.revoke`, `link.disable`.
    action: String,
    /// What it was done to: a user name, a key id, or `domain/code` of a link.
    target: String,
    /// More about the action (may be empty).
    detail: String,
}

/// Answer of `GET /api/v1/audit`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditList {
    /// The entries, newest first.
    items: Vec<AuditView>,
    /// The `before` of the next page; `null` when this page was not full.
    next_before: Option<i64>,
}

api_errors!(ListAuditErrors: AUTH, QUERY; InvalidLimit);

/// `GET /api/v1/audit` (admin): the audit log, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "admin",
    params(AuditParams),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "A page of the audit log.", body = AuditList), ListAuditErrors),
)]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditList>, ApiError> {
    caller.require_admin()?;
    let max = state.config().max_page_size;
    let limit = params.limit.unwrap_or(AUDIT_PAGE.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::new(
            ErrorCode::InvalidLimit,
            format!("limit must be between 1 and {max}"),
        ));
    }
    let entries = state.store().list_audit(params.before, limit).await?;
    let users = state.store().list_users().await?;
    let next_before = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditList {
        items: entries
            .into_iter()
            .map(|e| AuditView {
                id: e.id,
                at: to_rfc3339(e.at),
                actor_id: e.entry.actor,
                actor: name_of(&users, e.entry.actor),
                action: e.entry.action,
                target: e.entry.target,
                detail: e.entry.detail,
            })
            .collect(),
        next_before,
    }))
}
