//! Notifications: the per-user event log that SSE, WebSocket and polling deliver.

use std::fmt;
use std::str::FromStr;

use crate::account::UserId;

/// Position of an event in the log: increasing in the order events were written, so a
/// client can resume after the last id it saw.
pub type EventId = i64;

/// What happened. Its wire name (`as_str`) is also its serde form, e.g. in the event
/// types a webhook asks for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub enum EventKind {
    /// A link was created.
    #[serde(rename = "link.created")]
    LinkCreated,
    /// A link was changed.
    #[serde(rename = "link.updated")]
    LinkUpdated,
    /// A link was deleted.
    #[serde(rename = "link.deleted")]
    LinkDeleted,
    /// A link was clicked; one event per link per ingested batch (a second of traffic at
    /// most), carrying the count.
    #[serde(rename = "link.clicked")]
    LinkClicked,
    /// An upload was stored.
    #[serde(rename = "upload.completed")]
    UploadCompleted,
    /// An upload's thumbnails exist.
    #[serde(rename = "upload.thumbnails_ready")]
    UploadThumbnailsReady,
    /// An upload was deleted: by its owner, or by the sweep once abandoned or expired.
    #[serde(rename = "upload.deleted")]
    UploadDeleted,
    /// A webhook endpoint was disabled after failing for the whole retry window.
    #[serde(rename = "webhook.disabled")]
    WebhookDisabled,
}

impl EventKind {
    /// Every kind, for tests and documentation.
    pub const ALL: [EventKind; 8] = [
        EventKind::LinkCreated,
        EventKind::LinkUpdated,
        EventKind::LinkDeleted,
        EventKind::LinkClicked,
        EventKind::UploadCompleted,
        EventKind::UploadThumbnailsReady,
        EventKind::UploadDeleted,
        EventKind::WebhookDisabled,
    ];

    /// The wire name, e.g. `link.created`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LinkCreated => "link.created",
            EventKind::LinkUpdated => "link.updated",
            EventKind::LinkDeleted => "link.deleted",
            EventKind::LinkClicked => "link.clicked",
            EventKind::UploadCompleted => "upload.completed",
            EventKind::UploadThumbnailsReady => "upload.thumbnails_ready",
            EventKind::UploadDeleted => "upload.deleted",
            EventKind::WebhookDisabled => "webhook.disabled",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not an event kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind '{0}'")]
pub struct UnknownEventKind(pub String);

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| UnknownEventKind(text.to_owned()))
    }
}

/// An event to append to a user's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Whose log.
    pub user_id: UserId,
    /// What happened.
    pub kind: EventKind,
    /// The payload: a JSON object, as text.
    pub data: String,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its position in the log.
    pub id: EventId,
    /// Whose log.
    pub user_id: UserId,
    /// What happened.
    pub kind: EventKind,
    /// When it was written, Unix milliseconds.
    pub at_ms: i64,
    /// The payload: a JSON object, as text.
    pub data: String,
}

impl Event {
    /// The event as the JSON object every transport sends:
    /// `{"id":…,"type":"link.created","at":"<RFC 3339>","data":{…}}`.
    pub fn to_json(&self) -> String {
        let at = crate::time_util::ms_to_rfc3339(self.at_ms);
        format!(
            r#"{{"id":{},"type":"{}","at":"{}","data":{}}}"#,
            self.id,
            self.kind.as_str(),
            at,
            if self.data.is_empty() {
                "{}"
            } else {
                &self.data
            }
        )
    }
}

/// The payload of a `link.clicked` event: the clicks one ingested batch held for a link.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LinkClicks {
    /// The link's code.
    pub code: String,
    /// The link's domain ("" for the default one).
    pub domain: String,
    /// Clicks counted.
    pub count: u64,
    /// How many of them were bots.
    pub bots: u64,
    /// Time of the first click, RFC 3339.
    pub from: String,
    /// Time of the last click, RFC 3339.
    pub to: String,
}

impl LinkClicks {
    /// The event for the link's owner.
    pub fn into_event(self, owner: UserId) -> NewEvent {
        NewEvent {
            user_id: owner,
            kind: EventKind::LinkClicked,
            data: serde_json::to_string(&self).unwrap_or_else(|_| "{}".into()),
        }
    }
}

/// How long events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRetention {
    /// Newest events kept per user.
    pub per_user: u64,
    /// Events older than this many seconds are dropped.
    pub max_age_secs: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                kind.as_str(),
                "serde name"
            );
        }
        assert!("link.exploded".parse::<EventKind>().is_err());
    }

    #[test]
    fn json_embeds_the_payload() {
        let event = Event {
            id: 7,
            user_id: 1,
            kind: EventKind::LinkCreated,
            at_ms: 1_900_000_000_123,
            data: r#"{"code":"abc"}"#.into(),
        };
        let value: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(value["id"], 7);
        assert_eq!(value["type"], "link.created");
        assert_eq!(value["at"], "2030-03-17T17:46:40.123Z");
        assert_eq!(value["data"]["code"], "abc");
    }
}
