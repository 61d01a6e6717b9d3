//! Links: what a short code points at, and the options that decide how it redirects.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{ShortCode, Targeting, UserId};

/// A link's numeric id, assigned by the store; stable for the link's life.
pub type LinkId = i64;

/// Most tags one link may carry.
pub const MAX_TAGS: usize = 16;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 32;

/// The HTTP status a link redirects with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub enum RedirectStatus {
    /// 301 Moved Permanently: the default, cacheable for 90 s by the browser only.
    #[default]
    Permanent,
    /// 302 Found: not cached.
    Found,
    /// 307 Temporary Redirect: not cached, method kept.
    Temporary,
    /// 308 Permanent Redirect: method kept, cached like 301.
    PermanentKeepMethod,
}

impl RedirectStatus {
    /// Every status a link may use.
    pub const ALL: [RedirectStatus; 4] = [
        RedirectStatus::Permanent,
        RedirectStatus::Found,
        RedirectStatus::Temporary,
        RedirectStatus::PermanentKeepMethod,
    ];

    /// The numeric status.
    pub fn as_u16(self) -> u16 {
        match self {
            RedirectStatus::Permanent => 301,
            RedirectStatus::Found => 302,
            RedirectStatus::Temporary => 307,
            RedirectStatus::PermanentKeepMethod => 308,
        }
    }

    /// The `Cache-Control` value sent with this redirect.
    ///
    /// Permanent redirects may be cached briefly and only privately, so a change
    /// to the link reaches browsers within 90 s; temporary ones are never stored.
    pub fn cache_control(self) -> &'static str {
        match self {
            RedirectStatus::Permanent | RedirectStatus::PermanentKeepMethod => {
                "private, max-age=90"
            }
            RedirectStatus::Found | RedirectStatus::Temporary => "no-store",
        }
    }
}

impl TryFrom<u16> for RedirectStatus {
    type Error = String;

    fn try_from(value: u16) -> Result<Self, Self::Error> {
        match value {
            301 => Ok(RedirectStatus::Permanent),
            302 => Ok(RedirectStatus::Found),
            307 => Ok(RedirectStatus::Temporary),
            308 => Ok(RedirectStatus::PermanentKeepMethod),
            other => Err(format!(
                "redirect must be one of 301, 302, 307, 308 (got {other})"
            )),
        }
    }
}

impl From<RedirectStatus> for u16 {
    fn from(value: RedirectStatus) -> u16 {
        value.as_u16()
    }
}

/// A stored link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Store-assigned id.
    pub id: LinkId,
    /// The custom domain it lives on, or empty for the default domain.
    pub domain: String,
    /// Its short code, unique per domain.
    pub code: ShortCode,
    /// Whether the code was chosen by the user rather than generated.
    pub custom_alias: bool,
    /// The owning user.
    pub owner: UserId,
    /// The normalized target URL.
    pub url: String,
    /// The redirect status.
    pub redirect: RedirectStatus,
    /// After this Unix second the link answers 410.
    pub expires_at: Option<i64>,
    /// After this many clicks the link answers 410.
    pub max_clicks: Option<u64>,
    /// Clicks counted so far.
    pub clicks: u64,
    /// Free-form labels for filtering.
    pub tags: Vec<String>,
    /// A disabled link answers 410.
    pub disabled: bool,
    /// The argon2 hash (PHC string) of the link's password; visitors must enter it first.
    pub password_hash: Option<String>,
    /// Alternative targets per device class and country.
    pub targeting: Option<Targeting>,
    /// Why an admin disabled the link; while set, the owner cannot turn it back on.
    pub moderation: Option<String>,
    /// Where visitors go instead of a 410 once the link is expired, used up or turned off
    /// by its owner (not while an admin has disabled it).
    pub fallback_url: Option<String>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Last change, Unix seconds.
    pub updated_at: i64,
}

/// Whether a link redirects right now, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteState {
    /// Redirects.
    Live,
    /// Past `expires_at`.
    Expired,
    /// Turned off by its owner.
    Disabled,
    /// `max_clicks` reached.
    Exhausted,
}

impl RouteState {
    /// The state of a link with these properties at `now` after `clicks` clicks.
    pub fn evaluate(
        disabled: bool,
        expires_at: Option<i64>,
        max_clicks: Option<u64>,
        clicks: u64,
        now: i64,
    ) -> RouteState {
        if disabled {
            RouteState::Disabled
        } else if expires_at.is_some_and(|t| now >= t) {
            RouteState::Expired
        } else if max_clicks.is_some_and(|m| clicks >= m) {
            RouteState::Exhausted
        } else {
            RouteState::Live
        }
    }

