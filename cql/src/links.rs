//! Links and the route change feed on CQL.

use async_trait::async_trait;
use scylla::DeserializeRow;
use sha2::{Digest, Sha256};
use shortlink_core::time_util::now_unix;
use shortlink_core::{Domain, Link, LinkId, LinkPatch, NewLink, RedirectStatus, ShortCode, UserId};
use shortlink_store::{
    ChangeBatch, Created, LinkPage, LinkStore, ListQuery, RouteChange, RoutePage, RoutePart,
    RouteSource, StoreError,
};
use tokio::sync::watch;

use crate::{CqlStore, Kind, backend, ids};
use shortlink_store::targeting_json;

/// The `links` columns a [`LinkRow`] reads, in its field order.
macro_rules! link_select {
    () => {
        "SELECT domain, code, id, custom_alias, owner, url, redirect, expires_at, max_clicks, \
         tags, disabled, created_at, updated_at, password_hash, targeting, moderation, \
         fallback_url FROM {ks}.links"
    };
}

pub(crate) const LINK_SELECT: &str = link_select!();

/// The links whose partition tokens fall in a range: one part of a bulk load.
const LINK_SELECT_TOKENS: &str = concat!(
    link_select!(),
    " WHERE token(domain, code) >= ? AND token(domain, code) <= ?"
);

/// The first and last partition token of `part` (Murmur3 tokens span all of `i64`).
fn token_range(part: RoutePart) -> (i64, i64) {
    let count = i128::from(part.count.max(1));
    let index = i128::from(part.index.min(part.count.saturating_sub(1)));
    let span = 1i128 << 64;
    let first = i128::from(i64::MIN) + span * index / count;
    let last = i128::from(i64::MIN) + span * (index + 1) / count - 1;
    (first as i64, last as i64)
}

/// A `links` row.
#[derive(DeserializeRow)]
pub(crate) struct LinkRow {
    domain: String,
    code: String,
    id: i64,
    custom_alias: Option<bool>,
    owner: i64,
    url: String,
    redirect: Option<i32>,
    expires_at: Option<i64>,
    max_clicks: Option<i64>,
    tags: Option<Vec<String>>,
    disabled: Option<bool>,
    created_at: Option<i64>,
    updated_at: Option<i64>,
    password_hash: Option<String>,
    targeting: Option<String>,
    moderation: Option<String>,
    fallback_url: Option<String>,
}

