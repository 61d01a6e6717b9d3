//! Decoding images for thumbnails in bounded memory. The largest thumbnail needs
//! [`REDUCED_SIDE`] pixels on its longest side, so large images are reduced while they
//! are decoded to between one and two times that, where the format allows:
//!
//! - JPEG (baseline): decoded at 1/2, 1/4 or 1/8 scale inside the inverse DCT
//!   (`jpeg-decoder`), so a 48-megapixel photo becomes a 1000×750 image without its
//!   full-size pixels ever existing. A progressive JPEG holds its full-size coefficients
//!   until the last scan, so it falls under the whole-image limit.
//! - PNG (not interlaced): read row by row and box-filtered into the reduced image as the
//!   rows arrive: memory is a row and the reduced image, whatever the size.
//! - GIF, WebP and interlaced PNG: decoded whole, only up to `thumbnail_max_pixels`.
//!
//! Every image's size is read from its header first and refused, undecoded, over
//! `thumbnail_max_source_pixels` (a "pixel bomb": a small file declaring a huge image);
//! decoders' own buffers are capped as well.

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer, ImageFormat};

/// The longest side of a reduced image: the largest thumbnail's.
pub(crate) const REDUCED_SIDE: u32 = 800;

/// The longest side decoded at all: a row of it is at most 512 KiB (RGBA, 16 bits), so a
/// narrow image of many pixels cannot make one huge row.
pub(crate) const MAX_SIDE: u32 = 65_535;

/// How much decoding an image may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecodeLimits {
    /// The largest image decoded whole (formats without a reduced decode).
    pub(crate) whole_pixels: u64,
    /// The largest image decoded at all.
    pub(crate) source_pixels: u64,
    /// The most bytes a decoder may allocate.
    pub(crate) alloc_bytes: u64,
}

fn unreadable(e: impl std::fmt::Display) -> String {
    format!("unreadable image: {e}")
}

fn refuse_over(width: u32, height: u32, max: u64, what: &str) -> Result<(), String> {
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!(
            "{width}×{height} has a side over {MAX_SIDE} pixels; refused without decoding"
        ));
    }
    if u64::from(width) * u64::from(height) > max {
        return Err(format!(
            "{width}×{height} is more than {max} pixels{what}; refused without decoding"
        ));
    }
    Ok(())
}

/// The image, reduced to about [`REDUCED_SIDE`] on its longest side where the format
/// allows it during decoding (blocking).
pub(crate) fn decode_reduced(bytes: &[u8], limits: &DecodeLimits) -> Result<DynamicImage, String> {
    match image::guess_format(bytes).map_err(unreadable)? {
        ImageFormat::Jpeg => jpeg(bytes, limits),
        ImageFormat::Png => png_rows(bytes, limits),
        _ => whole(bytes, limits),
    }
}

/// Decodes the whole image, under the whole-image pixel limit.
fn whole(bytes: &[u8], limits: &DecodeLimits) -> Result<DynamicImage, String> {
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(unreadable)?;
    let (width, height) = reader.into_dimensions().map_err(unreadable)?;
    refuse_over(width, height, limits.source_pixels, "")?;
    refuse_over(
        width,
        height,
        limits.whole_pixels,
        ", the most decoded whole for this format",
    )?;
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(unreadable)?;
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.alloc_bytes);
    reader.limits(image_limits);
    reader.decode().map_err(|e| format!("cannot decode: {e}"))
}

