//! Thumbnails: durable jobs in the store, claimed with a lease by a bounded pool of
//! workers that decode, resize and encode on blocking threads under limits (large
//! images are reduced while decoded, see [`decode`]; an image over the pixel budget is
//! refused from its header, never decoded), then record the result and emit
//! `upload.thumbnails_ready`.

mod decode;

use std::time::Duration;

use bytes::Bytes;
use shortlink_core::{EventKind, NewEvent, THUMBNAIL_SIZES, Thumbnail, ThumbnailState, Upload};
use shortlink_objects::ObjectError;
use tracing::warn;

use self::decode::DecodeLimits;
use crate::error::ApiError;
use crate::state::AppState;
use crate::uploads::{UploadView, thumbnail_key};

/// One made thumbnail, encoded as PNG.
#[derive(Debug)]
pub(crate) struct Made {
    /// The box it fits in.
    pub(crate) size: u32,
    /// Its width.
    pub(crate) width: u32,
    /// Its height.
    pub(crate) height: u32,
    /// The PNG bytes.
    pub(crate) png: Vec<u8>,
}

/// Makes the thumbnails of one image upload (blocking: decode, resize, encode). A
/// decoder that panics on a hostile file fails the job like any bad image.
pub(crate) fn make_thumbnails(bytes: &[u8], limits: &DecodeLimits) -> Result<Vec<Made>, String> {
    let decoded = std::panic::catch_unwind(|| decode::decode_reduced(bytes, limits))
        .unwrap_or_else(|_| Err("cannot decode: the decoder failed on this file".into()));
    let image = decoded?;
    let mut out = Vec::new();
    for size in THUMBNAIL_SIZES {
        let thumb = if image.width() <= size && image.height() <= size {
            image.clone()
        } else {
            image.thumbnail(size, size)
        };
        let mut png = Vec::new();
        thumb
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| format!("cannot encode: {e}"))?;
        out.push(Made {
            size,
            width: thumb.width(),
            height: thumb.height(),
            png,
        });
    }
    Ok(out)
}

/// The thumbnail workers: claim due jobs from the store (a lease each, so a crash means a
/// retry, not a loss), make the thumbnails on blocking threads, record them and emit
/// `upload.thumbnails_ready`. Runs until the task is dropped.
pub async fn run_thumbnail_worker(state: AppState) {
    let lease = state.config().thumbnail_lease_seconds as i64;
    loop {
        let job = match state.store().claim_thumbnail_job(lease).await {
            Ok(job) => job,
            Err(e) => {
                warn!(error = %e, "claiming a thumbnail job failed");
                None
            }
        };
        let Some(job) = job else {
            state.thumbnails_wait(Duration::from_secs(1)).await;
            continue;
        };
        if let Err(e) = thumbnail_job(&state, &job.upload_id, job.attempt).await {
            crate::metrics::THUMBNAIL_JOBS
                .with_label_values(&["retry"])
                .inc();
            warn!(error = %e.message(), upload = %job.upload_id, "thumbnail job failed; it will be retried");
        }
    }
}

/// Attempts after which a failing job is given up.
const MAX_ATTEMPTS: u32 = 3;

