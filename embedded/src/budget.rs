//! Click budgets of capped links on SQLite: each request is one operation of the
//! writer's transaction, so budgets change one request at a time.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use shortlink_core::LinkId;
use shortlink_store::budget::{LeaseRow, is_report, plan, plan_release};
use shortlink_store::{ClickBudget, LeaseGrant, LeaseRequest, StoreError};

use super::EmbeddedStore;
use super::links::to_i64;

fn issued(conn: &Connection, link_id: LinkId) -> rusqlite::Result<Option<u64>> {
    conn.query_row(
        "SELECT issued FROM click_budgets WHERE link_id = ?1",
        params![link_id],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|v| v.map(|v| v.max(0) as u64))
}

fn set_issued(conn: &Connection, link_id: LinkId, issued: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO click_budgets (link_id, issued) VALUES (?1, ?2)
         ON CONFLICT (link_id) DO UPDATE SET issued = excluded.issued",
        params![link_id, to_i64(issued)],
    )?;
    Ok(())
}

#[async_trait]
impl ClickBudget for EmbeddedStore {
    async fn lease_clicks(&self, request: LeaseRequest) -> Result<LeaseGrant, StoreError> {
        self.writer
            .write(move |conn| {
                let link_id = request.link_id;
                if is_report(&request) {
                    let reported = conn
                        .prepare_cached(
                            "UPDATE click_leases SET used = MAX(used, MIN(?1, granted)),
                             expires_at = ?2 WHERE link_id = ?3 AND holder = ?4",
                        )?
                        .execute(params![
                            to_i64(request.used),
                            request.now_ms.saturating_add(request.ttl_ms),
                            link_id,
                            request.holder
                        ])?;
                    if reported == 1 {
                        return Ok(LeaseGrant {
                            granted: 0,
                            remaining: 0,
                            lost: false,
                        });
                    }
                }
                let before = issued(conn, link_id)?;
                let rows = conn
                    .prepare_cached(
                        "SELECT holder, granted, used, expires_at FROM click_leases
                         WHERE link_id = ?1",
                    )?
                    .query_map(params![link_id], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?.max(0) as u64,
                            r.get::<_, i64>(2)?.max(0) as u64,
                            r.get::<_, i64>(3)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<LeaseRow>>>()?;
                let planned = plan(&request, before, &rows);
                for holder in &planned.reclaimed {
                    conn.execute(
                        "DELETE FROM click_leases WHERE link_id = ?1 AND holder = ?2",
                        params![link_id, holder],
                    )?;
                }
                set_issued(conn, link_id, planned.issued)?;
                let (granted, used, expires_at) = planned.row;
                conn.execute(
                    "INSERT INTO click_leases (link_id, holder, granted, used, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (link_id, holder) DO UPDATE SET granted = excluded.granted,
                        used = excluded.used, expires_at = excluded.expires_at",
                    params![
                        link_id,
                        request.holder,
                        to_i64(granted),
                        to_i64(used),
                        expires_at
                    ],
                )?;
                Ok(planned.grant)
            })
            .await
    }

    async fn release_clicks(
        &self,
        link_id: LinkId,
        holder: &str,
        used: u64,
    ) -> Result<bool, StoreError> {
        let holder = holder.to_owned();
        self.writer
            .write(move |conn| {
                let row = conn
                    .query_row(
                        "SELECT granted, used FROM click_leases WHERE link_id = ?1 AND holder = ?2",
                        params![link_id, holder],
                        |r| {
                            Ok((
                                r.get::<_, i64>(0)?.max(0) as u64,
                                r.get::<_, i64>(1)?.max(0) as u64,
                            ))
                        },
                    )
                    .optional()?;
                let before = issued(conn, link_id)?.unwrap_or(0);
                let Some(after) = plan_release(before, row, used) else {
                    return Ok(false);
                };
                set_issued(conn, link_id, after)?;
                conn.execute(
                    "DELETE FROM click_leases WHERE link_id = ?1 AND holder = ?2",
                    params![link_id, holder],
                )?;
                Ok(true)
            })
            .await
    }
}
