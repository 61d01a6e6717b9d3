//! Users and their roles. API keys are stored only as hashes; see `shortlink-store`.

use serde::{Deserialize, Serialize};

/// A user's numeric id.
pub type UserId = i64;

/// What a user may do: admins manage users and keys, users manage their own links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May create users and API keys, and everything a user may do.
    Admin,
    /// May manage their own links.
    User,
}

impl Role {
    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    /// Parses a stored or requested role name.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// A person or program that owns links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Store-assigned id.
    pub id: UserId,
    /// Unique, human-chosen name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// A disabled user's keys and sessions are refused; their links keep redirecting.
    pub disabled: bool,
}

/// Length of the SHA-256 digest under which API keys are stored.
pub const KEY_HASH_LEN: usize = 32;

/// The digest an API key is stored and looked up by. Keys are long random tokens,
/// so a fast hash is enough: there is nothing to brute-force that a slow hash would protect.
pub fn hash_api_key(key: &str) -> [u8; KEY_HASH_LEN] {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes()).into()
}

/// What an API key (or a session) may do. Every route names the scope it needs; a
/// key's scopes are fixed when it is made and never grow (rotation keeps them).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read what the user owns: links, stats, events, uploads, own keys.
    Read,
    /// Create, change and delete links (implies `read`).
    Links,
    /// Upload files (implies `read`).
    Uploads,
    /// Users, every key, domains, moderation and the audit log; only an admin's key
    /// may hold it (implies every other scope).
    Admin,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Links, Scope::Uploads, Scope::Admin];

    /// The scope's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Links => "links",
            Scope::Uploads => "uploads",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of scopes, stored as a small bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope at all.
    pub const NONE: Scopes = Scopes(0);

    /// Every scope a user of `role` may hold: what a key gets when none are asked for.
    pub fn full(role: Role) -> Scopes {
        let mut scopes = Scopes::from_iter([Scope::Read, Scope::Links, Scope::Uploads]);
        if role == Role::Admin {
            scopes = scopes.with(Scope::Admin);
        }
        scopes
    }

    /// The set with `scope` added.
    pub fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }

    /// Whether the set allows `scope`: `admin` allows everything, and every scope
    /// allows `read`.
    pub fn allows(self, scope: Scope) -> bool {
        let held = |s: Scope| self.0 & s.bit() != 0;
        held(Scope::Admin) || held(scope) || (scope == Scope::Read && self.0 != 0)
    }

    /// Whether every scope of `other` is allowed by this set.
    pub fn covers(self, other: Scopes) -> bool {
        other.iter().all(|s| self.allows(s))
    }

    /// The scopes in the set, in order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |s| self.0 & s.bit() != 0)
    }

    /// The stored form: one bit per scope.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The set from its stored form; unknown bits are dropped.
    pub fn from_bits(bits: u8) -> Scopes {
        Scopes(bits & 0b1111)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Scopes {
        iter.into_iter().fold(Scopes::NONE, Scopes::with)
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// A key's public id: the hex of the first 8 bytes of its hash. It names the key in
/// listings and revocations without revealing anything that would let one use it.
pub fn api_key_id(key_hash: &[u8; KEY_HASH_LEN]) -> String {
    key_hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The first bytes of a key's hash that [`api_key_id`] shows, back from the id.
pub fn api_key_id_bytes(id: &str) -> Option<[u8; 8]> {
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 8];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// An API key as stored (its text never is: only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// SHA-256 of the key.
    pub key_hash: [u8; KEY_HASH_LEN],
    /// The user it acts as.
    pub user_id: UserId,
    /// A note on what the key is for.
    pub label: String,
    /// The key's first characters (`sl_` and a few more), to recognise it by; empty for
    /// keys made before prefixes were kept.
    pub prefix: String,
    /// What it may do.
    pub scopes: Scopes,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// From this Unix second on the key is refused; `None`: never.
    pub expires_at: Option<i64>,
    /// When it last authenticated a request, Unix seconds (recorded at most once a minute).
    pub last_used_at: Option<i64>,
}

impl ApiKey {
    /// The key's public id ([`api_key_id`]).
    pub fn id(&self) -> String {
        api_key_id(&self.key_hash)
    }

    /// Whether the key is refused at `now` because it expired.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// A person's signed-in session (its token is a cookie; only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the session token.
    pub token_hash: [u8; KEY_HASH_LEN],
    /// Who signed in.
    pub user_id: UserId,
    /// When, Unix seconds.
    pub created_at: i64,
    /// From this Unix second on the session is refused.
    pub expires_at: i64,
    /// The browser's `User-Agent` when it signed in (cut short), to tell sessions apart.
    pub user_agent: String,
}

impl Session {
    /// The session's public id, like a key's ([`api_key_id`]).
    pub fn id(&self) -> String {
        api_key_id(&self.token_hash)
    }
}

/// An admin action to record in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// Who acted.
    pub actor: UserId,
    /// What was done, e.g. `key.revoke`, `user.disable`, `link.disable`.
    pub action: String,
    /// What it was done to, e.g. a key id, a user name, `domain/code`.
    pub target: String,
    /// More about it (a reason, the changed fields), free text; never a secret.
    pub detail: String,
}

/// A recorded admin action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the log; newer entries have larger ids.
    pub id: i64,
    /// When, Unix seconds.
    pub at: i64,
    /// What was recorded.
    pub entry: NewAuditEntry,
}

impl Scopes {
    /// A key's scopes as stored: keys made before scopes existed store none and act
    /// with every scope their user's role allows.
    pub fn from_stored(bits: u8, role: Role) -> Scopes {
        match Scopes::from_bits(bits) {
            Scopes::NONE => Scopes::full(role),
            scopes => scopes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_imply_read_and_admin_implies_all() {
        let read = Scopes::from_iter([Scope::Read]);
        assert!(read.allows(Scope::Read));
        assert!(!read.allows(Scope::Links));
        let links = Scopes::from_iter([Scope::Links]);
        assert!(links.allows(Scope::Read) && links.allows(Scope::Links));
        assert!(!links.allows(Scope::Uploads) && !links.allows(Scope::Admin));
        let admin = Scopes::from_iter([Scope::Admin]);
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));
        assert!(!Scopes::NONE.allows(Scope::Read));
        assert!(Scopes::full(Role::User).covers(links));
        assert!(!Scopes::full(Role::User).allows(Scope::Admin));
        assert!(Scopes::full(Role::Admin).allows(Scope::Admin));
        assert!(!links.covers(Scopes::full(Role::User)));
        assert_eq!(Scopes::from_bits(links.bits()), links);
        assert_eq!(
            serde_json::to_string(&Scopes::full(Role::User)).unwrap(),
            r#"["read","links","uploads"]"#
        );
    }

    #[test]
    fn key_ids_round_trip_and_reject_bad_text() {
        let hash = hash_api_key("sl_example");
        let id = api_key_id(&hash);
        assert_eq!(id.len(), 16);
        assert_eq!(api_key_id_bytes(&id).unwrap(), hash[..8]);
        for bad in ["", "abc", "zz00000000000000", "00000000000000000"] {
            assert!(api_key_id_bytes(bad).is_none(), "{bad}");
        }
    }
}
