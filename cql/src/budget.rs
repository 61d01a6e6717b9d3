//! Click budgets of capped links on CQL: one partition per link, every change one
//! conditional batch on it, guarded by the partition's `version` (compare and set).

use async_trait::async_trait;
use scylla::DeserializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::value::CqlValue;
use shortlink_core::LinkId;
use shortlink_store::budget::{LeaseRow, is_report, plan, plan_release};
use shortlink_store::{ClickBudget, LeaseGrant, LeaseRequest, StoreError};

use crate::{CqlStore, Kind, applied, backend};

/// Compare-and-set rounds before giving up (each lost round means another proxy changed
/// the budget in between); lost rounds back off for a random while, growing.
const MAX_ROUNDS: u32 = 24;

const SET_ISSUED: &str =
    "UPDATE {ks}.click_budget SET issued = ?, version = ? WHERE link_id = ? IF version = ?";
const SET_ROW: &str = "UPDATE {ks}.click_budget SET granted = ?, used = ?, expires_at = ? \
                       WHERE link_id = ? AND holder = ?";
const DELETE_ROW: &str = "DELETE FROM {ks}.click_budget WHERE link_id = ? AND holder = ?";

#[derive(DeserializeRow)]
struct BudgetRow {
    holder: Option<String>,
    issued: Option<i64>,
    version: Option<i64>,
    granted: Option<i64>,
    used: Option<i64>,
    expires_at: Option<i64>,
}

/// A link's budget as read: `issued`, `version` and the lease rows.
struct Budget {
    issued: Option<u64>,
    version: Option<i64>,
    rows: Vec<LeaseRow>,
}

fn big(value: u64) -> CqlValue {
    CqlValue::BigInt(i64::try_from(value).unwrap_or(i64::MAX))
}

impl CqlStore {
    async fn budget(&self, link_id: LinkId) -> Result<Budget, StoreError> {
        let rows: Vec<BudgetRow> = self
            .rows(
                "SELECT holder, issued, version, granted, used, expires_at \
                 FROM {ks}.click_budget WHERE link_id = ?",
                (link_id,),
            )
            .await?;
        let first = rows.first();
        Ok(Budget {
            issued: first.and_then(|r| r.issued).map(|v| v.max(0) as u64),
            version: first.and_then(|r| r.version),
            rows: rows
                .iter()
                .filter_map(|r| {
                    Some((
                        r.holder.clone()?,
                        r.granted.unwrap_or(0).max(0) as u64,
                        r.used.unwrap_or(0).max(0) as u64,
                        r.expires_at.unwrap_or(0),
                    ))
                })
                .collect(),
        })
    }

    /// Applies `statements` (each with its values) in one batch, if the budget's version
    /// is still `version`; true when it applied.
    async fn swap_budget(
        &self,
        link_id: LinkId,
        version: Option<i64>,
        issued: u64,
        statements: Vec<(&'static str, Vec<CqlValue>)>,
    ) -> Result<bool, StoreError> {
        let mut batch = Batch::new(BatchType::Logged);
        let mut values = Vec::with_capacity(statements.len() + 1);
        batch.append_statement(self.prepare(SET_ISSUED, Kind::Lwt).await?);
        let next = version.unwrap_or(0) + 1;
        // `IF version = null` when the budget does not exist yet.
        values.push(vec![
            Some(big(issued)),
            Some(CqlValue::BigInt(next)),
            Some(CqlValue::BigInt(link_id)),
            version.map(CqlValue::BigInt),
        ]);
        for (cql, bound) in statements {
            batch.append_statement(self.prepare(cql, Kind::Lwt).await?);
            values.push(bound.into_iter().map(Some).collect());
        }
        applied(self.session.batch(&batch, values).await.map_err(backend)?)
    }
}

/// Waits before compare-and-set round `round` (from 1): a random time up to 2^round ms,
/// at most 256 ms, so racing proxies spread out instead of colliding again.
async fn back_off(round: u32) {
    let most = 1u64 << round.min(8);
    tokio::time::sleep(std::time::Duration::from_millis(
        rand::random::<u64>() % most,
    ))
    .await;
}

/// The outcome of one compare-and-set round that did not apply: an error (a timeout
/// leaves the outcome unknown, and the next round reads what it was) or a lost race.
fn too_contended(link_id: LinkId, last: Option<StoreError>) -> StoreError {
    last.unwrap_or_else(|| {
        StoreError::corrupt(format!(
            "click budget of link {link_id}: too many concurrent changes"
        ))
    })
}

#[async_trait]
impl ClickBudget for CqlStore {
    async fn lease_clicks(&self, request: LeaseRequest) -> Result<LeaseGrant, StoreError> {
        let link_id = request.link_id;
        if is_report(&request) {
            // One row, one LWT: serialized with the version-guarded batches on the
            // partition, and not applied to a row that was reclaimed.
            let reported = self
                .lwt(
                    "UPDATE {ks}.click_budget SET used = ?, expires_at = ? \
                     WHERE link_id = ? AND holder = ? IF granted >= ?",
                    (
                        i64::try_from(request.used).unwrap_or(i64::MAX),
                        request.now_ms.saturating_add(request.ttl_ms),
                        link_id,
                        &request.holder,
                        i64::try_from(request.used).unwrap_or(i64::MAX),
                    ),
                )
                .await?;
            if reported {
                return Ok(LeaseGrant {
                    granted: 0,
                    remaining: 0,
                    lost: false,
                });
            }
        }
        let mut last = None;
        for round in 0..MAX_ROUNDS {
            if round > 0 {
                back_off(round).await;
            }
            let budget = self.budget(link_id).await?;
            let planned = plan(&request, budget.issued, &budget.rows);
            let (granted, used, expires_at) = planned.row;
            let mut statements = vec![(
                SET_ROW,
                vec![
                    big(granted),
                    big(used),
                    CqlValue::BigInt(expires_at),
                    CqlValue::BigInt(link_id),
                    CqlValue::Text(request.holder.clone()),
                ],
            )];
            statements.extend(planned.reclaimed.iter().map(|holder| {
                (
                    DELETE_ROW,
                    vec![CqlValue::BigInt(link_id), CqlValue::Text(holder.clone())],
                )
            }));
            // An unknown outcome that did apply leaves clicks in this holder's row that
            // it does not know of: they return when it releases the lease.
            match self
                .swap_budget(link_id, budget.version, planned.issued, statements)
                .await
            {
                Ok(true) => return Ok(planned.grant),
                Ok(false) => {}
                Err(error) => last = Some(error),
            }
        }
        Err(too_contended(link_id, last))
    }

    async fn release_clicks(
        &self,
        link_id: LinkId,
        holder: &str,
        used: u64,
    ) -> Result<bool, StoreError> {
        let mut last = None;
        for round in 0..MAX_ROUNDS {
            if round > 0 {
                back_off(round).await;
            }
            let budget = self.budget(link_id).await?;
            let row = budget
                .rows
                .iter()
                .find(|r| r.0 == holder)
                .map(|r| (r.1, r.2));
            let Some(issued) = plan_release(budget.issued.unwrap_or(0), row, used) else {
                return Ok(false);
            };
            let delete = vec![(
                DELETE_ROW,
                vec![CqlValue::BigInt(link_id), CqlValue::Text(holder.to_owned())],
            )];
            match self
                .swap_budget(link_id, budget.version, issued, delete)
                .await
            {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(error) => last = Some(error),
            }
        }
        Err(too_contended(link_id, last))
    }
}
