//! Click enrichment: user agent → browser, OS and device class (woothee); bot flag (the
//! `isbot` pattern list, woothee's crawler category, HEAD requests); referrer → host;
//! country from a MaxMind-format database, else from a trusted header, else `unknown`;
//! client IPs anonymized (IPv4 to /24, IPv6 to /48); visitor ids for unique visitors
//! (`visitor`).

mod visitor;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use shortlink_core::{ClickEvent, EnrichedClick};
use thiserror::Error;

pub use visitor::VisitorKeys;

/// Why the enricher could not be built.
#[derive(Debug, Error)]
pub enum EnrichError {
    /// The GeoIP database could not be opened or read.
    #[error("cannot open GeoIP database {path}: {message}")]
    GeoIp {
        /// The configured path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Turns captured clicks into stored ones. Build once; cheap to share.
pub struct Enricher {
    bots: isbot::Bots,
    parser: woothee::parser::Parser,
    geoip: Option<maxminddb::Reader<Vec<u8>>>,
    keep_full_ip: bool,
    /// What each recently seen user agent was classified as: traffic repeats a few
    /// thousand agents, and the bot patterns are the expensive part.
    agents: Mutex<HashMap<String, Agent>>,
    /// Visitor ids' keys, once the installation's secret is known (until then clicks get
    /// none).
    visitors: OnceLock<VisitorKeys>,
}

/// How a user agent is classified.
#[derive(Debug, Clone)]
struct Agent {
    browser: String,
    os: String,
    device: &'static str,
    bot: bool,
}

/// Most user agents remembered; the memory is cleared when it fills.
const AGENT_CACHE: usize = 4096;

const UNKNOWN: &str = "unknown";

impl Enricher {
    /// An enricher with an optional GeoIP database; IPs are anonymized unless
    /// `keep_full_ip` is set.
    pub fn new(geoip_path: Option<&Path>, keep_full_ip: bool) -> Result<Enricher, EnrichError> {
        let geoip =
            match geoip_path {
                Some(path) => Some(maxminddb::Reader::open_readfile(path).map_err(|e| {
                    EnrichError::GeoIp {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    }
                })?),
                None => None,
            };
        Ok(Enricher {
            bots: isbot::Bots::default(),
            parser: woothee::parser::Parser::new(),
            geoip,
            keep_full_ip,
            agents: Mutex::new(HashMap::new()),
            visitors: OnceLock::new(),
        })
    }

    fn classify(&self, ua: &str) -> Agent {
        if let Some(known) = self.agents.lock().ok().and_then(|m| m.get(ua).cloned()) {
            return known;
        }
        let parsed = if ua.is_empty() {
            None
        } else {
            self.parser.parse(ua)
        };
        let crawler = parsed.as_ref().is_some_and(|p| p.category == "crawler");
        let bot = ua.is_empty() || crawler || self.bots.is_bot(ua);
        let agent = match &parsed {
            Some(p) => Agent {
                browser: known(p.name),
                os: known(p.os),
                device: device_class(p.category, p.os, ua),
                bot,
            },
            None => Agent {
                browser: UNKNOWN.to_owned(),
                os: UNKNOWN.to_owned(),
                device: "other",
                bot,
            },
        };
        if let Ok(mut agents) = self.agents.lock() {
            if agents.len() >= AGENT_CACHE {
                agents.clear();
            }
            agents.insert(ua.to_owned(), agent.clone());
        }
        agent
    }

    /// Gives clicks visitor ids from now on, keyed by the installation's secret (the first
    /// secret given stays).
    pub fn set_visitor_secret(&self, secret: [u8; 32]) {
        let _ = self.visitors.set(VisitorKeys::new(secret));
    }

    /// Whether clicks get visitor ids.
    pub fn has_visitor_secret(&self) -> bool {
        self.visitors.get().is_some()
    }

    /// Enriches one click.
    pub fn enrich(&self, click: &ClickEvent) -> EnrichedClick {
        let user_agent = click.user_agent.as_deref().unwrap_or("");
        let agent = self.classify(user_agent);
        let bot = agent.bot || click.head;
        let ip = click.ip;
        let visitor = self.visitors.get().map_or(0, |keys| {
            keys.visitor(click.ts_ms, ip.map(anonymize), user_agent)
        });
        EnrichedClick {
            link_id: click.link_id,
            ts_ms: click.ts_ms,
            ip: ip.map(|ip| self.store_ip(ip)).unwrap_or_default(),
            browser: agent.browser,
            os: agent.os,
            device: if bot { "bot" } else { agent.device }.to_owned(),
            bot,
            referrer: if click.qr {
                shortlink_core::QR_SOURCE.to_owned()
            } else {
                referrer_host(click.referrer.as_deref())
            },
            country: self.country(ip, click.country.as_deref()),
            count: click.count.max(1),
            visitor,
        }
    }

    fn store_ip(&self, ip: IpAddr) -> String {
        if self.keep_full_ip {
            return ip.to_string();
        }
        anonymize(ip).to_string()
    }

    /// The ISO country code of `ip` from the GeoIP database, else of the trusted `header`
    /// value, else `unknown`.
    pub fn country(&self, ip: Option<IpAddr>, header: Option<&str>) -> String {
        if let (Some(reader), Some(ip)) = (&self.geoip, ip)
            && let Ok(result) = reader.lookup(ip)
            && let Ok(Some(found)) = result.decode::<maxminddb::geoip2::Country>()
            && let Some(code) = found.country.iso_code
        {
            return code.to_owned();
        }
        match header.map(str::trim) {
            Some(code)
                if code.len() == 2
                    && code.bytes().all(|b| b.is_ascii_alphabetic())
                    && code != "XX" =>
            {
                code.to_ascii_uppercase()
            }
            _ => UNKNOWN.to_owned(),
        }
    }
}

fn known(value: &str) -> String {
    if value.is_empty() || value == "UNKNOWN" {
        UNKNOWN.to_owned()
    } else {
        value.to_owned()
    }
}

fn device_class(category: &str, os: &str, ua: &str) -> &'static str {
    let tablet = os == "iPad" || (os == "Android" && !ua.contains("Mobile"));
    match category {
        "pc" => "desktop",
        "smartphone" | "mobilephone" if tablet => "tablet",
        "smartphone" | "mobilephone" => "mobile",
        "crawler" => "bot",
        _ => "other",
    }
}

/// Zeroes the host part: IPv4 keeps /24, IPv6 keeps /48.
pub fn anonymize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            for s in &mut segments[3..] {
                *s = 0;
            }
            IpAddr::from(segments)
        }
    }
}

