//! Click budgets: how proxies share a capped link's `max_clicks` so that together they
//! never answer more redirects than the limit.
//!
//! Each capped link has a budget in the store: `issued`, the clicks handed out so far,
//! and one lease row per proxy holding some (`granted` in total, `used` as last
//! reported, `expires_at`). A proxy answers a capped link's redirects only from clicks
//! its lease holds; it asks for more before they run out, reports what it used on each
//! request, and hands back the rest when it stops. A lease not renewed by its expiry
//! (plus [`RECLAIM_GRACE_MS`] for clock skew) is reclaimed by the next request for that
//! link: what it did not use, as last reported, returns to the budget.
//!
//! Every change to a link's budget is one transaction (SQLite) or one lightweight
//! transaction on the link's partition (CQL), so two proxies can never both take the
//! same click.

use async_trait::async_trait;
use shortlink_core::LinkId;

use crate::StoreError;

/// How long past its expiry a lease is still honoured before another request reclaims
/// it: the clock skew between proxies this tolerates.
pub const RECLAIM_GRACE_MS: i64 = 5_000;

/// A request for clicks of one capped link's budget by one proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// The capped link.
    pub link_id: LinkId,
    /// The link's limit as the proxy's route has it.
    pub max_clicks: u64,
    /// The clicks counted for the link when the budget does not exist yet (the route's
    /// count): a link capped before budgets existed starts from what it served.
    pub counted: u64,
    /// The proxy's lease: one per proxy process and link.
    pub holder: String,
    /// Clicks of this lease the proxy has answered so far (cumulative).
    pub used: u64,
    /// Clicks wanted now (0: only report `used` and extend the lease).
    pub want: u64,
    /// Whether the proxy holds this lease from an earlier grant: its absence then means
    /// it was reclaimed. Without, a row of this holder is returned and a new one begun.
    pub held: bool,
    /// Now, Unix milliseconds, by the proxy's clock.
    pub now_ms: i64,
    /// How long the lease lasts from now.
    pub ttl_ms: i64,
}

/// What a lease request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// Clicks added to the lease (0 when nothing is left or nothing was wanted).
    pub granted: u64,
    /// Clicks of the budget nobody holds after this grant.
    pub remaining: u64,
    /// The lease the proxy held was reclaimed (it outlived its expiry): the clicks it
    /// still had are void, and `granted` starts a new lease.
    pub lost: bool,
}

/// Clicks to grant of `remaining` when `want` are asked for: never more than a quarter
/// of what is left (rounded up), so that proxies racing for the last clicks share them
/// and the very last go one by one.
pub fn grant_size(remaining: u64, want: u64) -> u64 {
    want.min(remaining.div_ceil(4))
}

/// The budget arithmetic both backends apply inside their transaction: given the
/// budget's `issued` and the lease rows, what to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetPlan {
    /// The new `issued`.
    pub issued: u64,
    /// The holder's row after the request: (granted, used, expires_at).
    pub row: (u64, u64, i64),
    /// Expired rows of other holders to delete (their unused clicks are returned).
    pub reclaimed: Vec<String>,
    /// What the caller gets.
    pub grant: LeaseGrant,
}

/// One lease row as stored: (holder, granted, used, expires_at).
pub type LeaseRow = (String, u64, u64, i64);

/// Plans `request` against a budget of `issued` clicks (`None`: no budget yet) with
/// lease rows `rows`.
pub fn plan(request: &LeaseRequest, issued: Option<u64>, rows: &[LeaseRow]) -> BudgetPlan {
    let mut issued = issued.unwrap_or(request.counted);
    let mut reclaimed = Vec::new();
    let mut own = None;
    for (holder, granted, used, expires_at) in rows {
        let own_row = *holder == request.holder;
        if own_row && request.held {
            own = Some((*granted, *used));
        } else if own_row || expires_at.saturating_add(RECLAIM_GRACE_MS) < request.now_ms {
            // An expired lease, or one its holder let go of and starts afresh: what it
            // did not use (as last reported) returns.
            issued = issued.saturating_sub(granted.saturating_sub(*used));
            if !own_row {
                reclaimed.push(holder.clone());
            }
        }
    }
    let lost = request.held && own.is_none();
    let (granted, used) = match own {
        // The proxy's count only grows; a report cannot take back what it holds.
        Some((granted, used)) => (granted, used.max(request.used).min(granted)),
        None => (0, 0),
    };
    let remaining = request.max_clicks.saturating_sub(issued);
    let add = grant_size(remaining, request.want);
    issued += add;
    BudgetPlan {
        issued,
        row: (
            granted + add,
            used,
            request.now_ms.saturating_add(request.ttl_ms),
        ),
        reclaimed,
        grant: LeaseGrant {
            granted: add,
            remaining: remaining - add,
            lost,
        },
    }
}

