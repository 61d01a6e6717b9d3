//! The visitor pages the proxy answers with (404, 410, 429, 503), rendered once at start
//! from the shared templates (see [`shortlink_core::pages`]).

use bytes::Bytes;
use http::HeaderValue;
use shortlink_core::pages::{CSP, Page, PageTemplates};

/// The Content-Security-Policy header of every visitor page.
pub(crate) static PAGE_CSP: HeaderValue = HeaderValue::from_static(CSP);

/// Rendered pages, cloned (a reference count) into each answer.
#[derive(Debug, Clone)]
pub struct VisitorPages {
    /// 404.
    pub not_found: Bytes,
    /// 410.
    pub gone: Bytes,
    /// 429.
    pub too_many: Bytes,
    /// 503.
    pub unavailable: Bytes,
}

impl VisitorPages {
    /// The pages of `templates`.
    pub fn new(templates: &PageTemplates) -> VisitorPages {
        let render = |page| Bytes::from(templates.render(page));
        VisitorPages {
            not_found: render(Page::NotFound),
            gone: render(Page::Gone),
            too_many: render(Page::TooMany),
            unavailable: render(Page::Unavailable),
        }
    }
}

impl Default for VisitorPages {
    fn default() -> Self {
        VisitorPages::new(&PageTemplates::default())
    }
}
