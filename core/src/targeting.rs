//! Targeting rules: alternative targets per device class and per country, and the
//! cheap classification the proxy evaluates them with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{TargetError, TargetRules, validate_target};

/// Most countries one link may target.
pub const MAX_TARGETED_COUNTRIES: usize = 64;

/// A link's alternative targets. A request goes to the first that applies: its device
/// class's target (iOS, Android, desktop), then its country's, then the link's own URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Targeting {
    /// Target for iPhone, iPad and iPod user agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        format = "uri",
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#@]+([/?#][^\\s]*)?$"
    )]
    pub ios: Option<String>,
    /// Target for Android user agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        format = "uri",
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#@]+([/?#][^\\s]*)?$"
    )]
    pub android: Option<String>,
    /// Target for everything that is neither iOS, Android nor another mobile device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        format = "uri",
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#@]+([/?#][^\\s]*)?$"
    )]
    pub desktop: Option<String>,
    /// Targets by ISO 3166-1 alpha-2 country code (upper case), as the analytics country
    /// source (GeoIP database or trusted header) reports it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub countries: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for Targeting {
    /// Reads the rules from an object only (a derived `Deserialize` also reads a struct
    /// from an array of its fields), refusing unknown fields.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default)]
            ios: Option<String>,
            #[serde(default)]
            android: Option<String>,
            #[serde(default)]
            desktop: Option<String>,
            #[serde(default)]
            countries: BTreeMap<String, String>,
        }
        let object = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let fields: Fields = serde_json::from_value(serde_json::Value::Object(object))
            .map_err(serde::de::Error::custom)?;
        Ok(Targeting {
            ios: fields.ios,
            android: fields.android,
            desktop: fields.desktop,
            countries: fields.countries,
        })
    }
}

/// The device classes targeting distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceClass {
    /// iPhone, iPad, iPod.
    Ios,
    /// Android phones and tablets.
    Android,
    /// Other mobile devices (which get no device target).
    OtherMobile,
    /// Everything else.
    Desktop,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl DeviceClass {
    /// Classifies a `User-Agent` by the substrings every iOS and Android browser sends;
    /// no allocation, a few linear scans of at most the header's length.
    pub fn of_user_agent(user_agent: &[u8]) -> DeviceClass {
        if contains(user_agent, b"iPhone")
            || contains(user_agent, b"iPad")
            || contains(user_agent, b"iPod")
        {
            DeviceClass::Ios
        } else if contains(user_agent, b"Android") {
            DeviceClass::Android
        } else if contains(user_agent, b"Mobi") {
            DeviceClass::OtherMobile
        } else {
            DeviceClass::Desktop
        }
    }
}

/// Why targeting rules were refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TargetingError {
    /// A rule's URL is not an acceptable target.
    #[error("targeting.{rule}: {error}")]
    Url {
        /// Which rule (`ios`, `android`, `desktop`, `countries.XX`).
        rule: String,
        /// What is wrong with its URL.
        error: TargetError,
    },
    /// A country key that is not two ASCII letters.
    #[error("targeting.countries: '{0}' is not a two-letter country code like US or DE")]
    Country(String),
    /// Too many countries.
    #[error("targeting.countries may hold at most {MAX_TARGETED_COUNTRIES} countries")]
    TooManyCountries,
}

impl Targeting {
    /// Every target URL the rules name.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        [&self.ios, &self.android, &self.desktop]
            .into_iter()
            .flatten()
            .chain(self.countries.values())
            .map(String::as_str)
    }

    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        self.ios.is_none()
            && self.android.is_none()
            && self.desktop.is_none()
            && self.countries.is_empty()
    }

    /// Validates every URL with `rules`, upper-cases country codes; `None` when empty.
    pub fn validate(self, rules: &TargetRules) -> Result<Option<Targeting>, TargetingError> {
        let check = |rule: &str, url: Option<String>| {
            url.map(|u| {
                validate_target(&u, rules).map_err(|error| TargetingError::Url {
                    rule: rule.to_owned(),
                    error,
                })
            })
            .transpose()
        };
        if self.countries.len() > MAX_TARGETED_COUNTRIES {
            return Err(TargetingError::TooManyCountries);
        }
        let mut countries = BTreeMap::new();
        for (country, url) in self.countries {
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(TargetingError::Country(country));
            }
            let country = country.to_ascii_uppercase();
            let url = check(&format!("countries.{country}"), Some(url))?.unwrap_or_default();
            countries.insert(country, url);
        }
        let targeting = Targeting {
            ios: check("ios", self.ios)?,
            android: check("android", self.android)?,
            desktop: check("desktop", self.desktop)?,
            countries,
        };
        Ok((!targeting.is_empty()).then_some(targeting))
    }

    /// The alternative target for a request from `device` in `country`, if one applies.
    pub fn pick(&self, device: DeviceClass, country: Option<&str>) -> Option<&str> {
        let by_device = match device {
            DeviceClass::Ios => self.ios.as_deref(),
            DeviceClass::Android => self.android.as_deref(),
            DeviceClass::Desktop => self.desktop.as_deref(),
            DeviceClass::OtherMobile => None,
        };
        by_device.or_else(|| {
            let country = country?;
            self.countries
                .iter()
                .find(|(code, _)| code.eq_ignore_ascii_case(country))
                .map(|(_, url)| url.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPHONE: &[u8] = b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
    const ANDROID: &[u8] = b"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36";
    const DESKTOP: &[u8] = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";

    #[test]
    fn classifies_common_user_agents() {
        assert_eq!(DeviceClass::of_user_agent(IPHONE), DeviceClass::Ios);
        assert_eq!(DeviceClass::of_user_agent(ANDROID), DeviceClass::Android);
        assert_eq!(DeviceClass::of_user_agent(DESKTOP), DeviceClass::Desktop);
        assert_eq!(
            DeviceClass::of_user_agent(b"Opera/9.80 (J2ME/MIDP; Opera Mini) Mobile"),
            DeviceClass::OtherMobile
        );
        assert_eq!(DeviceClass::of_user_agent(b""), DeviceClass::Desktop);
    }

    #[test]
    fn device_beats_country_beats_default() {
        let rules = TargetRules::default();
        let t = Targeting {
            ios: Some("https://apps.apple.com/app".into()),
            android: None,
            desktop: None,
            countries: [("de".to_owned(), "https://example.de/".to_owned())].into(),
        }
        .validate(&rules)
        .unwrap()
        .unwrap();
        assert!(t.countries.contains_key("DE"));
        assert_eq!(
            t.pick(DeviceClass::Ios, Some("DE")),
            Some("https://apps.apple.com/app")
        );
        assert_eq!(
            t.pick(DeviceClass::Android, Some("de")),
            Some("https://example.de/")
        );
        assert_eq!(t.pick(DeviceClass::Desktop, Some("US")), None);
        assert_eq!(t.pick(DeviceClass::Desktop, None), None);
    }

    #[test]
    fn bad_rules_are_refused_by_name() {
        let rules = TargetRules::default();
        let bad_url = Targeting {
            android: Some("ftp://x".into()),
            ..Targeting::default()
        };
        let err = bad_url.validate(&rules).unwrap_err();
        assert!(err.to_string().starts_with("targeting.android:"), "{err}");
        let bad_country = Targeting {
            countries: [("USA".to_owned(), "https://e.com/".to_owned())].into(),
            ..Targeting::default()
        };
        assert_eq!(
            bad_country.validate(&rules),
            Err(TargetingError::Country("USA".into()))
        );
        assert_eq!(Targeting::default().validate(&rules), Ok(None));
    }
}
