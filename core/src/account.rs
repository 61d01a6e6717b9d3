//! Users and their roles. API keys are stored only as hashes; see `shortlink-store`.

use serde::{Deserialize, Serialize};

/// A user's numeric id.
pub type UserId = i64;

/// What a user may do: admins manage users and keys, users manage their own links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// Length of the SHA-256 digest under which API keys are stored.
pub const KEY_HASH_LEN: usize = 32;

/// The digest an API key is stored and looked up by. Keys are long random tokens,
/// so a fast hash is enough: there is nothing to brute-force that a slow hash would protect.
pub fn hash_api_key(key: &str) -> [u8; KEY_HASH_LEN] {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes()).into()
}