async fn thumbnail_job(state: &AppState, id: &str, attempt: u32) -> Result<(), ApiError> {
    let Some(upload) = state.store().get_upload(id).await? else {
        state
            .store()
            .finish_thumbnail_job(id, ThumbnailState::Failed, vec![], None)
            .await?;
        return Ok(());
    };
    if attempt > MAX_ATTEMPTS {
        // Claimed again and again without an outcome: its workers died on it.
        return give_up(
            state,
            &upload,
            "no attempt finished (the worker stopped each time)",
        )
        .await;
    }
    let config = state.config();
    let bytes = match state
        .objects()
        .read_all(&upload.object_key, config.thumbnail_max_input_bytes)
        .await
    {
        Ok(bytes) => bytes,
        Err(ObjectError::TooLarge(_)) => {
            return give_up(
                state,
                &upload,
                "the image file is larger than thumbnail_max_input_bytes",
            )
            .await;
        }
        Err(e) if attempt < MAX_ATTEMPTS => return Err(e.into()),
        Err(e) => return give_up(state, &upload, &e.to_string()).await,
    };
    let limits = DecodeLimits {
        whole_pixels: config.thumbnail_max_pixels,
        source_pixels: config.thumbnail_max_source_pixels,
        alloc_bytes: config.thumbnail_max_pixels.saturating_mul(8),
    };
    let made = tokio::task::spawn_blocking(move || make_thumbnails(&bytes, &limits))
        .await
        .map_err(ApiError::internal)?;
    let made = match made {
        Ok(made) => made,
        // A bad or hostile image fails the same way every time: no retry.
        Err(reason) => return give_up(state, &upload, &reason).await,
    };
    let mut thumbnails = Vec::new();
    for Made {
        size,
        width,
        height,
        png,
    } in made
    {
        let key = thumbnail_key(&upload.id, size);
        let mut writer = state.objects().create(&key, "image/png").await?;
        writer.write(Bytes::from(png)).await?;
        writer.finish().await?;
        thumbnails.push(Thumbnail {
            size,
            width,
            height,
            key,
        });
    }
    let mut ready = upload.clone();
    ready.thumbnails = thumbnails.clone();
    ready.thumbnail_state = ThumbnailState::Ready;
    let event = NewEvent {
        user_id: upload.owner,
        kind: EventKind::UploadThumbnailsReady,
        data: serde_json::to_string(&UploadView::new(state, &ready))
            .unwrap_or_else(|_| "{}".into()),
    };
    state
        .store()
        .finish_thumbnail_job(&upload.id, ThumbnailState::Ready, thumbnails, Some(event))
        .await?;
    crate::metrics::THUMBNAIL_JOBS
        .with_label_values(&["ready"])
        .inc();
    Ok(())
}

async fn give_up(state: &AppState, upload: &Upload, reason: &str) -> Result<(), ApiError> {
    warn!(upload = %upload.id, reason, "no thumbnails for this upload");
    state
        .store()
        .finish_thumbnail_job(&upload.id, ThumbnailState::Failed, vec![], None)
        .await?;
    crate::metrics::THUMBNAIL_JOBS
        .with_label_values(&["failed"])
        .inc();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_fit_their_boxes_and_bombs_are_refused_undecoded() {
        let image = image::RgbImage::from_fn(1000, 500, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 0])
        });
        let mut png = Vec::new();
        image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let made = make_thumbnails(&png, &limits(40_000_000)).unwrap();
        let sizes: Vec<_> = made.iter().map(|m| (m.size, m.width, m.height)).collect();
        assert_eq!(sizes, [(150, 150, 75), (300, 300, 150), (800, 800, 400)]);
        // The same image with a pixel budget below its size: refused from the header.
        let tight = DecodeLimits {
            source_pixels: 100_000,
            ..limits(40_000_000)
        };
        let err = make_thumbnails(&png, &tight).unwrap_err();
        assert!(err.contains("more than 100000 pixels"), "{err}");
        assert!(make_thumbnails(b"not an image", &limits(1_000_000)).is_err());
    }

    fn limits(whole_pixels: u64) -> DecodeLimits {
        DecodeLimits {
            whole_pixels,
            source_pixels: 268_435_456,
            alloc_bytes: whole_pixels * 8,
        }
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        // A 70-byte PNG that claims 50 000 × 50 000 pixels (7.5 GB decoded).
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&50_000u32.to_be_bytes());
        ihdr.extend_from_slice(&50_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
        png.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
        png.extend_from_slice(idat);
        png.extend_from_slice(&crc32(idat).to_be_bytes());
        let err = make_thumbnails(&png, &limits(40_000_000)).unwrap_err();
        assert!(
            err.contains("50000×50000"),
            "refused from the header: {err}"
        );
    }
}
