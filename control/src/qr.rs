//! `GET /api/v1/links/{code}/qr`: the short URL as a QR code, in SVG or PNG. The URL
//! carries the scan marker (`?qr`, see [`shortlink_core::QR_MARKER`]) unless `marker=false`:
//! the proxy counts such a visit with the source `qr` and redirects without the query.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use qrcode::QrCode;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::ApiQuery;
use crate::openapi::api_errors;
use crate::state::AppState;
use crate::uploads::BinaryBody;

/// Smallest and largest image edge, in pixels.
const SIZE_RANGE: std::ops::RangeInclusive<u32> = 64..=2048;

/// Query of the QR endpoint.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QrQuery {
    /// `svg` (default) or `png`.
    #[param(pattern = "^(svg|png)$")]
    format: Option<String>,
    /// Edge length in pixels, 64..=2048; default 256.
    #[param(minimum = 64, maximum = 2048)]
    size: Option<u32>,
    /// The link's custom domain; absent for the default domain.
    domain: Option<String>,
    /// Whether the encoded URL carries the scan marker (`?qr`) so scans are counted as
    /// the `qr` source; default true.
    marker: Option<bool>,
}

api_errors!(LinkQrErrors: AUTH, QUERY; NotFound, InvalidSize, InvalidFormat, QrFailed);

/// `GET /api/v1/links/{code}/qr?format=svg|png&size=`: owner-only.
#[utoipa::path(
    get,
    path = "/api/v1/links/{code}/qr",
    tag = "links",
    params(("code" = String, Path, description = "The link's short code."), QrQuery),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The short URL as a QR code, about `size` pixels square: SVG or PNG as `format` asks.",
         content((String = "image/svg+xml"), (BinaryBody = "image/png")),
         headers(("Cache-Control" = String, description = "`private, max-age=86400`."))),
        LinkQrErrors,
    ),
)]
pub async fn link_qr(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    ApiQuery(query): ApiQuery<QrQuery>,
) -> Result<Response, ApiError> {
    let size = query.size.unwrap_or(256);
    if !SIZE_RANGE.contains(&size) {
        return Err(ApiError::new(
            ErrorCode::InvalidSize,
            format!(
                "size must be between {} and {} pixels",
                SIZE_RANGE.start(),
                SIZE_RANGE.end()
            ),
        ));
    }
    let link = crate::links::owned_link(&state, &caller, query.domain.as_deref(), &code).await?;
    let mut short_url = state.short_url(&link.domain, link.code.as_str());
    if query.marker.unwrap_or(true) {
        short_url.push('?');
        short_url.push_str(shortlink_core::QR_MARKER);
    }
    let qr = QrCode::new(short_url.as_bytes())
        .map_err(|e| ApiError::new(ErrorCode::QrFailed, format!("cannot encode the URL: {e}")))?;
    let (content_type, body): (&'static str, Vec<u8>) =
        match query.format.as_deref().unwrap_or("svg") {
            "svg" => {
                let svg = qr
                    .render::<qrcode::render::svg::Color<'_>>()
                    .min_dimensions(size, size)
                    .max_dimensions(size, size)
                    .build();
                ("image/svg+xml", svg.into_bytes())
            }
            "png" => {
                let image = qr
                    .render::<image::Luma<u8>>()
                    .min_dimensions(size, size)
                    .max_dimensions(size, size)
                    .build();
                let mut png = Vec::new();
                image::DynamicImage::ImageLuma8(image)
                    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                    .map_err(|e| ApiError::internal(format_args!("png encoding failed: {e}")))?;
                ("image/png", png)
            }
            other => {
                return Err(ApiError::new(
                    ErrorCode::InvalidFormat,
                    format!("format must be svg or png (got {other})"),
                ));
            }
        };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The code of a link never changes what it points to in the image (the short URL):
    // browsers may keep it, shared caches may not (it is per owner).
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    Ok(response)
}