/// A JPEG decoded at the smallest scale (1/8 to 1) that keeps [`REDUCED_SIDE`] pixels on
/// a side.
fn jpeg(bytes: &[u8], limits: &DecodeLimits) -> Result<DynamicImage, String> {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(usize::try_from(limits.alloc_bytes).unwrap_or(usize::MAX));
    decoder.read_info().map_err(unreadable)?;
    let info = decoder
        .info()
        .ok_or_else(|| unreadable("no frame header"))?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    refuse_over(width, height, limits.source_pixels, "")?;
    if info.pixel_format == jpeg_decoder::PixelFormat::CMYK32 {
        // Rare (print files): their colour conversion is the image crate's.
        return whole(bytes, limits);
    }
    if info.coding_process == jpeg_decoder::CodingProcess::Lossless {
        // Lossless JPEG has no DCT to scale: whole, like the formats without one.
        return whole(bytes, limits);
    }
    if info.coding_process == jpeg_decoder::CodingProcess::DctProgressive {
        // A progressive JPEG keeps every coefficient of the full-size image until its
        // last scan: as much memory as a whole decode, so the same limit.
        refuse_over(
            width,
            height,
            limits.whole_pixels,
            ", the most decoded whole for a progressive JPEG",
        )?;
    }
    let side = u16::try_from(REDUCED_SIDE).unwrap_or(u16::MAX);
    // At most 1/8 of the source's sides, which its own limit bounds.
    let (w, h) = decoder.scale(side, side).map_err(unreadable)?;
    let (w, h) = (u32::from(w), u32::from(h));
    let pixels = decoder
        .decode()
        .map_err(|e| format!("cannot decode: {e}"))?;
    let bad = || "cannot decode: the decoder's output does not fit its size".to_owned();
    Ok(match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => {
            DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, pixels).ok_or_else(bad)?)
        }
        jpeg_decoder::PixelFormat::L16 => {
            // 12-bit JPEGs, native-endian samples: the high byte is plenty for a thumbnail.
            let high: Vec<u8> = pixels
                .chunks_exact(2)
                .map(|s| (u16::from_ne_bytes([s[0], s[1]]) >> 8) as u8)
                .collect();
            DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, high).ok_or_else(bad)?)
        }
        jpeg_decoder::PixelFormat::RGB24 => {
            DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, pixels).ok_or_else(bad)?)
        }
        jpeg_decoder::PixelFormat::CMYK32 => return whole(bytes, limits),
    })
}

