//! Domain types for shortlink: links, short codes, accounts, and the rules that decide
//! what a valid target URL or alias is.
//!
//! This crate does no I/O and knows nothing of pingora, axum or any store.

pub mod account;
pub mod certificate;
pub mod click;
pub mod code;
pub mod domain;
pub mod event;
pub mod hop;
pub mod link;
pub mod pages;
pub mod setting;
pub mod target;
pub mod targeting;
pub mod time_util;
pub mod upload;
pub mod webhook;

pub use account::{
    ApiKey, AuditEntry, KEY_HASH_LEN, NewAuditEntry, Role, Scope, Scopes, Session, User, UserId,
    api_key_id, api_key_id_bytes, hash_api_key,
};
pub use certificate::{Issuance, IssuanceState, StoredCertificate};
pub use click::{
    AccountStats, ClickBatch, ClickEvent, EnrichedClick, Interval, KeyCount, LinkCount, LinkStats,
    QR_MARKER, QR_SOURCE, SeriesPoint, is_qr_scan,
};
pub use code::{AliasError, CodeGenerator, ShortCode, is_reserved, validate_alias};
pub use domain::{
    Domain, DomainError, DomainHttps, MAX_HSTS_MAX_AGE, is_valid_host_header, normalize_host,
    validate_domain,
};
pub use event::{Event, EventId, EventKind, EventRetention, LinkClicks, NewEvent};
pub use link::{Link, LinkId, LinkPatch, NewLink, RedirectStatus, RouteState, Tag, TagError};
pub use setting::{InvalidSetting, list_setting};
pub use target::{TargetError, TargetRules, target_host, validate_target};
pub use targeting::{DeviceClass, MAX_TARGETED_COUNTRIES, Targeting, TargetingError};
pub use upload::{
    MultipartPlan, THUMBNAIL_SIZES, Thumbnail, ThumbnailState, Upload, UploadState, is_inline_safe,
    is_thumbnailable, sanitize_filename, sniff_content_type,
};
pub use webhook::{
    DISABLED_FAILING, DeliveryOutcome, DeliveryRecord, DeliveryState, Webhook, delivery_id_ms,
    message_id, next_delivery_id,
};