impl LinkRow {
    pub(crate) fn into_link(self, clicks: i64) -> Link {
        Link {
            id: self.id,
            domain: self.domain,
            code: ShortCode::from_stored(self.code),
            custom_alias: self.custom_alias.unwrap_or(false),
            owner: self.owner,
            url: self.url,
            redirect: self
                .redirect
                .and_then(|r| u16::try_from(r).ok())
                .and_then(|r| RedirectStatus::try_from(r).ok())
                .unwrap_or_default(),
            expires_at: self.expires_at,
            max_clicks: self.max_clicks.map(|m| m.max(0) as u64),
            clicks: clicks.max(0) as u64,
            tags: self.tags.unwrap_or_default(),
            disabled: self.disabled.unwrap_or(false),
            created_at: self.created_at.unwrap_or(0),
            updated_at: self.updated_at.unwrap_or(0),
            password_hash: self.password_hash,
            targeting: self.targeting.and_then(|t| serde_json::from_str(&t).ok()),
            moderation: self.moderation,
            fallback_url: self.fallback_url,
        }
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn url_hash(url: &str) -> Vec<u8> {
    Sha256::digest(url.as_bytes()).to_vec()
}

/// The calendar month partition of an owner's link list holding link `id`.
pub(crate) fn owner_month(id: LinkId) -> i32 {
    ids::month_of(ids::unix_secs(id))
}

impl CqlStore {
    /// Counted clicks of one link.
    pub(crate) async fn link_clicks(&self, id: LinkId) -> Result<i64, StoreError> {
        Ok(self
            .clicks_of(vec![id])
            .await?
            .get(&id)
            .copied()
            .unwrap_or(0))
    }

    /// Counted clicks of `ids`: the counter of versions before per-writer counts plus
    /// every writer's row (links without clicks are absent).
    async fn clicks_of(
        &self,
        ids: Vec<LinkId>,
    ) -> Result<std::collections::HashMap<LinkId, i64>, StoreError> {
        let counted: Vec<(i64, Option<scylla::value::Counter>)> = self
            .rows(
                "SELECT link_id, clicks FROM {ks}.link_clicks WHERE link_id IN ?",
                (&ids,),
            )
            .await?;
        let written: Vec<(i64, Option<i64>)> = self
            .rows(
                "SELECT link_id, clicks FROM {ks}.link_clicks_w WHERE link_id IN ?",
                (&ids,),
            )
            .await?;
        let mut counts = std::collections::HashMap::new();
        let counted = counted
            .into_iter()
            .map(|(id, c)| (id, c.map_or(0, |c| c.0)));
        let written = written.into_iter().map(|(id, n)| (id, n.unwrap_or(0)));
        for (id, n) in counted.chain(written) {
            *counts.entry(id).or_default() += n;
        }
        Ok(counts)
    }

    /// The stored row at (domain, code), without its click count.
    pub(crate) async fn link_row(
        &self,
        domain: &str,
        code: &str,
    ) -> Result<Option<LinkRow>, StoreError> {
        const CQL: &str = "SELECT domain, code, id, custom_alias, owner, url, redirect, \
             expires_at, max_clicks, tags, disabled, created_at, updated_at, password_hash, \
             targeting, moderation, fallback_url FROM {ks}.links WHERE domain = ? AND code = ?";
        self.row(CQL, (domain, code)).await
    }

    /// Appends a route change for (domain, code).
    pub(crate) async fn record_change(&self, domain: &str, code: &str) -> Result<(), StoreError> {
        let seq = ids::next_id();
        self.exec(
            "INSERT INTO {ks}.route_changes (bucket, seq, domain, code) VALUES (?, ?, ?, ?) USING TTL ?",
            Kind::Write,
            (ids::bucket(seq), seq, domain, code, self.route_feed_ttl),
        )
        .await?;
        Ok(())
    }

    /// Claims the owner's dedupe slot for a plain link to `url`; returns the existing plain
    /// link when another one holds it.
    async fn claim_dedupe(&self, new: &NewLink, id: LinkId) -> Result<Option<Link>, StoreError> {
        let hash = url_hash(&new.url);
        for _ in 0..3 {
            let claimed = self
                .lwt_retrying(
                    "INSERT INTO {ks}.links_by_url (owner, domain, url_hash, link_id, code) \
                     VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
                    (new.owner, &new.domain, &hash, id, new.code.as_str()),
                )
                .await?;
            if claimed {
                return Ok(None);
            }
            let holder: Option<(i64, String)> = self
                .row(
                    "SELECT link_id, code FROM {ks}.links_by_url \
                     WHERE owner = ? AND domain = ? AND url_hash = ?",
                    (new.owner, &new.domain, &hash),
                )
                .await?;
            let Some((holder_id, holder_code)) = holder else {
                continue;
            };
            if holder_id == id {
                // Claimed by an attempt whose answer was lost.
                return Ok(None);
            }
            if let Some(link) = self.get_link(&new.domain, &holder_code).await?
                && link.id == holder_id
                && link.owner == new.owner
                && link.url == new.url
                && link.is_plain()
            {
                return Ok(Some(link));
            }
            // The slot points at a link that is gone or changed: take it over.
            self.lwt_retrying(
                "DELETE FROM {ks}.links_by_url WHERE owner = ? AND domain = ? AND url_hash = ? \
                 IF link_id = ?",
                (new.owner, &new.domain, &hash, holder_id),
            )
            .await?;
        }
        Err(StoreError::corrupt(
            "could not settle the deduplication slot (concurrent writers)",
        ))
    }

    async fn release_dedupe(
        &self,
        owner: UserId,
        domain: &str,
        url: &str,
        id: LinkId,
    ) -> Result<(), StoreError> {
        self.lwt_retrying(
            "DELETE FROM {ks}.links_by_url WHERE owner = ? AND domain = ? AND url_hash = ? \
             IF link_id = ?",
            (owner, domain, url_hash(url), id),
        )
        .await?;
        Ok(())
    }

    /// Full links for rows of one page, with their click counts: every link's with
    /// `every`, else only capped links' (a proxy starts a capped link's click budget from
    /// its count; the others read 0).
    pub(crate) async fn with_clicks(
        &self,
        rows: Vec<LinkRow>,
        every: bool,
    ) -> Result<Vec<Link>, StoreError> {
        let capped: Vec<i64> = rows
            .iter()
            .filter(|r| every || r.max_clicks.is_some())
            .map(|r| r.id)
            .collect();
        let counts = if capped.is_empty() {
            std::collections::HashMap::new()
        } else {
            self.clicks_of(capped).await?
        };
        Ok(rows
            .into_iter()
            .map(|r| {
                let clicks = counts.get(&r.id).copied().unwrap_or(0);
                r.into_link(clicks)
            })
            .collect())
    }
}

#[async_trait]
impl LinkStore for CqlStore {
    async fn create_link(&self, new: NewLink) -> Result<Created, StoreError> {
        let id = ids::next_id();
        let plain = new.is_plain();
        if plain && let Some(link) = self.claim_dedupe(&new, id).await? {
            return Ok(Created {
                link,
                existed: true,
            });
        }
        let now = now_unix();
        let tags = (!new.tags.is_empty()).then_some(&new.tags);
        let claimed = self
            .lwt_retrying(
                "INSERT INTO {ks}.links (domain, code, id, custom_alias, owner, url, redirect, \
                 expires_at, max_clicks, tags, disabled, created_at, updated_at, password_hash, \
                 targeting, fallback_url) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false, ?, ?, ?, ?, ?) \
                 IF NOT EXISTS",
                (
                    &new.domain,
                    new.code.as_str(),
                    id,
                    new.custom_alias,
                    new.owner,
                    &new.url,
                    i32::from(new.redirect.as_u16()),
                    new.expires_at,
                    new.max_clicks.map(to_i64),
                    tags,
                    now,
                    now,
                    &new.password_hash,
                    targeting_json(&new.targeting)?,
                    &new.fallback_url,
                ),
            )
            .await?;
        // Not applied: another link has the code, or an earlier attempt of this one
        // applied and its answer was lost.
        let claimed = claimed
            || self
                .row::<(LinkId,)>(
                    "SELECT id FROM {ks}.links WHERE domain = ? AND code = ?",
                    (&new.domain, new.code.as_str()),
                )
                .await?
                .is_some_and(|(existing,)| existing == id);
        if !claimed {
            if plain {
                self.release_dedupe(new.owner, &new.domain, &new.url, id)
                    .await?;
            }
            return Err(StoreError::CodeTaken(new.code.into_string()));
        }
        self.exec(
            "INSERT INTO {ks}.links_by_id (id, domain, code) VALUES (?, ?, ?)",
            Kind::Write,
            (id, &new.domain, new.code.as_str()),
        )
        .await?;
        self.exec(
            "INSERT INTO {ks}.links_by_owner (owner, month, id, domain, code, url, tags) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            Kind::Write,
            (
                new.owner,
                owner_month(id),
                id,
                &new.domain,
                new.code.as_str(),
                &new.url,
                tags,
            ),
        )
        .await?;
        self.record_change(&new.domain, new.code.as_str()).await?;
        Ok(Created {
            link: new.into_link(id, now),
            existed: false,
        })
    }

    async fn search_links(
        &self,
        owner: Option<UserId>,
        domain: Option<&str>,
        query: &ListQuery,
    ) -> Result<LinkPage, StoreError> {
        if let (Some(owner), None) = (owner, domain) {
            return self.list_links(owner, query).await;
        }
        // Across owners there is no ordered index: the search scans every link the way a
        // proxy's bulk load does. Admins search by hand, rarely; this keeps the write path
        // free of a global index.
        use shortlink_store::RouteSource;
        let limit = query.limit.max(1);
        let needle = query.q.as_ref().map(|q| q.to_lowercase());
        let mut found: Vec<Link> = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.routes_page(RoutePart::WHOLE, cursor, 1000).await?;
            found.extend(page.links.into_iter().filter(|link| {
                owner.is_none_or(|o| link.owner == o)
                    && domain.is_none_or(|d| link.domain == d)
                    && query.before_id.is_none_or(|b| link.id < b)
                    && query.tag.as_ref().is_none_or(|t| link.tags.contains(t))
                    && needle.as_ref().is_none_or(|n| {
                        link.url.to_lowercase().contains(n)
                            || link.code.as_str().to_lowercase().contains(n)
                    })
            }));
            found.sort_by_key(|l| std::cmp::Reverse(l.id));
            found.truncate(limit + 1);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(LinkPage::from_overfetch(found, limit))
    }

    async fn list_links(&self, owner: UserId, query: &ListQuery) -> Result<LinkPage, StoreError> {
        use futures_util::StreamExt;
        let limit = query.limit.max(1);
        let needle = query.q.as_ref().map(|q| q.to_lowercase());
        // Months are walked newest first, down to the owner's first month.
        let first_month = match self.user_created_at(owner).await? {
            Some(created) => ids::month_of(created),
            // 2020-01, where ids begin.
            None => ids::month_of(1_577_836_800),
        };
        let mut month = match query.before_id {
            Some(before) => owner_month(before),
            None => ids::month_of(now_unix()),
        };
        let before = query.before_id.unwrap_or(i64::MAX);
        let mut matches: Vec<(String, String, i64)> = Vec::new();
        'months: while month >= first_month && matches.len() <= limit {
            let statement = self
                .prepare(
                    "SELECT id, domain, code, url, tags FROM {ks}.links_by_owner \
                     WHERE owner = ? AND month = ? AND id < ?",
                    Kind::Read,
                )
                .await?;
            let mut rows = self
                .session
                .execute_iter(statement, (owner, month, before))
                .await
                .map_err(backend)?
                .rows_stream::<(i64, String, String, Option<String>, Option<Vec<String>>)>()
                .map_err(backend)?;
            while let Some(row) = rows.next().await {
                let (id, domain, code, url, tags) = row.map_err(backend)?;
                let tags = tags.unwrap_or_default();
                if let Some(tag) = &query.tag
                    && !tags.contains(tag)
                {
                    continue;
                }
                if let Some(needle) = &needle {
                    let url = url.unwrap_or_default().to_lowercase();
                    if !url.contains(needle.as_str())
                        && !code.to_lowercase().contains(needle.as_str())
                    {
                        continue;
                    }
                }
                matches.push((domain, code, id));
                if matches.len() > limit {
                    break 'months;
                }
            }
            month -= 1;
        }
        let more = matches.len() > limit;
        matches.truncate(limit);
        let fetched: Vec<Result<Option<Link>, StoreError>> =
            futures_util::stream::iter(matches.into_iter().map(|(domain, code, id)| async move {
                Ok(self
                    .get_link(&domain, &code)
                    .await?
                    .filter(|link| link.id == id))
            }))
            .buffered(16)
            .collect()
            .await;
        let mut items = Vec::with_capacity(fetched.len());
        for link in fetched {
            items.extend(link?);
        }
        let next_before_id = if more {
            items.last().map(|l| l.id)
        } else {
            None
        };
        Ok(LinkPage {
            items,
            next_before_id,
        })
    }

    async fn update_link(
        &self,
        owner: UserId,
        domain: &str,
        code: &str,
        patch: LinkPatch,
    ) -> Result<Option<Link>, StoreError> {
        let Some(mut link) = self.get_link(domain, code).await? else {
            return Ok(None);
        };
        if link.owner != owner {
            return Ok(None);
        }
        let was_plain = link.is_plain();
        let old_url = link.url.clone();
        patch.apply_to(&mut link);
        link.updated_at = now_unix();
        let tags = (!link.tags.is_empty()).then_some(&link.tags);
        let applied = self
            .lwt_retrying(
                "UPDATE {ks}.links SET url = ?, redirect = ?, expires_at = ?, max_clicks = ?, \
                 tags = ?, disabled = ?, updated_at = ?, password_hash = ?, targeting = ?, \
                 moderation = ?, fallback_url = ? WHERE domain = ? AND code = ? IF id = ?",
                (
                    &link.url,
                    i32::from(link.redirect.as_u16()),
                    link.expires_at,
                    link.max_clicks.map(to_i64),
                    tags,
                    link.disabled,
                    link.updated_at,
                    &link.password_hash,
                    targeting_json(&link.targeting)?,
                    &link.moderation,
                    &link.fallback_url,
                    domain,
                    code,
                    link.id,
                ),
            )
            .await?;
        if !applied {
            return Ok(None);
        }
        self.exec(
            "UPDATE {ks}.links_by_owner SET url = ?, tags = ? WHERE owner = ? AND month = ? AND id = ?",
            Kind::Write,
            (&link.url, tags, owner, owner_month(link.id), link.id),
        )
        .await?;
        let now_plain = link.is_plain();
        let url_changed = old_url != link.url;
        if was_plain && (!now_plain || url_changed) {
            self.release_dedupe(owner, domain, &old_url, link.id)
                .await?;
        }
        if now_plain && (!was_plain || url_changed) {
            self.lwt_retrying(
                "INSERT INTO {ks}.links_by_url (owner, domain, url_hash, link_id, code) \
                 VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
                (owner, domain, url_hash(&link.url), link.id, code),
            )
            .await?;
        }
        self.record_change(domain, code).await?;
        Ok(Some(link))
    }

    async fn delete_link(
        &self,
        owner: UserId,
        domain: &str,
        code: &str,
    ) -> Result<bool, StoreError> {
        let Some(row) = self.link_row(domain, code).await? else {
            return Ok(false);
        };
        if row.owner != owner {
            return Ok(false);
        }
        let link = row.into_link(0);
        let (deleted, retried) = self
            .lwt_retrying_noted(
                "DELETE FROM {ks}.links WHERE domain = ? AND code = ? IF id = ?",
                (domain, code, link.id),
            )
            .await?;
        // An attempt that went unanswered may have deleted it: if this link is gone now,
        // it is deleted (by that attempt or a concurrent delete), and the rest is done.
        let gone = || async {
            Ok::<_, StoreError>(
                self.link_row(domain, code)
                    .await?
                    .is_none_or(|now| now.id != link.id),
            )
        };
        let deleted = deleted || (retried && gone().await?);
        if !deleted {
            return Ok(false);
        }
        self.exec(
            "DELETE FROM {ks}.links_by_id WHERE id = ?",
            Kind::Write,
            (link.id,),
        )
        .await?;
        self.exec(
            "DELETE FROM {ks}.links_by_owner WHERE owner = ? AND month = ? AND id = ?",
            Kind::Write,
            (owner, owner_month(link.id), link.id),
        )
        .await?;
        if link.is_plain() {
            self.release_dedupe(owner, domain, &link.url, link.id)
                .await?;
        }
        self.record_change(domain, code).await?;
        Ok(true)
    }

    async fn installation_salt(&self) -> Result<u64, StoreError> {
        self.meta("code_salt")
            .await?
            .parse()
            .map_err(|_| StoreError::corrupt("stored code salt is not a number"))
    }

    async fn installation_secret(&self) -> Result<[u8; 32], StoreError> {
        let text = self.meta("signing_key").await?;
        let bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
            .collect();
        bytes
            .try_into()
            .map_err(|_| StoreError::corrupt("stored signing key is malformed"))
    }
}

#[async_trait]
impl RouteSource for CqlStore {
    async fn get_link(&self, domain: &str, code: &str) -> Result<Option<Link>, StoreError> {
        let Some(row) = self.link_row(domain, code).await? else {
            return Ok(None);
        };
        let clicks = self.link_clicks(row.id).await?;
        Ok(Some(row.into_link(clicks)))
    }