/// A non-interlaced PNG read row by row, each block of `factor`×`factor` pixels averaged
/// into one as the rows arrive.
fn png_rows(bytes: &[u8], limits: &DecodeLimits) -> Result<DynamicImage, String> {
    let png_limits = png::Limits {
        bytes: usize::try_from(limits.alloc_bytes).unwrap_or(usize::MAX),
    };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), png_limits);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(unreadable)?;
    let (width, height, interlaced) = {
        let info = reader.info();
        (info.width, info.height, info.interlaced)
    };
    refuse_over(width, height, limits.source_pixels, "")?;
    if interlaced {
        return whole(bytes, limits);
    }
    let (color, depth) = reader.output_color_type();
    if depth != png::BitDepth::Eight {
        return whole(bytes, limits);
    }
    let channels = color.samples();
    // The reduced image keeps at least REDUCED_SIDE on its longest side (under twice that).
    let factor = (width.max(height) / REDUCED_SIDE).max(1) as usize;
    let (w, h) = (width as usize, height as usize);
    let (out_w, out_h) = (w.div_ceil(factor), h.div_ceil(factor));
    // A block holds at most 82² samples of 255 (sides are at most MAX_SIDE): far inside u32.
    let mut sums = vec![0u32; out_w * channels];
    let mut out = Vec::with_capacity(out_w * out_h * channels);
    let mut rows_in_block = 0usize;
    for y in 0..h {
        let row = reader
            .next_row()
            .map_err(|e| format!("cannot decode: {e}"))?
            .ok_or_else(|| "cannot decode: the image ends early".to_owned())?;
        let data = row.data();
        if data.len() < w * channels {
            return Err("cannot decode: a row is short".into());
        }
        for (x, pixel) in data[..w * channels].chunks_exact(channels).enumerate() {
            let at = (x / factor) * channels;
            for (sum, &sample) in sums[at..at + channels].iter_mut().zip(pixel) {
                *sum += u32::from(sample);
            }
        }
        rows_in_block += 1;
        if rows_in_block == factor || y + 1 == h {
            for (ox, block) in sums.chunks_exact_mut(channels).enumerate() {
                let cols = factor.min(w - ox * factor);
                let count = (cols * rows_in_block) as u32;
                for sum in block.iter_mut() {
                    out.push(((*sum + count / 2) / count) as u8);
                    *sum = 0;
                }
            }
            rows_in_block = 0;
        }
    }
    let (out_w, out_h) = (out_w as u32, out_h as u32);
    let bad = || "cannot decode: the reduced image does not fit its size".to_owned();
    Ok(match color {
        png::ColorType::Grayscale => {
            DynamicImage::ImageLuma8(ImageBuffer::from_raw(out_w, out_h, out).ok_or_else(bad)?)
        }
        png::ColorType::GrayscaleAlpha => {
            DynamicImage::ImageLumaA8(ImageBuffer::from_raw(out_w, out_h, out).ok_or_else(bad)?)
        }
        png::ColorType::Rgb => {
            DynamicImage::ImageRgb8(ImageBuffer::from_raw(out_w, out_h, out).ok_or_else(bad)?)
        }
        png::ColorType::Rgba => {
            DynamicImage::ImageRgba8(ImageBuffer::from_raw(out_w, out_h, out).ok_or_else(bad)?)
        }
        png::ColorType::Indexed => return whole(bytes, limits),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits {
        whole_pixels: 1_000_000,
        source_pixels: 50_000_000,
        alloc_bytes: 256 * 1024 * 1024,
    };

    fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        image.write_to(&mut Cursor::new(&mut out), format).unwrap();
        out
    }

    fn gradient(width: u32, height: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(ImageBuffer::from_fn(width, height, |x, y| {
            image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
        }))
    }

    #[test]
    fn large_jpegs_and_pngs_are_reduced_while_decoding() {
        let big = gradient(3300, 1700);
        // Both are over the whole-image limit, and both come out reduced.
        let from_jpeg = decode_reduced(&encoded(&big, ImageFormat::Jpeg), &LIMITS).unwrap();
        assert_eq!(
            (from_jpeg.width(), from_jpeg.height()),
            (825, 425),
            "1/4 scale"
        );
        let from_png = decode_reduced(&encoded(&big, ImageFormat::Png), &LIMITS).unwrap();
        assert_eq!(
            (from_png.width(), from_png.height()),
            (825, 425),
            "blocks of 4×4"
        );
        // The box filter keeps the picture: the gradient's corners stay where they were.
        let rgb = from_png.to_rgb8();
        let [r0, g0, _] = rgb.get_pixel(0, 0).0;
        let [r1, g1, _] = rgb.get_pixel(824, 424).0;
        assert!(
            r0 < 3 && g0 < 3 && r1 > 252 && g1 > 252,
            "{r0} {g0} {r1} {g1}"
        );
        // A small image passes through at its size.
        let small =
            decode_reduced(&encoded(&gradient(200, 100), ImageFormat::Png), &LIMITS).unwrap();
        assert_eq!((small.width(), small.height()), (200, 100));
    }

    #[test]
    fn whole_decodes_and_bombs_are_refused_from_the_header() {
        let gif = encoded(&gradient(1200, 1000), ImageFormat::Gif);
        let refused = decode_reduced(&gif, &LIMITS).unwrap_err();
        assert!(
            refused.contains("decoded whole") && refused.contains("refused without decoding"),
            "{refused}"
        );
        let tight = DecodeLimits {
            source_pixels: 1_000_000,
            ..LIMITS
        };
        // A thin image of few pixels but a huge row.
        let wide = DecodeLimits {
            source_pixels: u64::MAX,
            ..LIMITS
        };
        let refused =
            decode_reduced(&encoded(&gradient(70_000, 1), ImageFormat::Png), &wide).unwrap_err();
        assert!(refused.contains("a side over 65535 pixels"), "{refused}");
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let refused =
                decode_reduced(&encoded(&gradient(1200, 1000), format), &tight).unwrap_err();
            assert!(
                refused.contains("1200×1000 is more than 1000000 pixels"),
                "{refused}"
            );
        }
        assert!(decode_reduced(b"not an image at all", &LIMITS).is_err());
    }
}