    /// The name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteState::Live => "live",
            RouteState::Expired => "expired",
            RouteState::Disabled => "disabled",
            RouteState::Exhausted => "exhausted",
        }
    }
}

impl Link {
    /// Whether the link redirects at `now`.
    pub fn state(&self, now: i64) -> RouteState {
        RouteState::evaluate(
            self.disabled,
            self.expires_at,
            self.max_clicks,
            self.clicks,
            now,
        )
    }

    /// Whether the link carries no options: the kind a repeated plain request deduplicates to.
    pub fn is_plain(&self) -> bool {
        !self.custom_alias
            && self.expires_at.is_none()
            && self.max_clicks.is_none()
            && self.redirect == RedirectStatus::Permanent
            && self.tags.is_empty()
            && !self.disabled
            && self.password_hash.is_none()
            && self.targeting.is_none()
            && self.fallback_url.is_none()
    }
}

/// A link to create. The code is already chosen (alias or generated attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLink {
    /// Custom domain or empty for the default.
    pub domain: String,
    /// The code to claim.
    pub code: ShortCode,
    /// Whether `code` is a user-chosen alias.
    pub custom_alias: bool,
    /// The owning user.
    pub owner: UserId,
    /// The normalized target URL.
    pub url: String,
    /// The redirect status.
    pub redirect: RedirectStatus,
    /// Expiry, Unix seconds.
    pub expires_at: Option<i64>,
    /// Click limit.
    pub max_clicks: Option<u64>,
    /// Validated tags.
    pub tags: Vec<String>,
    /// The password's argon2 hash, for a protected link.
    pub password_hash: Option<String>,
    /// Validated targeting rules.
    pub targeting: Option<Targeting>,
    /// Validated fallback URL (see [`Link::fallback_url`]).
    pub fallback_url: Option<String>,
}

impl NewLink {
    /// A plain link of `owner`'s to `url` on the default domain: a 301 with nothing else
    /// set, its code left empty for the creation path to choose (alias or generated).
    pub fn new(owner: UserId, url: String) -> NewLink {
        NewLink {
            domain: String::new(),
            code: ShortCode::from_stored(String::new()),
            custom_alias: false,
            owner,
            url,
            redirect: RedirectStatus::default(),
            expires_at: None,
            max_clicks: None,
            tags: Vec::new(),
            password_hash: None,
            targeting: None,
            fallback_url: None,
        }
    }

    /// The link as stored under `id`, created (and last changed) at `now`, with no clicks.
    pub fn into_link(self, id: LinkId, now: i64) -> Link {
        Link {
            id,
            domain: self.domain,
            code: self.code,
            custom_alias: self.custom_alias,
            owner: self.owner,
            url: self.url,
            redirect: self.redirect,
            expires_at: self.expires_at,
            max_clicks: self.max_clicks,
            clicks: 0,
            tags: self.tags,
            disabled: false,
            password_hash: self.password_hash,
            targeting: self.targeting,
            moderation: None,
            fallback_url: self.fallback_url,
            created_at: now,
            updated_at: now,
        }
    }
}