/// The referrer's host in lowercase, or `direct` when there is none or it is not a URL.
pub fn referrer_host(referrer: Option<&str>) -> String {
    referrer
        .and_then(|r| url::Url::parse(r).ok())
        .and_then(|u| {
            u.host_str()
                .map(|h| h.trim_start_matches("www.").to_ascii_lowercase())
        })
        .unwrap_or_else(|| "direct".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(ua: &str) -> ClickEvent {
        ClickEvent {
            link_id: 1,
            ts_ms: 0,
            ip: Some("203.0.113.77".parse().unwrap()),
            user_agent: Some(ua.into()),
            referrer: Some("https://www.Example.com/page".into()),
            host: None,
            country: Some("de".into()),
            head: false,
            qr: false,
            count: 1,
        }
    }

    const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
    const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
    const ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    const SLACK: &str = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";

    #[track_caller]
    fn check(ua: &str, browser: &str, os: &str, device: &str, bot: bool) {
        let e = Enricher::new(None, false).unwrap().enrich(&click(ua));
        assert_eq!(
            (e.browser.as_str(), e.os.as_str(), e.device.as_str(), e.bot),
            (browser, os, device, bot),
            "{ua}"
        );
    }

    #[test]
    fn user_agents_land_in_the_right_buckets() {
        check(CHROME_WIN, "Chrome", "Windows 10", "desktop", false);
        check(SAFARI_IPHONE, "Safari", "iPhone", "mobile", false);
        check(FIREFOX_LINUX, "Firefox", "Linux", "desktop", false);
        check(ANDROID_TABLET, "Chrome", "Android", "tablet", false);
        check(GOOGLEBOT, "Googlebot", "unknown", "bot", true);
        check(SLACK, "misc crawler", "unknown", "bot", true);
        check("", "unknown", "unknown", "bot", true);
    }

    #[test]
    fn head_requests_are_bots_and_ips_are_anonymized() {
        let enricher = Enricher::new(None, false).unwrap();
        let mut c = click(CHROME_WIN);
        c.head = true;
        let e = enricher.enrich(&c);
        assert!(e.bot);
        assert_eq!(e.device, "bot");
        assert_eq!(e.ip, "203.0.113.0");
        assert_eq!(e.referrer, "example.com");
        assert_eq!(e.country, "DE", "trusted header used when no database");
        assert_eq!(
            anonymize("2001:db8:1:2:3:4:5:6".parse().unwrap()).to_string(),
            "2001:db8:1::"
        );
        c.qr = true;
        assert_eq!(
            enricher.enrich(&c).referrer,
            "qr",
            "a scan's source is qr, whatever it sent as Referer"
        );
        let full = Enricher::new(None, true)
            .unwrap()
            .enrich(&click(CHROME_WIN));
        assert_eq!(full.ip, "203.0.113.77");
    }

    #[test]
    fn odd_inputs_are_unknown_not_errors() {
        let enricher = Enricher::new(None, false).unwrap();
        let mut c = click(CHROME_WIN);
        c.referrer = Some("not a url".into());
        c.country = Some("XX".into());
        c.ip = None;
        let e = enricher.enrich(&c);
        assert_eq!(
            (e.referrer.as_str(), e.country.as_str(), e.ip.as_str()),
            ("direct", "unknown", "")
        );
    }

    #[derive(serde::Serialize)]
    struct Country {
        iso_code: &'static str,
    }

    #[derive(serde::Serialize)]
    struct Record {
        country: Country,
    }

    #[test]
    fn a_geoip_database_decides_the_country_before_the_header() {
        use maxminddb_writer::{Database, metadata::IpVersion, paths::IpAddrWithMask};
        let mut db = Database::default();
        db.metadata.ip_version = IpVersion::V4;
        db.metadata.database_type = "GeoIP2-Country".into();
        db.metadata.binary_format_major_version = 2;
        let japan = db
            .insert_value(Record {
                country: Country { iso_code: "JP" },
            })
            .unwrap();
        db.insert_node(
            IpAddrWithMask::new("203.0.113.0".parse().unwrap(), 24),
            japan,
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("country.mmdb");
        db.write_to(std::fs::File::create(&path).unwrap()).unwrap();

        let enricher = Enricher::new(Some(&path), false).unwrap();
        let mut c = click(CHROME_WIN);
        assert_eq!(
            enricher.enrich(&c).country,
            "JP",
            "the database wins over the header"
        );
        c.ip = Some("198.51.100.1".parse().unwrap());
        assert_eq!(
            enricher.enrich(&c).country,
            "DE",
            "not in the database: the header"
        );
        c.country = None;
        assert_eq!(enricher.enrich(&c).country, "unknown");
    }

    #[test]
    fn a_missing_geoip_database_is_a_clear_error() {
        let err = Enricher::new(Some(Path::new("/no/such.mmdb")), false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("/no/such.mmdb"));
    }
}
