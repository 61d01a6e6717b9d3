//! Visitor pages: what a person following a short link sees when it does not redirect
//! (unknown, gone, password, too many requests, unavailable). One look, shared by the
//! proxy and the control plane; an operator may replace any page with a file of their own.
//!
//! A template is HTML with two placeholders: `{{title}}` and `{{body}}` (the page's
//! message, or the password form, already escaped). Pages are served with [`CSP`], so a
//! template must be self-contained: inline `<style>`, images as `data:` URLs.

use std::path::{Path, PathBuf};

/// The built-in template.
const DEFAULT_TEMPLATE: &str = include_str!("../pages/page.html");

/// Largest template file read.
pub const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

/// The Content-Security-Policy every visitor page is served with: no scripts, no fetches,
/// inline styles and `data:` images only. No `form-action`: browsers apply it to the
/// redirect after the password form too, which goes to the link's target, anywhere.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                       base-uri 'none'; frame-ancestors 'none'";

/// One visitor page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// 404: no link at this address.
    NotFound,
    /// 410: the link expired, was turned off or reached its click limit.
    Gone,
    /// The password form of a protected link.
    Password,
    /// 429: too many unknown links asked for.
    TooMany,
    /// 503: the link could not be looked up.
    Unavailable,
}

impl Page {
    /// Every page.
    pub const ALL: [Page; 5] = [
        Page::NotFound,
        Page::Gone,
        Page::Password,
        Page::TooMany,
        Page::Unavailable,
    ];

    /// The file of an operator's template for this page in `pages_dir`.
    pub fn file_name(self) -> &'static str {
        match self {
            Page::NotFound => "404.html",
            Page::Gone => "410.html",
            Page::Password => "password.html",
            Page::TooMany => "429.html",
            Page::Unavailable => "503.html",
        }
    }

    /// The page's title.
    pub fn title(self) -> &'static str {
        match self {
            Page::NotFound => "Link not found",
            Page::Gone => "Link no longer available",
            Page::Password => "This link is protected",
            Page::TooMany => "Too many requests",
            Page::Unavailable => "Temporarily unavailable",
        }
    }

    /// The page's message, as HTML (the password page's body is its form instead).
    pub fn message(self) -> &'static str {
        match self {
            Page::NotFound => "<p>There is no short link at this address. Check it for typos.</p>",
            Page::Gone => {
                "<p>This short link has expired, was turned off, or reached its click limit.</p>"
            }
            Page::Password => "<p>Enter the password to continue.</p>",
            Page::TooMany => {
                "<p>Too many unknown links were requested from your address. Try again in a minute.</p>"
            }
            Page::Unavailable => {
                "<p>This link cannot be looked up right now. Try again shortly.</p>"
            }
        }
    }
}

/// Why the operator's templates cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    /// A template file exists but cannot be read.
    #[error("pages_dir: cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A template is not usable.
    #[error("pages_dir: {} {why}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// The templates of every page: the operator's where given, else the built-in one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageTemplates {
    own: [Option<String>; 5],
}

impl PageTemplates {
    /// Reads the templates in `dir` (`404.html`, `410.html`, `password.html`, `429.html`,
    /// `503.html`; each optional). A file that exists must be readable UTF-8 of at most
    /// [`MAX_TEMPLATE_BYTES`] holding `{{body}}`.
    pub fn load(dir: Option<&Path>) -> Result<PageTemplates, PagesError> {
        let mut templates = PageTemplates::default();
        let Some(dir) = dir else {
            return Ok(templates);
        };
        if !dir.is_dir() {
            return Err(PagesError::Invalid {
                path: dir.to_owned(),
                why: "is not a folder",
            });
        }
        for (slot, page) in templates.own.iter_mut().zip(Page::ALL) {
            let path = dir.join(page.file_name());
            let read = std::fs::File::open(&path).and_then(|file| {
                use std::io::Read;
                let mut text = String::new();
                file.take(MAX_TEMPLATE_BYTES + 1)
                    .read_to_string(&mut text)?;
                Ok(text)
            });
            let text = match read {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(PagesError::Read { path, source }),
            };
            if text.len() as u64 > MAX_TEMPLATE_BYTES {
                return Err(PagesError::Invalid {
                    path,
                    why: "is larger than 256 KiB",
                });
            }
            if !text.contains("{{body}}") {
                return Err(PagesError::Invalid {
                    path,
                    why: "has no {{body}} placeholder (the page's message or form goes there)",
                });
            }
            *slot = Some(text);
        }
        Ok(templates)
    }

    /// `page` with its own title and message.
    pub fn render(&self, page: Page) -> String {
        self.render_with(page, page.message())
    }

    /// `page` with `body` (HTML, escaped by the caller) in place of its message.
    pub fn render_with(&self, page: Page, body: &str) -> String {
        let template = self.own[page as usize]
            .as_deref()
            .unwrap_or(DEFAULT_TEMPLATE);
        // The title first: a body holding `{{title}}` (a user's text) stays as it is.
        template
            .replace("{{title}}", page.title())
            .replacen("{{body}}", body, 1)
    }
}

/// `text` with HTML's special characters escaped, for a page's body.
pub fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_pages_carry_their_title_and_message() {
        let pages = PageTemplates::default();
        for page in Page::ALL {
            let html = pages.render(page);
            assert!(html.contains(&format!("<title>{}</title>", page.title())));
            assert!(html.contains(page.message()));
            assert!(!html.contains("{{"), "{page:?}: no placeholder left");
        }
        let form = pages.render_with(Page::Password, "<form>{{title}}</form>");
        assert!(
            form.contains("<form>{{title}}</form>"),
            "a body is not expanded"
        );
    }

    #[test]
    fn an_operators_templates_replace_the_built_in_ones_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("404.html"),
            "<h1>{{title}}</h1>OURS {{body}}",
        )
        .unwrap();
        let pages = PageTemplates::load(Some(dir.path())).unwrap();
        let html = pages.render(Page::NotFound);
        assert!(html.starts_with("<h1>Link not found</h1>OURS <p>There is no short link"));
        assert!(
            pages
                .render(Page::Gone)
                .contains("<header>shortlink</header>")
        );
        std::fs::write(dir.path().join("410.html"), "no placeholder").unwrap();
        let err = PageTemplates::load(Some(dir.path())).unwrap_err();
        assert!(
            err.to_string().contains("410.html has no {{body}}"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("410.html"),
            "x".repeat(300 * 1024) + "{{body}}",
        )
        .unwrap();
        assert!(PageTemplates::load(Some(dir.path())).is_err());
        let missing = dir.path().join("nope");
        assert!(PageTemplates::load(Some(&missing)).is_err());
        assert_eq!(
            escape_html("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