impl NewLink {
    /// Whether this link carries no options, so an existing plain link with the same URL
    /// may be returned instead of creating another.
    pub fn is_plain(&self) -> bool {
        !self.custom_alias
            && self.expires_at.is_none()
            && self.max_clicks.is_none()
            && self.redirect == RedirectStatus::Permanent
            && self.tags.is_empty()
            && self.password_hash.is_none()
            && self.targeting.is_none()
            && self.fallback_url.is_none()
    }
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkPatch {
    /// New normalized target URL.
    pub url: Option<String>,
    /// New expiry (`Some(None)` clears it).
    pub expires_at: Option<Option<i64>>,
    /// New click limit (`Some(None)` clears it).
    pub max_clicks: Option<Option<u64>>,
    /// New redirect status.
    pub redirect: Option<RedirectStatus>,
    /// New tag set (replaces the old one).
    pub tags: Option<Vec<String>>,
    /// Turn the link off or on.
    pub disabled: Option<bool>,
    /// New password hash (`Some(None)` removes the password).
    pub password_hash: Option<Option<String>>,
    /// New targeting rules (`Some(None)` removes them).
    pub targeting: Option<Option<Targeting>>,
    /// An admin's moderation: `Some(Some(reason))` disables the link for that reason,
    /// `Some(None)` lifts it.
    pub moderation: Option<Option<String>>,
    /// New fallback URL (`Some(None)` removes it).
    pub fallback_url: Option<Option<String>>,
}

impl LinkPatch {
    /// Applies the patch to `link` in place.
    pub fn apply_to(&self, link: &mut Link) {
        if let Some(url) = &self.url {
            link.url = url.clone();
        }
        if let Some(expires_at) = self.expires_at {
            link.expires_at = expires_at;
        }
        if let Some(max_clicks) = self.max_clicks {
            link.max_clicks = max_clicks;
        }
        if let Some(redirect) = self.redirect {
            link.redirect = redirect;
        }
        if let Some(tags) = &self.tags {
            link.tags = tags.clone();
        }
        if let Some(disabled) = self.disabled {
            link.disabled = disabled;
        }
        if let Some(hash) = &self.password_hash {
            link.password_hash = hash.clone();
        }
        if let Some(targeting) = &self.targeting {
            link.targeting = targeting.clone();
        }
        if let Some(moderation) = &self.moderation {
            link.disabled = moderation.is_some();
            link.moderation = moderation.clone();
        }
        if let Some(fallback) = &self.fallback_url {
            link.fallback_url = fallback.clone();
        }
    }
}

/// A validated tag.
pub struct Tag;

/// Why a tag list was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TagError {
    /// More than [`MAX_TAGS`] tags.
    #[error("a link may have at most {MAX_TAGS} tags")]
    TooMany,
    /// A tag that is empty, too long, or has characters outside letters, digits, `-_.:`.
    #[error("tag '{0}' must be 1 to {MAX_TAG_LEN} letters, digits or '-', '_', '.', ':'")]
    Invalid(String),
}

impl Tag {
    /// Validates tags, trims them and removes duplicates while keeping their order.
    pub fn validate_all(tags: &[String]) -> Result<Vec<String>, TagError> {
        if tags.len() > MAX_TAGS {
            return Err(TagError::TooMany);
        }
        let mut out: Vec<String> = Vec::with_capacity(tags.len());
        for tag in tags {
            let tag = tag.trim();
            let ok = !tag.is_empty()
                && tag.len() <= MAX_TAG_LEN
                && tag
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
            if !ok {
                return Err(TagError::Invalid(tag.to_owned()));
            }
            if !out.iter().any(|t| t == tag) {
                out.push(tag.to_owned());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_status_round_trips_and_rejects_others() {
        for code in [301u16, 302, 307, 308] {
            assert_eq!(RedirectStatus::try_from(code).unwrap().as_u16(), code);
        }
        assert!(RedirectStatus::try_from(200).is_err());
        assert!(RedirectStatus::try_from(303).is_err());
        assert_eq!(
            RedirectStatus::Permanent.cache_control(),
            "private, max-age=90"
        );
        assert_eq!(RedirectStatus::Found.cache_control(), "no-store");
        assert_eq!(RedirectStatus::Temporary.cache_control(), "no-store");
    }

    #[test]
    fn state_precedence() {
        use RouteState::*;
        assert_eq!(RouteState::evaluate(false, None, None, 0, 10), Live);
        assert_eq!(
            RouteState::evaluate(true, Some(5), Some(1), 9, 10),
            Disabled
        );
        assert_eq!(RouteState::evaluate(false, Some(10), None, 0, 10), Expired);
        assert_eq!(RouteState::evaluate(false, Some(11), None, 0, 10), Live);
        assert_eq!(RouteState::evaluate(false, None, Some(3), 3, 10), Exhausted);
        assert_eq!(RouteState::evaluate(false, None, Some(3), 2, 10), Live);
    }

    #[test]
    fn tags() {
        let ok = Tag::validate_all(&[" news ".into(), "a:b".into(), "news".into()]).unwrap();
        assert_eq!(ok, vec!["news".to_owned(), "a:b".to_owned()]);
        assert_eq!(
            Tag::validate_all(&["".into()]),
            Err(TagError::Invalid(String::new()))
        );
        assert!(Tag::validate_all(&["a b".into()]).is_err());
        assert!(Tag::validate_all(&["x".repeat(33)]).is_err());
        let many: Vec<String> = (0..17).map(|i| i.to_string()).collect();
        assert_eq!(Tag::validate_all(&many), Err(TagError::TooMany));
    }
}