    async fn list_domains(&self) -> Result<Vec<Domain>, StoreError> {
        self.domains().await
    }

    async fn installation_id(&self) -> Result<u64, StoreError> {
        LinkStore::installation_salt(self).await
    }

    async fn certificates_version(&self) -> Result<u64, StoreError> {
        CqlStore::certificates_version(self).await
    }

    async fn list_certificates(
        &self,
    ) -> Result<Vec<shortlink_core::StoredCertificate>, StoreError> {
        self.certificates().await
    }

    async fn feed_head(&self) -> Result<u64, StoreError> {
        Ok(self.horizon().max(0) as u64)
    }

    async fn routes_page(
        &self,
        part: RoutePart,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<RoutePage, StoreError> {
        let (rows, next) = if part.count <= 1 {
            self.page::<LinkRow>(LINK_SELECT, cursor, limit).await?
        } else {
            self.page_of::<LinkRow>(LINK_SELECT_TOKENS, token_range(part), cursor, limit)
                .await?
        };
        let links = self.with_clicks(rows, false).await?;
        Ok(RoutePage { links, next })
    }

    async fn route_changes(&self, after: u64, limit: usize) -> Result<ChangeBatch, StoreError> {
        let horizon = self.horizon();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let oldest = ids::id_secs_ago(i64::from(self.route_feed_ttl));
        if after < oldest {
            return Ok(ChangeBatch {
                changes: Vec::new(),
                reset: true,
                next: horizon.max(0) as u64,
            });
        }
        let mut found: Vec<(i64, String, String)> = Vec::new();
        let mut bucket = ids::bucket(after);
        while bucket <= ids::bucket(horizon) && found.len() < limit {
            let want = i32::try_from(limit - found.len()).unwrap_or(i32::MAX);
            let rows: Vec<(i64, String, String)> = self
                .rows(
                    "SELECT seq, domain, code FROM {ks}.route_changes \
                     WHERE bucket = ? AND seq > ? AND seq <= ? LIMIT ?",
                    (bucket, after, horizon, want),
                )
                .await?;
            found.extend(rows);
            bucket += 1;
        }
        let full = found.len() >= limit;
        // Each change carries the link as it is now: reading it once per code is enough.
        let codes: std::collections::HashSet<(String, String)> = found
            .iter()
            .map(|(_, domain, code)| (domain.clone(), code.clone()))
            .collect();
        let current: std::collections::HashMap<(String, String), Option<Link>> = {
            use futures_util::StreamExt;
            let read: Vec<Result<((String, String), Option<Link>), StoreError>> =
                futures_util::stream::iter(codes.into_iter().map(|key| async move {
                    let link = self.get_link(&key.0, &key.1).await?;
                    Ok((key, link))
                }))
                .buffer_unordered(32)
                .collect()
                .await;
            read.into_iter().collect::<Result<_, _>>()?
        };
        let next = match found.last() {
            Some((seq, _, _)) if full => *seq,
            _ => horizon.max(after),
        };
        let changes = found
            .into_iter()
            .map(|(seq, domain, code)| {
                let link = current
                    .get(&(domain.clone(), code.clone()))
                    .cloned()
                    .flatten();
                RouteChange {
                    seq: seq.max(0) as u64,
                    domain,
                    code,
                    link,
                }
            })
            .collect();
        Ok(ChangeBatch {
            changes,
            reset: false,
            next: next.max(0) as u64,
        })
    }

    fn change_hint(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ranges_cover_every_token_once() {
        for count in [1u32, 2, 3, 8, 64] {
            let mut expect = i64::MIN;
            for index in 0..count {
                let (first, last) = token_range(RoutePart { index, count });
                assert_eq!(first, expect, "part {index} of {count}");
                assert!(last >= first);
                expect = last.wrapping_add(1);
            }
            assert_eq!(
                expect,
                i64::MIN,
                "the last part of {count} ends at i64::MAX"
            );
        }
    }
}
