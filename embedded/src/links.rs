//! Links and the route change feed on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use shortlink_core::{
    Domain, Link, LinkId, LinkPatch, NewLink, RedirectStatus, ShortCode, UserId,
    time_util::now_unix,
};
use tokio::sync::watch;

use super::EmbeddedStore;
use shortlink_store::{
    ChangeBatch, Created, LinkPage, LinkStore, ListQuery, RouteChange, RoutePage, RoutePart,
    RouteSource, StoreError, targeting_json,
};

pub(crate) const LINK_COLUMNS: &str = "l.id, l.domain, l.code, l.custom_alias, l.owner, l.url, l.redirect, \
     l.expires_at, l.max_clicks, l.clicks, l.tags, l.disabled, l.created_at, l.updated_at, \
     l.password_hash, l.targeting, l.moderation, l.fallback_url";

/// Reads a link from `row`, whose columns start at `at` in `LINK_COLUMNS` order.
pub(crate) fn row_to_link(row: &Row<'_>, at: usize) -> rusqlite::Result<Link> {
    let redirect: u16 = row.get(at + 6)?;
    let tags: String = row.get(at + 10)?;
    Ok(Link {
        id: row.get(at)?,
        domain: row.get(at + 1)?,
        code: ShortCode::from_stored(row.get(at + 2)?),
        custom_alias: row.get(at + 3)?,
        owner: row.get(at + 4)?,
        url: row.get(at + 5)?,
        redirect: RedirectStatus::try_from(redirect).unwrap_or_default(),
        expires_at: row.get(at + 7)?,
        max_clicks: row.get::<_, Option<i64>>(at + 8)?.map(|v| v.max(0) as u64),
        clicks: row.get::<_, i64>(at + 9)?.max(0) as u64,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        disabled: row.get(at + 11)?,
        created_at: row.get(at + 12)?,
        updated_at: row.get(at + 13)?,
        password_hash: row.get(at + 14)?,
        targeting: row
            .get::<_, Option<String>>(at + 15)?
            .and_then(|t| serde_json::from_str(&t).ok()),
        moderation: row.get(at + 16)?,
        fallback_url: row.get(at + 17)?,
    })
}

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn feed_head(conn: &Connection) -> Result<u64, rusqlite::Error> {
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM route_changes", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|v| v.max(0) as u64)
}

pub(crate) fn record_change(
    conn: &Connection,
    domain: &str,
    code: &str,
) -> Result<(), rusqlite::Error> {
    conn.execute(
        "INSERT INTO route_changes (domain, code) VALUES (?1, ?2)",
        params![domain, code],
    )?;
    Ok(())
}

fn find_owned(
    conn: &Connection,
    owner: UserId,
    domain: &str,
    code: &str,
) -> Result<Option<Link>, rusqlite::Error> {
    conn.query_row(
        &format!(
            "SELECT {LINK_COLUMNS} FROM links l WHERE l.owner = ?1 AND l.domain = ?2 AND l.code = ?3"
        ),
        params![owner, domain, code],
        |r| row_to_link(r, 0),
    )
    .optional()
}

fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[async_trait]
impl LinkStore for EmbeddedStore {
    async fn create_link(&self, new: NewLink) -> Result<Created, StoreError> {
        self.writer
            .write(move |conn| {
                if new.is_plain() {
                    let existing = conn
                        .query_row(
                            &format!(
                                "SELECT {LINK_COLUMNS} FROM links l
                                 WHERE l.owner = ?1 AND l.domain = ?2 AND l.url = ?3 AND l.plain = 1
                                 ORDER BY l.id LIMIT 1"
                            ),
                            params![new.owner, new.domain, new.url],
                            |r| row_to_link(r, 0),
                        )
                        .optional()?;
                    if let Some(link) = existing {
                        return Ok(Created {
                            link,
                            existed: true,
                        });
                    }
                }
                let now = now_unix();
                let tags = serde_json::to_string(&new.tags)
                    .map_err(StoreError::backend)?;
                let targeting = targeting_json(&new.targeting)?;
                let inserted = conn.execute(
                    "INSERT INTO links (domain, code, custom_alias, owner, url, redirect, expires_at,
                                        max_clicks, clicks, tags, disabled, plain, created_at, updated_at,
                                        password_hash, targeting, fallback_url)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, 0, ?10, ?11, ?11, ?12, ?13, ?14)
                     ON CONFLICT (domain, code) DO NOTHING",
                    params![
                        new.domain,
                        new.code.as_str(),
                        new.custom_alias,
                        new.owner,
                        new.url,
                        new.redirect.as_u16(),
                        new.expires_at,
                        new.max_clicks.map(to_i64),
                        tags,
                        new.is_plain(),
                        now,
                        new.password_hash,
                        targeting,
                        new.fallback_url
                    ],
                )?;
                if inserted == 0 {
                    return Err(StoreError::CodeTaken(new.code.into_string()).into());
                }
                let id = conn.last_insert_rowid();
                record_change(conn, &new.domain, new.code.as_str())?;
                Ok(Created {
                    link: new.into_link(id, now),
                    existed: false,
                })
            })
            .await
    }

    async fn list_links(&self, owner: UserId, query: &ListQuery) -> Result<LinkPage, StoreError> {
        self.search_links(Some(owner), None, query).await
    }

    async fn search_links(
        &self,
        owner: Option<UserId>,
        domain: Option<&str>,
        query: &ListQuery,
    ) -> Result<LinkPage, StoreError> {
        let query = query.clone();
        let domain = domain.map(str::to_owned);
        self.read(move |conn| {
            let mut sql = format!("SELECT {LINK_COLUMNS} FROM links l WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(owner) = owner {
                args.push(owner.into());
                sql.push_str(&format!(" AND l.owner = ?{}", args.len()));
            }
            if let Some(domain) = domain {
                args.push(domain.into());
                sql.push_str(&format!(" AND l.domain = ?{}", args.len()));
            }
            if let Some(before) = query.before_id {
                args.push(before.into());
                sql.push_str(&format!(" AND l.id < ?{}", args.len()));
            }
            if let Some(tag) = &query.tag {
                args.push(tag.clone().into());
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM json_each(l.tags) t WHERE t.value = ?{})",
                    args.len()
                ));
            }
            if let Some(q) = &query.q {
                args.push(escape_like(q).into());
                let n = args.len();
                sql.push_str(&format!(
                    " AND (l.url LIKE ?{n} ESCAPE '\\' OR l.code LIKE ?{n} ESCAPE '\\')"
                ));
            }
            let limit = query.limit.max(1);
            args.push(((limit + 1) as i64).into());
            sql.push_str(&format!(" ORDER BY l.id DESC LIMIT ?{}", args.len()));
            let mut stmt = conn.prepare(&sql)?;
            let items = stmt
                .query_map(rusqlite::params_from_iter(args), |r| row_to_link(r, 0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(LinkPage::from_overfetch(items, limit))
        })
        .await
    }

    async fn update_link(
        &self,
        owner: UserId,
        domain: &str,
        code: &str,
        patch: LinkPatch,
    ) -> Result<Option<Link>, StoreError> {
        let (domain, code) = (domain.to_owned(), code.to_owned());
        self.writer
            .write(move |conn| {
                let Some(mut link) = find_owned(conn, owner, &domain, &code)? else {
                    return Ok(None);
                };
                patch.apply_to(&mut link);
                link.updated_at = now_unix();
                let tags = serde_json::to_string(&link.tags).map_err(StoreError::backend)?;
                conn.execute(
                    "UPDATE links SET url = ?1, redirect = ?2, expires_at = ?3, max_clicks = ?4,
                            tags = ?5, disabled = ?6, plain = ?7, updated_at = ?8,
                            password_hash = ?10, targeting = ?11, moderation = ?12,
                            fallback_url = ?13
                     WHERE id = ?9",
                    params![
                        link.url,
                        link.redirect.as_u16(),
                        link.expires_at,
                        link.max_clicks.map(to_i64),
                        tags,
                        link.disabled,
                        link.is_plain(),
                        link.updated_at,
                        link.id,
                        link.password_hash,
                        targeting_json(&link.targeting)?,
                        link.moderation,
                        link.fallback_url
                    ],
                )?;
                record_change(conn, &domain, &code)?;
                Ok(Some(link))
            })
            .await
    }

    async fn delete_link(
        &self,
        owner: UserId,
        domain: &str,
        code: &str,
    ) -> Result<bool, StoreError> {
        let (domain, code) = (domain.to_owned(), code.to_owned());
        self.writer
            .write(move |conn| {
                let deleted = conn.execute(
                    "DELETE FROM links WHERE owner = ?1 AND domain = ?2 AND code = ?3",
                    params![owner, domain, code],
                )?;
                if deleted > 0 {
                    record_change(conn, &domain, &code)?;
                }
                Ok(deleted > 0)
            })
            .await
    }

    async fn installation_salt(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            let text: String =
                conn.query_row("SELECT value FROM meta WHERE key = 'code_salt'", [], |r| {
                    r.get(0)
                })?;
            text.parse()
                .map_err(|_| StoreError::corrupt("stored code salt is not a number").into())
        })
        .await
    }

    async fn installation_secret(&self) -> Result<[u8; 32], StoreError> {
        self.read(|conn| {
            let text: String = conn.query_row(
                "SELECT value FROM meta WHERE key = 'signing_key'",
                [],
                |r| r.get(0),
            )?;
            let bytes: Vec<u8> = (0..text.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
                .collect();
            bytes
                .try_into()
                .map_err(|_| StoreError::corrupt("stored signing key is malformed").into())
        })
        .await
    }
}

