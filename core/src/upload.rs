//! Uploaded files: their metadata, thumbnails, and the rules for names and types.

use serde::{Deserialize, Serialize};

use crate::account::UserId;

/// Widths (and heights: thumbnails fit in a square) of the thumbnails made for images.
pub const THUMBNAIL_SIZES: [u32; 3] = [150, 300, 800];

/// Where an upload is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    /// A presigned upload was handed out; the bytes are not confirmed yet.
    Pending,
    /// The object is stored and verified.
    Complete,
}

impl UploadState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Pending => "pending",
            UploadState::Complete => "complete",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<UploadState> {
        match text {
            "pending" => Some(UploadState::Pending),
            "complete" => Some(UploadState::Complete),
            _ => None,
        }
    }
}

/// Where an upload's thumbnails are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThumbnailState {
    /// Not an image: no thumbnails.
    None,
    /// A job is queued or running.
    Pending,
    /// The thumbnails exist.
    Ready,
    /// The image could not be processed (too large, corrupt, unsupported).
    Failed,
}

impl ThumbnailState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ThumbnailState::None => "none",
            ThumbnailState::Pending => "pending",
            ThumbnailState::Ready => "ready",
            ThumbnailState::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<ThumbnailState> {
        match text {
            "none" => Some(ThumbnailState::None),
            "pending" => Some(ThumbnailState::Pending),
            "ready" => Some(ThumbnailState::Ready),
            "failed" => Some(ThumbnailState::Failed),
            _ => None,
        }
    }
}

/// One made thumbnail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thumbnail {
    /// The box it fits in (150, 300 or 800).
    pub size: u32,
    /// Its actual width.
    pub width: u32,
    /// Its actual height.
    pub height: u32,
    /// Its object key.
    pub key: String,
}

/// How a multipart upload is cut into parts, and where the object store keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultipartPlan {
    /// The object store's id of the multipart upload.
    pub store_upload_id: String,
    /// Bytes per part; the last part holds the rest.
    pub part_size: u64,
}

impl MultipartPlan {
    /// How many parts a file of `size` bytes has.
    pub fn part_count(&self, size: u64) -> u32 {
        size.div_ceil(self.part_size.max(1)) as u32
    }

    /// The length of part `number` (from 1) of a file of `size` bytes; `None` past the end.
    pub fn part_len(&self, size: u64, number: u32) -> Option<u64> {
        if number == 0 || number > self.part_count(size) {
            return None;
        }
        let start = u64::from(number - 1) * self.part_size;
        Some((size - start).min(self.part_size))
    }
}

/// An uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// Random, URL-safe id.
    pub id: String,
    /// The uploader.
    pub owner: UserId,
    /// The sanitized original file name.
    pub filename: String,
    /// The type sniffed from the bytes (or declared, for a pending presigned upload).
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex (empty while pending).
    pub sha256: String,
    /// The object's key in the object store.
    pub object_key: String,
    /// The short link's code, once complete.
    pub code: Option<String>,
    /// Pending or complete.
    pub state: UploadState,
    /// Thumbnail progress.
    pub thumbnail_state: ThumbnailState,
    /// The thumbnails made.
    pub thumbnails: Vec<Thumbnail>,
    /// Unix seconds.
    pub created_at: i64,
    /// When the upload goes away (Unix seconds): a pending upload is abandoned then (its
    /// URLs stop working and the sweep removes what was sent), a complete one is deleted.
    pub expires_at: Option<i64>,
    /// For a multipart upload: its plan (kept once complete, for the record).
    pub multipart: Option<MultipartPlan>,
    /// Times the file was downloaded (from its start: a range request further in is
    /// the same download going on).
    pub downloads: u64,
}

/// A file name that is safe to store and to put in a `Content-Disposition` header: only
/// the last path component, no control characters, quotes or separators, no leading dots,
/// at most 200 bytes; `file` when nothing is left.
pub fn sanitize_filename(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut clean: String = last
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ' | '(' | ')' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = clean
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' ']);
    clean = trimmed.to_owned();
    if clean.len() > 200 {
        let mut end = 200;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
    }
    if clean.is_empty() {
        "file".to_owned()
    } else {
        clean
    }
}

/// The content type of `head` (the first bytes of a file), judged from the bytes alone.
pub fn sniff_content_type(head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_owned();
    }
    if head.is_empty() {
        return "application/octet-stream".to_owned();
    }
    // Text if the start is UTF-8 (a multi-byte character may be cut at the end).
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && e.valid_up_to() + 4 > head.len(),
    };
    if valid && !head.contains(&0) {
        "text/plain; charset=utf-8".to_owned()
    } else {
        "application/octet-stream".to_owned()
    }
}

/// Whether thumbnails are made for this content type.
pub fn is_thumbnailable(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}

/// Whether a browser may show this type inline without risk to the site's origin
/// (never HTML, SVG or anything scriptable).
pub fn is_inline_safe(content_type: &str) -> bool {
    let base = content_type.split(';').next().unwrap_or("").trim();
    matches!(
        base,
        "image/png"
            | "image/jpeg"
            | "image/gif"
            | "image/webp"
            | "image/avif"
            | "application/pdf"
            | "text/plain"
            | "video/mp4"
            | "video/webm"
            | "audio/mpeg"
            | "audio/ogg"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_paths_and_dangerous_characters() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("..\\..\\windows\\win.ini"), "win.ini");
        assert_eq!(
            sanitize_filename("report (final).pdf"),
            "report (final).pdf"
        );
        assert_eq!(sanitize_filename("a\"b\r\nc;d.txt"), "a_b__c_d.txt");
        assert_eq!(sanitize_filename(".."), "file");
        assert_eq!(sanitize_filename(".hidden"), "hidden");
        assert_eq!(sanitize_filename(""), "file");
        assert_eq!(sanitize_filename("résumé.pdf"), "résumé.pdf");
        assert!(sanitize_filename(&"é".repeat(300)).len() <= 200);
    }

    #[test]
    fn types_come_from_the_bytes() {
        let png = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13];
        assert_eq!(sniff_content_type(&png), "image/png");
        assert_eq!(sniff_content_type(b"%PDF-1.7\n"), "application/pdf");
        assert_eq!(sniff_content_type(b"hello"), "text/plain; charset=utf-8");
        assert_eq!(
            sniff_content_type(&[0, 1, 2, 255]),
            "application/octet-stream"
        );
        assert!(!is_inline_safe("text/html"));
        assert!(!is_inline_safe("image/svg+xml"));
        assert!(is_inline_safe("text/plain; charset=utf-8"));
    }
}