/// Plans the release of `holder`'s lease having used `used` of it: the new `issued`
/// (the unused clicks return), or `None` when there is no such lease.
pub fn plan_release(issued: u64, row: Option<(u64, u64)>, used: u64) -> Option<u64> {
    let (granted, reported) = row?;
    let used = used.max(reported).min(granted);
    Some(issued.saturating_sub(granted - used))
}

/// Whether `request` only reports and renews a lease it holds: backends may then write
/// the holder's row alone (`used` and `expires_at`, if the row still exists) instead of
/// planning the whole budget; only a request for clicks reclaims others' leases.
pub fn is_report(request: &LeaseRequest) -> bool {
    request.want == 0 && request.held
}

/// Click budgets of capped links, shared by every proxy on this store.
#[async_trait]
pub trait ClickBudget: Send + Sync {
    /// Reports the clicks the holder used, extends its lease and grants up to `want`
    /// more (see [`plan`]), reclaiming expired leases of other holders on the way (see
    /// [`is_report`] for what a report alone may skip).
    async fn lease_clicks(&self, request: LeaseRequest) -> Result<LeaseGrant, StoreError>;

    /// Ends `holder`'s lease on `link_id` having used `used` of it: the rest returns to
    /// the budget. False when there was no such lease (it was reclaimed).
    async fn release_clicks(
        &self,
        link_id: LinkId,
        holder: &str,
        used: u64,
    ) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(holder: &str, want: u64) -> LeaseRequest {
        LeaseRequest {
            link_id: 1,
            max_clicks: 50,
            counted: 0,
            holder: holder.into(),
            used: 0,
            want,
            held: false,
            now_ms: 100_000,
            ttl_ms: 10_000,
        }
    }

    #[test]
    fn grants_never_exceed_the_limit_and_end_one_by_one() {
        let mut issued = None;
        let mut total = 0;
        let mut sizes = Vec::new();
        loop {
            let p = plan(&request("a", 1_000), issued, &[]);
            if p.grant.granted == 0 {
                break;
            }
            sizes.push(p.grant.granted);
            total += p.grant.granted;
            issued = Some(p.issued);
        }
        assert_eq!(total, 50);
        assert_eq!(sizes[0], 13);
        assert_eq!(&sizes[sizes.len() - 4..], &[1, 1, 1, 1]);
    }

    #[test]
    fn expired_leases_return_what_they_did_not_use() {
        let rows = vec![
            ("dead".to_owned(), 20, 5, 100_000 - RECLAIM_GRACE_MS - 1),
            ("slow".to_owned(), 10, 0, 100_000 - RECLAIM_GRACE_MS),
        ];
        let p = plan(&request("a", 1_000), Some(50), &rows);
        assert_eq!(p.reclaimed, vec!["dead".to_owned()]);
        // 15 unused of the dead lease return; a quarter of them is granted.
        assert_eq!(p.grant.granted, 4);
        assert_eq!(p.issued, 39);
    }

    #[test]
    fn reports_only_grow_and_a_reclaimed_lease_is_lost() {
        let mut r = request("a", 0);
        r.used = 3;
        r.held = true;
        let p = plan(&r, Some(10), &[("a".to_owned(), 10, 7, 0)]);
        assert_eq!(p.row.1, 7);
        assert!(!p.grant.lost);
        let p = plan(&r, Some(10), &[]);
        assert!(p.grant.lost);
        // A holder starting afresh returns its old row's unused clicks.
        r.held = false;
        r.want = 100;
        let p = plan(&r, Some(10), &[("a".to_owned(), 10, 7, 0)]);
        assert_eq!((p.issued, p.row.0, p.row.1), (7 + 11, 11, 0));
        assert_eq!(plan_release(10, Some((10, 4)), 6), Some(6));
        assert_eq!(plan_release(10, None, 6), None);
    }
}