#[async_trait]
impl RouteSource for EmbeddedStore {
    async fn get_link(&self, domain: &str, code: &str) -> Result<Option<Link>, StoreError> {
        let (domain, code) = (domain.to_owned(), code.to_owned());
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {LINK_COLUMNS} FROM links l WHERE l.domain = ?1 AND l.code = ?2"
                    ),
                    params![domain, code],
                    |r| row_to_link(r, 0),
                )
                .optional()?)
        })
        .await
    }

    async fn list_domains(&self) -> Result<Vec<Domain>, StoreError> {
        self.domains().await
    }

    async fn installation_id(&self) -> Result<u64, StoreError> {
        LinkStore::installation_salt(self).await
    }

    async fn certificates_version(&self) -> Result<u64, StoreError> {
        EmbeddedStore::certificates_version(self).await
    }

    async fn list_certificates(
        &self,
    ) -> Result<Vec<shortlink_core::StoredCertificate>, StoreError> {
        self.certificates().await
    }

    async fn feed_head(&self) -> Result<u64, StoreError> {
        self.read(|conn| Ok(feed_head(conn)?)).await
    }

    async fn routes_page(
        &self,
        part: RoutePart,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<RoutePage, StoreError> {
        // A local file reads fastest in one ordered scan: every link is in part 0.
        if part.index > 0 {
            return Ok(RoutePage {
                links: Vec::new(),
                next: None,
            });
        }
        // The cursor is the last id of the previous page, big-endian.
        let after_id = match cursor {
            None => 0,
            Some(bytes) => LinkId::from_be_bytes(
                bytes
                    .try_into()
                    .map_err(|_| StoreError::corrupt("malformed route page cursor"))?,
            ),
        };
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {LINK_COLUMNS} FROM links l WHERE l.id > ?1 ORDER BY l.id LIMIT ?2"
            ))?;
            let links = stmt
                .query_map(params![after_id, limit as i64], |r| row_to_link(r, 0))?
                .collect::<Result<Vec<_>, _>>()?;
            let next = match links.last() {
                Some(last) if links.len() >= limit => Some(last.id.to_be_bytes().to_vec()),
                _ => None,
            };
            Ok(RoutePage { links, next })
        })
        .await
    }

    async fn route_changes(&self, after: u64, limit: usize) -> Result<ChangeBatch, StoreError> {
        self.read(move |conn| {
            let oldest: Option<i64> =
                conn.query_row("SELECT MIN(seq) FROM route_changes", [], |r| r.get(0))?;
            let reset = oldest.is_some_and(|oldest| to_i64(after) + 1 < oldest);
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT c.seq, c.domain, c.code, {LINK_COLUMNS}
                 FROM route_changes c
                 LEFT JOIN links l ON l.domain = c.domain AND l.code = c.code
                 WHERE c.seq > ?1 ORDER BY c.seq LIMIT ?2"
            ))?;
            let changes = stmt
                .query_map(params![to_i64(after), limit as i64], |r| {
                    let present: Option<i64> = r.get(3)?;
                    Ok(RouteChange {
                        seq: r.get::<_, i64>(0)?.max(0) as u64,
                        domain: r.get(1)?,
                        code: r.get(2)?,
                        link: match present {
                            Some(_) => Some(row_to_link(r, 3)?),
                            None => None,
                        },
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let next = changes.last().map_or(after, |c| c.seq);
            Ok(ChangeBatch {
                changes,
                reset,
                next,
            })
        })
        .await
    }

    fn change_hint(&self) -> Option<watch::Receiver<u64>> {
        Some(self.hint.clone())
    }
}
