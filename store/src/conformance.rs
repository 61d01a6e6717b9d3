//! The conformance suite every storage backend must pass (garage's `test_suite` pattern).
//!
//! It only uses names and codes with a random run prefix, so it can run against a store
//! that other tests (or earlier runs) share.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shortlink_core::{
    AccountStats, ApiKey, AuditEntry, Domain, DomainHttps, EnrichedClick, EventKind,
    EventRetention, Interval, KeyCount, LinkPatch, LinkStats, NewAuditEntry, NewEvent, NewLink,
    RedirectStatus, Role, Scope, Scopes, SeriesPoint, Session, ShortCode, Targeting, UserId,
    hash_api_key,
};

use crate::budget::RECLAIM_GRACE_MS;
use crate::{
    AccountStatsQuery, ClickCursor, ClickLogQuery, IngestOutcome, LeaseRequest, ListQuery,
    RoutePart, RouteSource, StatsQuery, Store, StoreError, ThumbnailJob,
};

/// Runs every check against `store`; panics with a message naming the failed check.
pub async fn run_all(store: Arc<dyn Store>) {
    let run = format!("t{:08x}", rand::random::<u32>());
    accounts(&*store, &run).await;
    create_dedupe_and_conflicts(&*store, &run).await;
    list_filters_and_pages(&*store, &run).await;
    update_and_delete_are_owner_scoped(&*store, &run).await;
    change_feed_follows_writes(&*store, &run).await;
    clicks_and_salt(&*store, &run).await;
    unique_visitors(&*store, &run).await;
    click_log(&*store, &run).await;
    event_log(&*store, &run).await;
    uploads_and_jobs(&*store, &run).await;
    concurrent_creates(store.clone(), &run).await;
    concurrent_batches(store.clone(), &run).await;
    link_options_and_domains(&*store, &run).await;
    click_budgets(store.clone()).await;
    webhooks(store.clone(), &run).await;
    certificates(&*store, &run).await;
    acme(&*store, &run).await;
}

/// Certificates: put replaces by name, delete removes, and each moves the version.
async fn certificates(store: &dyn Store, run: &str) {
    let name = format!("{run}.cert.example");
    let cert = |chain: &str| shortlink_core::StoredCertificate {
        name: name.clone(),
        chain_pem: chain.into(),
        key_pem: "-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n".into(),
        not_after: 1_900_000_000,
        updated_at: 1_800_000_000_000,
    };
    let mine = |certs: Vec<shortlink_core::StoredCertificate>| {
        certs
            .into_iter()
            .filter(|c| c.name == name)
            .collect::<Vec<_>>()
    };
    let v0 = store.certificates_version().await.unwrap();
    store.put_certificate(cert("chain one")).await.unwrap();
    let v1 = store.certificates_version().await.unwrap();
    assert_ne!(v0, v1, "a put moves the certificates' version");
    assert_eq!(
        mine(store.list_certificates().await.unwrap()),
        vec![cert("chain one")]
    );
    store.put_certificate(cert("chain two")).await.unwrap();
    let v2 = store.certificates_version().await.unwrap();
    assert!(
        v2 != v1 && v2 != v0,
        "a replacing put moves the version too"
    );
    assert_eq!(
        mine(store.list_certificates().await.unwrap()),
        vec![cert("chain two")],
        "one certificate per name"
    );
    assert!(store.delete_certificate(&name).await.unwrap());
    let v3 = store.certificates_version().await.unwrap();
    assert!(v3 != v2 && v3 != v1, "a delete moves the version");
    assert!(mine(store.list_certificates().await.unwrap()).is_empty());
    assert!(!store.delete_certificate(&name).await.unwrap());
    let debug = format!("{:?}", cert("chain"));
    assert!(
        !debug.contains("PRIVATE KEY") && debug.contains("[redacted]"),
        "a key is never printed: {debug}"
    );
}

/// ACME: challenge answers expire, one holder per lease (taken over once expired),
/// accounts by directory, one issuance record per name.
async fn acme(store: &dyn Store, run: &str) {
    use shortlink_core::time_util::now_unix;
    use shortlink_core::{Issuance, IssuanceState};
    let now = now_unix();
    let key = format!("http-01:{run}-token");
    store
        .put_acme_challenge(&key, "token.thumbprint", now + 60)
        .await
        .unwrap();
    assert_eq!(
        store.acme_challenge(&key, now).await.unwrap().as_deref(),
        Some("token.thumbprint")
    );
    store.delete_acme_challenge(&key).await.unwrap();
    assert_eq!(store.acme_challenge(&key, now).await.unwrap(), None);
    // An answer past its expiry is not given (SQLite compares, CQL's TTL drops the row).
    let short = format!("http-01:{run}-short");
    store
        .put_acme_challenge(&short, "v", now + 1)
        .await
        .unwrap();
    eventually("an expired challenge answer is gone", || async {
        store
            .acme_challenge(&short, now_unix())
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    let name = format!("{run}.acme.example");
    assert!(
        store
            .lease_acme_order(&name, "a", now, now + 60)
            .await
            .unwrap()
    );
    assert!(
        !store
            .lease_acme_order(&name, "b", now, now + 60)
            .await
            .unwrap(),
        "a held lease is refused to another holder"
    );
    assert!(
        store
            .lease_acme_order(&name, "a", now, now + 90)
            .await
            .unwrap(),
        "the holder renews its lease"
    );
    assert!(
        store
            .lease_acme_order(&name, "b", now + 91, now + 150)
            .await
            .unwrap(),
        "an expired lease is taken over"
    );
    store.release_acme_order(&name, "a").await.unwrap();
    assert!(
        !store
            .lease_acme_order(&name, "a", now + 92, now + 150)
            .await
            .unwrap(),
        "releasing someone else's lease leaves it"
    );
    store.release_acme_order(&name, "b").await.unwrap();
    assert!(
        store
            .lease_acme_order(&name, "a", now + 93, now + 150)
            .await
            .unwrap(),
        "a released lease is free"
    );
    store.release_acme_order(&name, "a").await.unwrap();

    let directory = format!("https://{run}.acme.example/dir");
    assert_eq!(store.acme_account(&directory).await.unwrap(), None);
    store
        .put_acme_account(&directory, "{\"id\":1}")
        .await
        .unwrap();
    store
        .put_acme_account(&directory, "{\"id\":2}")
        .await
        .unwrap();
    assert_eq!(
        store.acme_account(&directory).await.unwrap().as_deref(),
        Some("{\"id\":2}")
    );

    let issuance = |state, failures| Issuance {
        name: name.clone(),
        state,
        detail: Some("connection refused".into()),
        failures,
        next_attempt_at: Some(now + 60),
        not_after: None,
        updated_at: now,
    };
    store
        .put_issuance(issuance(IssuanceState::Ordering, 0))
        .await
        .unwrap();
    store
        .put_issuance(issuance(IssuanceState::Failed, 1))
        .await
        .unwrap();
    let mine: Vec<Issuance> = store
        .list_issuances()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.name == name)
        .collect();
    assert_eq!(mine, vec![issuance(IssuanceState::Failed, 1)]);
    assert_eq!(
        store.issuance(&name).await.unwrap(),
        Some(issuance(IssuanceState::Failed, 1))
    );
    store.delete_issuance(&name).await.unwrap();
    assert_eq!(store.issuance(&name).await.unwrap(), None);
    assert!(
        !store
            .list_issuances()
            .await
            .unwrap()
            .iter()
            .any(|i| i.name == name)
    );
    store.delete_issuance(&name).await.unwrap();

    // Holders racing for a free lease: exactly one gets it.
    let raced = format!("{run}.race.acme.example");
    let attempt = |holder: &'static str| {
        let raced = raced.clone();
        async move {
            store
                .lease_acme_order(&raced, holder, now, now + 60)
                .await
                .unwrap()
        }
    };
    let won = tokio::join!(attempt("a"), attempt("b"), attempt("c"), attempt("d"));
    let won = [won.0, won.1, won.2, won.3];
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
}

/// How long a backend's feeds may lag its writes (its settle time) before a check fails.
const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// Polls `check` until it yields a value; panics naming `what` after [`SETTLE_WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen within {SETTLE_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn code(text: String) -> ShortCode {
    ShortCode::from_stored(text)
}

/// A plain permanent link on the default domain.
pub fn new_link(owner: UserId, code_text: String, url: &str) -> NewLink {
    NewLink {
        domain: String::new(),
        code: code(code_text),
        custom_alias: false,
        owner,
        url: url.to_owned(),
        redirect: RedirectStatus::Permanent,
        expires_at: None,
        max_clicks: None,
        tags: Vec::new(),
        password_hash: None,
        targeting: None,
        fallback_url: None,
    }
}

async fn user(store: &dyn Store, run: &str, name: &str) -> UserId {
    store
        .create_user(&format!("{run}-{name}"), Role::User)
        .await
        .expect("create user")
        .id
}

async fn accounts(store: &dyn Store, run: &str) {
    let admin = store
        .create_user(&format!("{run}-admin"), Role::Admin)
        .await
        .expect("create admin");
    assert_eq!(admin.role, Role::Admin);
    assert_eq!(
        store.create_user(&format!("{run}-admin"), Role::User).await,
        Err(StoreError::UserExists(format!("{run}-admin"))),
        "duplicate user name is refused"
    );
    assert_eq!(store.get_user(admin.id).await.unwrap(), Some(admin.clone()));
    assert_eq!(
        store.user_by_name(&format!("{run}-admin")).await.unwrap(),
        Some(admin.clone())
    );
    assert_eq!(
        store.user_by_name(&format!("{run}-nobody")).await.unwrap(),
        None
    );

    let key = hash_api_key(&format!("{run}-key"));
    let record = api_key(admin.id, key, "first", Scopes::from_iter([Scope::Links]));
    store.add_api_key(record.clone()).await.unwrap();
    store
        .add_api_key(api_key(admin.id, key, "again", Scopes::NONE))
        .await
        .expect("re-adding a key is a no-op");
    assert_eq!(
        store.key_by_hash(key).await.unwrap(),
        Some((record.clone(), admin.clone()))
    );
    assert_eq!(
        store
            .key_by_hash(hash_api_key(&format!("{run}-other")))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .add_api_key(api_key(
                UserId::MAX,
                hash_api_key("x"),
                "orphan",
                Scopes::NONE
            ))
            .await,
        Err(StoreError::NoSuchUser(UserId::MAX))
    );

    // A key stored without scopes acts with every scope of its user's role.
    let user = store
        .create_user(&format!("{run}-keyholder"), Role::User)
        .await
        .unwrap();
    let legacy = hash_api_key(&format!("{run}-legacy"));
    store
        .add_api_key(api_key(user.id, legacy, "legacy", Scopes::NONE))
        .await
        .unwrap();
    let (found, _) = store.key_by_hash(legacy).await.unwrap().unwrap();
    assert_eq!(found.scopes, Scopes::full(Role::User));

    // Listing: one user's keys, or everyone's; by public id.
    let listed = store.list_api_keys(Some(admin.id)).await.unwrap();
    assert_eq!(listed, vec![record.clone()]);
    let all = store.list_api_keys(None).await.unwrap();
    assert!(all.contains(&record) && all.iter().any(|k| k.key_hash == legacy));
    assert_eq!(
        store.get_api_key(&record.id()).await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(store.get_api_key("00000000000000zz").await.unwrap(), None);

    // Expiry, last use, revocation.
    assert!(store.set_api_key_expiry(key, Some(123)).await.unwrap());
    store.touch_api_key(key, 456).await.unwrap();
    let (found, _) = store.key_by_hash(key).await.unwrap().unwrap();
    assert_eq!(
        (found.expires_at, found.last_used_at),
        (Some(123), Some(456))
    );
    assert!(store.set_api_key_expiry(key, None).await.unwrap());
    assert!(store.delete_api_key(key).await.unwrap());
    assert!(!store.delete_api_key(key).await.unwrap());
    assert_eq!(store.key_by_hash(key).await.unwrap(), None);
    store.touch_api_key(key, 789).await.unwrap();
    assert_eq!(
        store.key_by_hash(key).await.unwrap(),
        None,
        "recording a use does not bring a revoked key back"
    );
    assert!(!store.set_api_key_expiry(key, Some(1)).await.unwrap());

    // Users: listed, disabled and enabled again.
    assert!(!user.disabled);
    assert!(store.list_users().await.unwrap().contains(&user));
    assert!(store.set_user_disabled(user.id, true).await.unwrap());
    let (_, owner) = store.key_by_hash(legacy).await.unwrap().unwrap();
    assert!(owner.disabled, "a key's user shows as disabled");
    assert!(store.set_user_disabled(user.id, false).await.unwrap());
    assert!(!store.get_user(user.id).await.unwrap().unwrap().disabled);
    assert!(!store.set_user_disabled(UserId::MAX, true).await.unwrap());

    // Sign-in passwords and sessions.
    assert_eq!(
        store.credentials(&user.name).await.unwrap(),
        Some((user.clone(), None))
    );
    assert!(
        store
            .set_user_password(user.id, Some("$argon2id$stand-in".into()))
            .await
            .unwrap()
    );
    assert_eq!(
        store.credentials(&user.name).await.unwrap(),
        Some((user.clone(), Some("$argon2id$stand-in".into())))
    );
    assert!(!store.set_user_password(UserId::MAX, None).await.unwrap());
    assert_eq!(
        store.credentials(&format!("{run}-nobody")).await.unwrap(),
        None
    );
    let now = shortlink_core::time_util::now_unix();
    let session = |token: &str, expires_at| Session {
        token_hash: hash_api_key(&format!("{run}-{token}")),
        user_id: user.id,
        created_at: now,
        expires_at,
        user_agent: "Firefox".into(),
    };
    let live = session("live", now + 3600);
    let old = session("old", now - 1);
    store.create_session(old.clone()).await.unwrap();
    store.create_session(live.clone()).await.unwrap();
    assert_eq!(
        store.session_by_hash(live.token_hash).await.unwrap(),
        Some((live.clone(), user.clone()))
    );
    assert_eq!(
        store.list_sessions(user.id).await.unwrap(),
        vec![live.clone()],
        "expired sessions are not listed"
    );
    assert!(store.delete_session(live.token_hash).await.unwrap());
    assert!(!store.delete_session(live.token_hash).await.unwrap());
    assert_eq!(store.session_by_hash(live.token_hash).await.unwrap(), None);

    // The audit log: newest first, paged by id.
    let first = store
        .append_audit(NewAuditEntry {
            actor: admin.id,
            action: "test.first".into(),
            target: format!("{run}-a"),
            detail: "one".into(),
        })
        .await
        .unwrap();
    let second = store
        .append_audit(NewAuditEntry {
            actor: admin.id,
            action: "test.second".into(),
            target: format!("{run}-b"),
            detail: String::new(),
        })
        .await
        .unwrap();
    assert!(second.id > first.id);
    // Other writers may share the store: look for this run's entries among the newest.
    let newest = store.list_audit(None, 100).await.unwrap();
    let at = |list: &[AuditEntry], id| list.iter().position(|e| e.id == id);
    assert!(newest.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert!(at(&newest, second.id) < at(&newest, first.id));
    assert!(newest.contains(&first) && newest.contains(&second));
    let older = store.list_audit(Some(second.id), 100).await.unwrap();
    assert!(older.contains(&first) && at(&older, second.id).is_none());
}

/// A key record as `add_api_key` takes it.
fn api_key(user_id: UserId, key_hash: [u8; 32], label: &str, scopes: Scopes) -> ApiKey {
    ApiKey {
        key_hash,
        user_id,
        label: label.into(),
        prefix: "sl_test".into(),
        scopes,
        created_at: 1_700_000_000,
        expires_at: None,
        last_used_at: None,
    }
}

async fn create_dedupe_and_conflicts(store: &dyn Store, run: &str) {
    let alice = user(store, run, "alice").await;
    let bob = user(store, run, "bob").await;
    let url = format!("https://example.com/{run}/dedupe");

    let first = store
        .create_link(new_link(alice, format!("{run}a1"), &url))
        .await
        .unwrap();
    assert!(!first.existed);
    assert_eq!(first.link.clicks, 0);
    let again = store
        .create_link(new_link(alice, format!("{run}a2"), &url))
        .await
        .unwrap();
    assert!(again.existed, "a plain link to the same URL deduplicates");
    assert_eq!(again.link.id, first.link.id);

    let bobs = store
        .create_link(new_link(bob, format!("{run}b1"), &url))
        .await
        .unwrap();
    assert!(!bobs.existed, "dedupe is per owner");

    let mut tagged = new_link(alice, format!("{run}a3"), &url);
    tagged.tags = vec!["x".into()];
    let tagged = store.create_link(tagged).await.unwrap();
    assert!(!tagged.existed, "a link with options is never deduplicated");

    let taken = store
        .create_link(new_link(bob, format!("{run}a1"), "https://other.test/"))
        .await;
    assert_eq!(taken, Err(StoreError::CodeTaken(format!("{run}a1"))));

    let mut other_domain = new_link(bob, format!("{run}a1"), "https://other.test/");
    other_domain.domain = "links.example".into();
    assert!(
        store.create_link(other_domain).await.is_ok(),
        "codes are unique per domain"
    );

    let got = store
        .get_link("", &format!("{run}a1"))
        .await
        .unwrap()
        .expect("get");
    assert_eq!(got, first.link);
    assert_eq!(store.get_link("", &format!("{run}zz")).await.unwrap(), None);
    let on_domain = store
        .get_link("links.example", &format!("{run}a1"))
        .await
        .unwrap();
    assert_eq!(
        on_domain.map(|l| l.url),
        Some("https://other.test/".to_owned())
    );
}

async fn list_filters_and_pages(store: &dyn Store, run: &str) {
    let owner = user(store, run, "lister").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut link = new_link(
            owner,
            format!("{run}l{i}"),
            &format!("https://list.test/{i}"),
        );
        if i % 2 == 0 {
            link.tags = vec!["even".into()];
        }
        if i == 3 {
            link.url = "https://list.test/100%_Special".into();
        }
        ids.push(store.create_link(link).await.unwrap().link.id);
    }
    let mut seen = Vec::new();
    let mut query = ListQuery {
        limit: 2,
        ..ListQuery::default()
    };
    loop {
        let page = store.list_links(owner, &query).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|l| l.id));
        match page.next_before_id {
            Some(before) => query.before_id = Some(before),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "pages cover every link once, newest first");

    let even = ListQuery {
        limit: 10,
        tag: Some("even".into()),
        ..ListQuery::default()
    };
    let even = store.list_links(owner, &even).await.unwrap();
    assert_eq!(even.items.len(), 3);
    assert!(even.items.iter().all(|l| l.tags == vec!["even".to_owned()]));

    let q = ListQuery {
        limit: 10,
        q: Some("100%_spec".into()),
        ..ListQuery::default()
    };
    let found = store.list_links(owner, &q).await.unwrap();
    assert_eq!(
        found.items.len(),
        1,
        "q matches case-insensitively and literally"
    );
    let q = ListQuery {
        limit: 10,
        q: Some("%".into()),
        ..ListQuery::default()
    };
    assert_eq!(
        store.list_links(owner, &q).await.unwrap().items.len(),
        1,
        "% is literal"
    );

    let other = user(store, run, "other-lister").await;
    let mine = ListQuery {
        limit: 10,
        ..ListQuery::default()
    };
    assert!(
        store
            .list_links(other, &mine)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn update_and_delete_are_owner_scoped(store: &dyn Store, run: &str) {
    let owner = user(store, run, "updater").await;
    let stranger = user(store, run, "stranger").await;
    let code_text = format!("{run}u1");
    let created = store
        .create_link(new_link(owner, code_text.clone(), "https://update.test/"))
        .await
        .unwrap()
        .link;
    assert!(created.is_plain());

    let patch = LinkPatch {
        url: Some("https://update.test/new".into()),
        expires_at: Some(Some(4_000_000_000)),
        max_clicks: Some(Some(10)),
        redirect: Some(RedirectStatus::Found),
        tags: Some(vec!["t".into()]),
        disabled: Some(true),
        password_hash: None,
        targeting: None,
        moderation: None,
        fallback_url: Some(Some("https://update.test/after".into())),
    };
    assert_eq!(
        store
            .update_link(stranger, "", &code_text, patch.clone())
            .await
            .unwrap(),
        None,
        "a stranger cannot update"
    );
    let updated = store
        .update_link(owner, "", &code_text, patch)
        .await
        .unwrap()
        .expect("owner updates");
    assert_eq!(updated.url, "https://update.test/new");
    assert_eq!(updated.expires_at, Some(4_000_000_000));
    assert_eq!(
        updated.fallback_url.as_deref(),
        Some("https://update.test/after")
    );
    let stored = store.get_link("", &code_text).await.unwrap().unwrap();
    assert_eq!(
        stored.fallback_url, updated.fallback_url,
        "the fallback is stored"
    );
    assert_eq!(updated.max_clicks, Some(10));
    assert_eq!(updated.redirect, RedirectStatus::Found);
    assert_eq!(updated.tags, vec!["t".to_owned()]);
    assert!(updated.disabled);
    assert_eq!(
        store.get_link("", &code_text).await.unwrap(),
        Some(updated.clone())
    );

    let cleared = store
        .update_link(
            owner,
            "",
            &code_text,
            LinkPatch {
                expires_at: Some(None),
                max_clicks: Some(None),
                ..LinkPatch::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cleared.expires_at, cleared.max_clicks), (None, None));

    // Moderation disables with a reason, kept and read back; lifting it turns it on.
    let moderate = |reason: Option<&str>| LinkPatch {
        moderation: Some(reason.map(str::to_owned)),
        ..LinkPatch::default()
    };
    let moderated = store
        .update_link(owner, "", &code_text, moderate(Some("phishing")))
        .await
        .unwrap()
        .unwrap();
    assert!(moderated.disabled);
    assert_eq!(moderated.moderation.as_deref(), Some("phishing"));
    assert_eq!(
        store.get_link("", &code_text).await.unwrap(),
        Some(moderated)
    );
    let lifted = store
        .update_link(owner, "", &code_text, moderate(None))
        .await
        .unwrap()
        .unwrap();
    assert!(!lifted.disabled && lifted.moderation.is_none());

    assert!(!store.delete_link(stranger, "", &code_text).await.unwrap());
    assert!(store.get_link("", &code_text).await.unwrap().is_some());
    assert!(store.delete_link(owner, "", &code_text).await.unwrap());
    assert_eq!(store.get_link("", &code_text).await.unwrap(), None);
    assert!(!store.delete_link(owner, "", &code_text).await.unwrap());
}

async fn change_feed_follows_writes(store: &dyn Store, run: &str) {
    let owner = user(store, run, "feeder").await;
    let head = store.feed_head().await.unwrap();
    let code_text = format!("{run}f1");
    let link = store
        .create_link(new_link(owner, code_text.clone(), "https://feed.test/"))
        .await
        .unwrap()
        .link;
    store
        .update_link(
            owner,
            "",
            &code_text,
            LinkPatch {
                url: Some("https://feed.test/2".into()),
                ..LinkPatch::default()
            },
        )
        .await
        .unwrap();
    let batch = eventually("create and update in the feed", || async {
        let batch = store.route_changes(head, 1000).await.unwrap();
        let n = batch.changes.iter().filter(|c| c.code == code_text).count();
        (n >= 2).then_some(batch)
    })
    .await;
    assert!(!batch.reset);
    let mine: Vec<_> = batch
        .changes
        .iter()
        .filter(|c| c.code == code_text)
        .collect();
    assert_eq!(mine.len(), 2, "create and update each appear");
    assert!(
        mine.iter()
            .all(|c| c.link.as_ref().map(|l| l.url.as_str()) == Some("https://feed.test/2"))
    );
    assert!(
        batch.changes.windows(2).all(|w| w[0].seq < w[1].seq),
        "ordered by seq"
    );
    assert!(
        batch.next >= mine[1].seq,
        "the next position covers what was read"
    );
    let after_update = store.feed_head().await.unwrap();
    assert!(after_update > head);

    store.delete_link(owner, "", &code_text).await.unwrap();
    let deleted = eventually("the delete in the feed", || async {
        let batch = store.route_changes(after_update, 1000).await.unwrap();
        batch.changes.into_iter().find(|c| c.code == code_text)
    })
    .await;
    assert_eq!(deleted.link, None);

    // Bulk loading: a full scan in small pages holds every link exactly once.
    let kept = store
        .create_link(new_link(
            owner,
            format!("{run}f2"),
            "https://feed.test/kept",
        ))
        .await
        .unwrap()
        .link;
    let whole = scan_routes(store, RoutePart::WHOLE).await;
    assert!(whole.contains(&kept.id), "the scan holds a live link");
    assert!(!whole.contains(&link.id), "the scan skips a deleted link");
    // Cut into parts, the scan holds the same links, each in one part only.
    let mut parts = std::collections::HashSet::new();
    for index in 0..5 {
        for id in scan_routes(store, RoutePart { index, count: 5 }).await {
            assert!(parts.insert(id), "link {id} appears in two parts");
        }
    }
    assert_eq!(parts, whole, "the parts together are the whole scan");
}

/// The ids of every link in one part of the bulk-load scan, checking each page.
async fn scan_routes<S: RouteSource + ?Sized>(
    store: &S,
    part: RoutePart,
) -> std::collections::HashSet<i64> {
    let mut cursor = None;
    let mut seen = std::collections::HashSet::new();
    loop {
        let page = store.routes_page(part, cursor, 50).await.unwrap();
        assert!(page.links.len() <= 50, "a page holds at most the limit");
        for l in &page.links {
            assert!(seen.insert(l.id), "link {} appears in two pages", l.id);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    seen
}

/// An enriched click from a desktop (or a bot) in Germany, referred by example.com.
pub fn click(link_id: i64, ts_ms: i64, browser: &str, bot: bool) -> EnrichedClick {
    EnrichedClick {
        link_id,
        ts_ms,
        ip: "203.0.113.0".into(),
        browser: browser.into(),
        os: "Linux".into(),
        device: if bot { "bot" } else { "desktop" }.into(),
        bot,
        referrer: "example.com".into(),
        country: "DE".into(),
        count: 1,
        visitor: 0,
    }
}

/// A uniform 64-bit hash of `n` (SplitMix64's finalizer), never 0: visitor ids as the
/// enricher makes them.
pub fn spread(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}

/// Unique visitors: people (not bots, not unknown ones) counted once per range, whatever
/// batches, hours and days they fall in, read back the same however often a range is read.
async fn unique_visitors(store: &dyn Store, run: &str) {
    let owner = user(store, run, "visited").await;
    let link = store
        .create_link(new_link(
            owner,
            format!("{run}uv"),
            "https://visitors.test/",
        ))
        .await
        .unwrap()
        .link;
    let day = 1_700_000_000 - 1_700_000_000 % 86_400 + 86_400 * 5;
    let at = |secs: i64, visitor: u64, bot: bool| EnrichedClick {
        visitor,
        ..click(link.id, secs * 1000, "Chrome", bot)
    };
    // Visitor ids are uniform hashes; these stand in for them.
    let v = spread;
    // Day 0: 01:00 visitors 1–3 (1 twice), 05:00 visitors 3–4 and a bot; day 1: 02:00
    // visitors 1 and 5, one with no id. Spread over many batches.
    let batches = [
        vec![at(day + 3600, v(1), false), at(day + 3700, v(1), false)],
        vec![at(day + 3600, v(2), false), at(day + 3601, v(3), false)],
        vec![
            at(day + 5 * 3600, v(3), false),
            at(day + 5 * 3600, v(4), false),
        ],
        vec![at(day + 5 * 3600 + 9, v(9), true)],
        vec![at(day + 86_400 + 7200, v(1), false)],
        vec![
            at(day + 86_400 + 7300, v(5), false),
            at(day + 86_400 + 7300, 0, false),
        ],
        vec![at(day + 3605, v(2), false)],
        // More rows of 01:00 and of day 0 than a backend keeps apart before folding them.
        vec![at(day + 3650, v(1), false)],
        vec![at(day + 3651, v(2), false)],
        vec![at(day + 3652, v(1), false)],
    ];
    for (i, batch) in batches.into_iter().enumerate() {
        let id = format!("{run}-uv-{i}");
        store.ingest_clicks(&id, batch.clone()).await.unwrap();
        // Redelivered: counts nobody again.
        store.ingest_clicks(&id, batch).await.unwrap();
    }
    let visitors = |from: i64, to: i64| async move {
        store
            .link_stats(StatsQuery {
                link_id: link.id,
                from,
                to,
                interval: Interval::Hour,
                top: 10,
                include_bots: false,
            })
            .await
            .unwrap()
            .unique_visitors
    };
    for _ in 0..2 {
        assert_eq!(visitors(day, day + 2 * 86_400).await, 5, "two whole days");
        assert_eq!(visitors(day, day + 86_400).await, 4, "day 0");
        assert_eq!(visitors(day + 3600, day + 7200).await, 3, "01:00 of day 0");
        assert_eq!(
            visitors(day + 5 * 3600, day + 6 * 3600).await,
            2,
            "the bot is not a visitor"
        );
        assert_eq!(
            visitors(day + 4 * 3600, day + 86_400 + 3 * 3600).await,
            4,
            "hours around no whole day: 3, 4, 1, 5"
        );
        assert_eq!(
            visitors(day - 3600, day + 2 * 86_400 + 3600).await,
            5,
            "whole days and hours around them"
        );
        assert_eq!(
            visitors(day + 7200, day + 3 * 3600).await,
            0,
            "an hour without clicks"
        );
    }
}

/// Every raw click `query` reads, page by page from its `after`, with the cursors.
async fn read_log(store: &dyn Store, query: ClickLogQuery) -> Vec<(EnrichedClick, ClickCursor)> {
    let mut out = Vec::new();
    let mut query = query;
    for _ in 0..1000 {
        let page = store.owner_clicks(query.clone()).await.unwrap();
        assert!(
            page.clicks.len() <= query.limit,
            "a page holds at most its limit"
        );
        for (click, _) in &page.clicks {
            assert!(
                page.links.contains_key(&click.link_id),
                "each click's link is named"
            );
        }
        out.extend(page.clicks);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return out,
        }
    }
    panic!("the click log never ended");
}

async fn click_log(store: &dyn Store, run: &str) {
    let alice = user(store, run, "log-alice").await;
    let bob = user(store, run, "log-bob").await;
    let mut ids = Vec::new();
    for (owner, code) in [(alice, "la1"), (alice, "la2"), (bob, "lb1")] {
        let link = new_link(
            owner,
            format!("{run}{code}"),
            &format!("https://log.test/{code}"),
        );
        ids.push(store.create_link(link).await.unwrap().link.id);
    }
    let (a1, a2, b1) = (ids[0], ids[1], ids[2]);
    let now = shortlink_core::time_util::now_unix_ms();
    let folded = EnrichedClick {
        count: 2,
        ..click(a1, now + 2, "Safari", false)
    };
    let first = vec![
        click(a1, now, "Chrome", false),
        click(b1, now, "Chrome", false),
        click(a1, now + 1, "Googlebot", true),
        folded,
        click(a2, now + 3, "Firefox", false),
        click(b1, now + 3, "Firefox", false),
    ];
    let second = vec![
        click(a2, now + 10, "Chrome", false),
        click(a2, now + 11, "Chrome", false),
        click(a1, now + 12, "Edge", false),
    ];
    store
        .ingest_clicks(&format!("{run}-log-1"), first.clone())
        .await
        .unwrap();
    store
        .ingest_clicks(&format!("{run}-log-2"), second.clone())
        .await
        .unwrap();
    let all = |owner, link, limit| ClickLogQuery {
        owner,
        link,
        after: None,
        limit,
    };
    let clicks = |read: &[(EnrichedClick, ClickCursor)]| -> Vec<EnrichedClick> {
        read.iter().map(|(c, _)| c.clone()).collect()
    };
    let want: Vec<EnrichedClick> = first
        .iter()
        .chain(&second)
        .filter(|c| c.link_id != b1)
        .cloned()
        .collect();
    // Readers may stop the backend's settle time short of now.
    let whole = eventually("the logged clicks", || async {
        let read = read_log(store, all(alice, None, 1000)).await;
        (read.len() == want.len()).then_some(read)
    })
    .await;
    assert_eq!(
        clicks(&whole),
        want,
        "an owner's clicks, in the order logged"
    );
    let paged = read_log(store, all(alice, None, 2)).await;
    assert_eq!(clicks(&paged), want, "pages of two read the same");
    // Resuming after any click reads exactly the rest.
    for (i, (_, cursor)) in whole.iter().enumerate() {
        let rest = read_log(
            store,
            ClickLogQuery {
                after: Some(cursor.clone()),
                ..all(alice, None, 3)
            },
        )
        .await;
        assert_eq!(
            clicks(&rest),
            want[i + 1..].to_vec(),
            "resumed after click {i}"
        );
    }
    let only_a2 = read_log(store, all(alice, Some(a2), 1)).await;
    assert_eq!(
        clicks(&only_a2),
        want.iter()
            .filter(|c| c.link_id == a2)
            .cloned()
            .collect::<Vec<_>>()
    );
    let bobs = eventually("bob's clicks", || async {
        let read = read_log(store, all(bob, None, 10)).await;
        (read.len() == 2).then_some(read)
    })
    .await;
    assert_eq!(
        clicks(&bobs),
        first
            .iter()
            .filter(|c| c.link_id == b1)
            .cloned()
            .collect::<Vec<_>>()
    );
    assert!(
        read_log(store, all(bob, Some(a1), 10)).await.is_empty(),
        "another owner's link shows nothing"
    );
}

async fn clicks_and_salt(store: &dyn Store, run: &str) {
    let owner = user(store, run, "clicker").await;
    let link = store
        .create_link(new_link(owner, format!("{run}c1"), "https://clicks.test/"))
        .await
        .unwrap()
        .link;
    // Two hours on two days: 23:00 and 00:30 the next day (UTC).
    let day = 1_700_000_000 - 1_700_000_000 % 86_400 + 86_400 * 3;
    let late = (day - 3600) * 1000;
    let early = (day + 1800) * 1000;
    let batch = vec![
        click(link.id, late, "Chrome", false),
        click(link.id, late + 5, "Chrome", false),
        click(link.id, late + 9, "Googlebot", true),
        click(link.id, early, "Firefox", false),
        click(i64::MAX, early, "Chrome", false),
    ];
    let id = format!("{run}-batch-1");
    assert_eq!(
        store.ingest_clicks(&id, batch.clone()).await.unwrap(),
        IngestOutcome::Applied
    );
    assert_eq!(
        store.ingest_clicks(&id, batch).await.unwrap(),
        IngestOutcome::Duplicate,
        "a redelivered batch is counted once"
    );
    let got = store
        .get_link("", &format!("{run}c1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.clicks, 4, "clicks of unknown links are dropped");

    let query = StatsQuery {
        link_id: link.id,
        from: day - 86_400,
        to: day + 86_400,
        interval: Interval::Hour,
        top: 10,
        include_bots: true,
    };
    let stats = store.link_stats(query).await.unwrap();
    assert_eq!((stats.total, stats.humans, stats.bots), (4, 3, 1));
    assert_eq!(
        stats.series,
        vec![
            SeriesPoint {
                ts: day - 3600,
                count: 3
            },
            SeriesPoint { ts: day, count: 1 }
        ]
    );
    assert_eq!(
        stats.browsers[0],
        KeyCount {
            key: "Chrome".into(),
            count: 2
        }
    );
    assert_eq!(stats.browsers.len(), 3);
    assert_eq!(
        stats.countries,
        vec![KeyCount {
            key: "DE".into(),
            count: 4
        }]
    );
    assert_eq!(
        stats.referrers,
        vec![KeyCount {
            key: "example.com".into(),
            count: 4
        }]
    );
    assert_eq!(stats.devices.iter().map(|k| k.count).sum::<u64>(), 4);
    let people = store
        .link_stats(StatsQuery {
            include_bots: false,
            ..query
        })
        .await
        .unwrap();
    assert_eq!(
        (people.total, people.bots, people.series.clone()),
        (4, 1, stats.series.clone()),
        "totals and series count bots either way"
    );
    assert_eq!(
        people.browsers,
        vec![
            KeyCount {
                key: "Chrome".into(),
                count: 2
            },
            KeyCount {
                key: "Firefox".into(),
                count: 1
            }
        ],
        "a list without bots leaves out values only bots had"
    );
    assert_eq!(
        people.countries,
        vec![KeyCount {
            key: "DE".into(),
            count: 3
        }]
    );
    assert_eq!(people.devices.iter().map(|k| k.count).sum::<u64>(), 3);

    let by_day = store
        .link_stats(StatsQuery {
            interval: Interval::Day,
            ..query
        })
        .await
        .unwrap();
    assert_eq!(
        by_day.series,
        vec![
            SeriesPoint {
                ts: day - 86_400,
                count: 3
            },
            SeriesPoint { ts: day, count: 1 }
        ]
    );
    let top1 = store
        .link_stats(StatsQuery { top: 1, ..query })
        .await
        .unwrap();
    assert_eq!(top1.browsers.len(), 1);
    let empty = store
        .link_stats(StatsQuery {
            from: day + 86_400,
            to: day + 2 * 86_400,
            ..query
        })
        .await
        .unwrap();
    assert_eq!(empty, LinkStats::default());

    // Counted clicks of a capped link add to its count like any link's (limits are
    // enforced by click budgets, not counts: see `click_budgets`).
    let mut capped = new_link(owner, format!("{run}c2"), "https://clicks.test/capped");
    capped.max_clicks = Some(2);
    let capped = store.create_link(capped).await.unwrap().link;
    store
        .ingest_clicks(
            &format!("{run}-batch-2"),
            vec![
                click(capped.id, early, "Chrome", false),
                click(capped.id, early, "Chrome", false),
            ],
        )
        .await
        .unwrap();
    let counted = store
        .get_link("", &format!("{run}c2"))
        .await
        .unwrap()
        .map(|l| l.clicks);
    assert_eq!(counted, Some(2));

    // Many distinct rollup rows in one batch (more than one multi-row statement holds).
    let wide = store
        .create_link(new_link(
            owner,
            format!("{run}c3"),
            "https://clicks.test/wide",
        ))
        .await
        .unwrap()
        .link;
    let many: Vec<EnrichedClick> = (0..300)
        .map(|i| EnrichedClick {
            referrer: format!("r{i}.example"),
            ..click(wide.id, early + i, "Chrome", false)
        })
        .collect();
    store
        .ingest_clicks(&format!("{run}-batch-3"), many)
        .await
        .unwrap();
    let stats = store
        .link_stats(StatsQuery {
            link_id: wide.id,
            top: 1000,
            ..query
        })
        .await
        .unwrap();
    assert_eq!(stats.total, 300);
    assert_eq!(stats.referrers.len(), 300, "every referrer row was written");
    assert!(stats.referrers.iter().all(|r| r.count == 1));

    // The account: the three links summed, its top list without bots unless asked.
    let account = AccountStatsQuery {
        owner,
        from: day - 86_400,
        to: day + 86_400,
        interval: Interval::Hour,
        top: 10,
        include_bots: false,
    };
    let stats = store.account_stats(account).await.unwrap();
    assert_eq!((stats.total, stats.humans, stats.bots), (306, 305, 1));
    assert_eq!(
        stats.series,
        vec![
            SeriesPoint {
                ts: day - 3600,
                count: 3
            },
            SeriesPoint {
                ts: day,
                count: 303
            }
        ]
    );
    let ranked = |stats: &AccountStats| -> Vec<(String, u64)> {
        stats
            .links
            .iter()
            .map(|l| (l.code.clone(), l.clicks))
            .collect()
    };
    assert_eq!(
        ranked(&stats),
        vec![
            (format!("{run}c3"), 300),
            (format!("{run}c1"), 3),
            (format!("{run}c2"), 2)
        ]
    );
    let with_bots = store
        .account_stats(AccountStatsQuery {
            include_bots: true,
            top: 2,
            interval: Interval::Day,
            ..account
        })
        .await
        .unwrap();
    assert_eq!(
        ranked(&with_bots),
        vec![(format!("{run}c3"), 300), (format!("{run}c1"), 4)]
    );
    assert_eq!(
        with_bots.series,
        vec![
            SeriesPoint {
                ts: day - 86_400,
                count: 3
            },
            SeriesPoint {
                ts: day,
                count: 303
            }
        ]
    );
    let stranger = user(store, run, "stranger-to-clicks").await;
    let none = store
        .account_stats(AccountStatsQuery {
            owner: stranger,
            ..account
        })
        .await
        .unwrap();
    assert_eq!(none, AccountStats::default());
    assert!(
        store
            .delete_link(owner, "", &format!("{run}c2"))
            .await
            .unwrap()
    );
    let after = store.account_stats(account).await.unwrap();
    assert_eq!(
        after.total, 306,
        "a deleted link's clicks stay in the totals"
    );
    assert_eq!(
        ranked(&after),
        vec![(format!("{run}c3"), 300), (format!("{run}c1"), 3)],
        "and leave the top list"
    );

    let salt = store.installation_salt().await.unwrap();
    assert_eq!(
        store.installation_salt().await.unwrap(),
        salt,
        "salt is stable"
    );
}

async fn event_log(store: &dyn Store, run: &str) {
    let a = user(store, run, "listener-a").await;
    let b = user(store, run, "listener-b").await;
    let head = store.event_feed_head().await.unwrap();
    let event = |user, n: usize| NewEvent {
        user_id: user,
        kind: EventKind::LinkUpdated,
        data: format!(r#"{{"n":{n}}}"#),
    };
    let written = store
        .append_events(vec![event(a, 0), event(b, 1), event(a, 2)])
        .await
        .unwrap();
    assert_eq!(written.len(), 3);
    assert!(
        written.windows(2).all(|w| w[0].id < w[1].id) && written[0].id > head,
        "ids grow in write order: {written:?}"
    );
    eventually("the feed head passes the written events", || async {
        (store.event_feed_head().await.unwrap() >= written[2].id).then_some(())
    })
    .await;
    let mine = store.user_events(a, head, 10).await.unwrap();
    assert_eq!(
        mine.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        [r#"{"n":0}"#, r#"{"n":2}"#],
        "a user's log holds only their events, in order"
    );
    assert_eq!(mine[0].kind, EventKind::LinkUpdated);
    assert!(
        mine[0].at_ms > 1_600_000_000_000,
        "times are Unix milliseconds"
    );
    let after_first = store.user_events(a, mine[0].id, 10).await.unwrap();
    assert_eq!(after_first, mine[1..].to_vec(), "the id is a cursor");
    assert_eq!(
        store.user_events(a, head, 1).await.unwrap().len(),
        1,
        "limit holds"
    );
    let feed = store.event_feed(head, 100).await.unwrap().events;
    let ids: Vec<_> = written.iter().map(|e| e.id).collect();
    assert!(
        ids.iter().all(|id| feed.iter().any(|e| e.id == *id)),
        "the feed holds every user's events"
    );

    // Clicks turn into one coalesced `link.clicked` per link per batch, for the owner.
    let link = store
        .create_link(new_link(a, format!("{run}ev"), "https://events.test/"))
        .await
        .unwrap()
        .link;
    let before = store.event_feed_head().await.unwrap();
    let now_ms = shortlink_core::time_util::now_unix_ms();
    let clicks: Vec<_> = (0..5)
        .map(|i| click(link.id, now_ms - 100 + i, "Chrome", i == 4))
        .collect();
    store
        .ingest_clicks(&format!("{run}-ev-batch"), clicks.clone())
        .await
        .unwrap();
    store
        .ingest_clicks(&format!("{run}-ev-batch"), clicks)
        .await
        .unwrap();
    let clicked: Vec<_> = eventually("link.clicked in the log", || async {
        let clicked: Vec<_> = store
            .user_events(a, before, 10)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EventKind::LinkClicked)
            .collect();
        (!clicked.is_empty()).then_some(clicked)
    })
    .await;
    assert_eq!(
        clicked.len(),
        1,
        "one event per link per batch, none for a duplicate"
    );
    let data: serde_json::Value = serde_json::from_str(&clicked[0].data).unwrap();
    assert_eq!(
        (data["count"].as_u64(), data["bots"].as_u64()),
        (Some(5), Some(1))
    );
    assert_eq!(data["code"], format!("{run}ev"));
    // A folded row counts as many clicks as it stands for.
    let folded = EnrichedClick {
        count: 7,
        ..click(link.id, now_ms, "Chrome", false)
    };
    store
        .ingest_clicks(&format!("{run}-ev-folded"), vec![folded])
        .await
        .unwrap();
    let got = store
        .get_link("", &format!("{run}ev"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.clicks, 12, "5 clicks, then one row of 7");
    let stats = store
        .link_stats(StatsQuery {
            link_id: link.id,
            from: now_ms / 1000 - 7200,
            to: now_ms / 1000 + 7200,
            interval: Interval::Hour,
            top: 5,
            include_bots: true,
        })
        .await
        .unwrap();
    assert_eq!((stats.total, stats.bots), (12, 1));
    assert_eq!(stats.browsers[0].count, 12);

    // Retention: a user's newest events survive, by count.
    let crowd = user(store, run, "crowded").await;
    store
        .append_events((0..7).map(|n| event(crowd, n)).collect())
        .await
        .unwrap();
    store
        .prune_events(EventRetention {
            per_user: 3,
            max_age_secs: 3600,
        })
        .await
        .unwrap();
    let kept = eventually("the kept events", || async {
        let kept = store.user_events(crowd, 0, 100).await.unwrap();
        (kept.len() >= 3).then_some(kept)
    })
    .await;
    assert_eq!(
        kept.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        [r#"{"n":4}"#, r#"{"n":5}"#, r#"{"n":6}"#],
        "the newest events per user are kept"
    );
    // By age: everything older than the retention goes.
    store
        .prune_events(EventRetention {
            per_user: 1_000_000,
            max_age_secs: -10,
        })
        .await
        .unwrap();
    assert!(
        store.user_events(crowd, 0, 100).await.unwrap().is_empty(),
        "old events are dropped"
    );
}

/// Claims due jobs until `upload_id`'s comes up (other runs' jobs may be queued in a
/// shared store); `None` if it is not due.
async fn claim_job_of(store: &dyn Store, upload_id: &str, lease_secs: i64) -> Option<ThumbnailJob> {
    for _ in 0..100 {
        match store.claim_thumbnail_job(lease_secs).await.unwrap() {
            Some(job) if job.upload_id == upload_id => return Some(job),
            Some(_) => continue,
            None => return None,
        }
    }
    None
}

async fn uploads_and_jobs(store: &dyn Store, run: &str) {
    let secret = store.installation_secret().await.unwrap();
    assert_eq!(
        store.installation_secret().await.unwrap(),
        secret,
        "the secret is stable"
    );
    assert_ne!(secret, [0u8; 32]);
    use shortlink_core::{Thumbnail, ThumbnailState, Upload, UploadState};
    let owner = user(store, run, "uploader").await;
    let pending = Upload {
        id: format!("{run}up1"),
        owner,
        filename: "cat.png".into(),
        content_type: "image/png".into(),
        size: 1234,
        sha256: String::new(),
        object_key: format!("u/{run}up1"),
        code: None,
        state: UploadState::Pending,
        thumbnail_state: ThumbnailState::None,
        thumbnails: vec![],
        created_at: 1_900_000_000,
        expires_at: Some(1_900_000_900),
        multipart: Some(shortlink_core::MultipartPlan {
            store_upload_id: "store-id".into(),
            part_size: 1000,
        }),
        downloads: 0,
    };
    store
        .insert_upload(pending.clone(), false, None, Some(1234))
        .await
        .unwrap();
    assert!(
        store
            .insert_upload(pending.clone(), false, None, None)
            .await
            .is_err(),
        "ids are unique"
    );
    assert_eq!(store.stored_bytes(owner).await.unwrap(), 1234);
    let over = Upload {
        id: format!("{run}up-over"),
        size: 1,
        ..pending.clone()
    };
    assert!(
        matches!(
            store
                .insert_upload(over.clone(), false, None, Some(1234))
                .await,
            Err(StoreError::OverQuota {
                needed: 1235,
                quota: 1234
            })
        ),
        "one byte over the quota is refused"
    );
    assert_eq!(store.get_upload(&over.id).await.unwrap(), None);
    assert_eq!(
        store.get_upload(&pending.id).await.unwrap(),
        Some(pending.clone())
    );
    assert_eq!(store.get_upload("nope").await.unwrap(), None);
    // No job was queued for the pending upload: nothing of this run is claimable yet.
    let complete = Upload {
        sha256: "ab".repeat(32),
        code: Some(format!("{run}fc")),
        state: UploadState::Complete,
        thumbnail_state: ThumbnailState::Pending,
        expires_at: None,
        ..pending.clone()
    };
    let head = store.event_feed_head().await.unwrap();
    let event = NewEvent {
        user_id: owner,
        kind: EventKind::UploadCompleted,
        data: "{}".into(),
    };
    assert!(
        store
            .complete_upload(complete.clone(), true, Some(event.clone()))
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_upload(complete.clone(), true, Some(event))
            .await
            .unwrap(),
        "completing twice does nothing"
    );
    // Completing moved its expiry away: the sweep no longer finds it.
    let due: Vec<String> = store
        .expired_uploads(1_900_001_000, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert!(!due.contains(&complete.id), "{due:?}");
    let events = eventually("upload.completed in the log", || async {
        let events = store.user_events(owner, head, 10).await.unwrap();
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1, "one upload.completed");
    let job = claim_job_of(store, &complete.id, 60)
        .await
        .expect("the completed image has a job");
    assert_eq!(job.attempt, 1);
    let again = store.claim_thumbnail_job(60).await.unwrap();
    assert!(
        again.as_ref().is_none_or(|j| j.upload_id != complete.id),
        "a leased job is not handed out twice"
    );
    let thumbs = vec![Thumbnail {
        size: 150,
        width: 150,
        height: 100,
        key: format!("u/{run}up1/150.png"),
    }];
    store
        .finish_thumbnail_job(&complete.id, ThumbnailState::Ready, thumbs.clone(), None)
        .await
        .unwrap();
    let done = store.get_upload(&complete.id).await.unwrap().unwrap();
    assert_eq!(done.thumbnail_state, ThumbnailState::Ready);
    assert_eq!(done.thumbnails, thumbs);
    assert_eq!(done.sha256, complete.sha256);
    // An expired lease makes a job claimable again (a worker that died mid-job).
    let other = Upload {
        id: format!("{run}up2"),
        object_key: format!("u/{run}up2"),
        ..complete.clone()
    };
    store
        .insert_upload(other.clone(), true, None, None)
        .await
        .unwrap();
    let first = claim_job_of(store, &other.id, 0).await;
    assert_eq!(first.map(|j| j.attempt), Some(1));
    let second = claim_job_of(store, &other.id, 60).await;
    assert_eq!(
        second.map(|j| j.attempt),
        Some(2),
        "reclaimed after the lease"
    );
    store
        .finish_thumbnail_job(&other.id, ThumbnailState::Failed, vec![], None)
        .await
        .unwrap();
    upload_listing_and_expiry(store, run, owner).await;
}

/// The ids of this run's listed uploads expired by `now`, in the sweep's order.
async fn due_of(store: &dyn Store, run: &str, now: i64) -> Vec<String> {
    store
        .expired_uploads(now, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .filter(|id| id.starts_with(&format!("{run}ls")))
        .collect()
}

/// An owner's uploads list newest first across pages; expired ones are found by the sweep
/// oldest first; deleting removes the record, its job and its place in both.
async fn upload_listing_and_expiry(store: &dyn Store, run: &str, owner: UserId) {
    use crate::UploadCursor;
    use shortlink_core::{ThumbnailState, Upload, UploadState};
    let lister = user(store, run, "upload-lister").await;
    let make = |i: i64, expires_at: Option<i64>| Upload {
        id: format!("{run}ls{i:02}"),
        owner: lister,
        filename: format!("f{i}.bin"),
        content_type: "application/octet-stream".into(),
        size: 10 + i as u64,
        sha256: "cd".repeat(32),
        object_key: format!("u/{run}ls{i:02}"),
        code: None,
        state: UploadState::Complete,
        thumbnail_state: ThumbnailState::None,
        thumbnails: vec![],
        // Two share each second: the id orders them.
        created_at: 1_800_000_000 + i / 2,
        expires_at,
        multipart: None,
        downloads: 0,
    };
    for i in 0..25 {
        let expires = (i % 5 == 0).then_some(1_000 + i);
        store
            .insert_upload(make(i, expires), i % 7 == 0, None, None)
            .await
            .unwrap();
    }
    assert_eq!(
        store.stored_bytes(lister).await.unwrap(),
        (0..25).map(|i| 10 + i).sum::<u64>()
    );
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_uploads(lister, after.clone(), 10).await.unwrap();
        assert!(page.len() <= 10);
        seen.extend(page.iter().map(|u| u.id.clone()));
        match page.last() {
            Some(last) if page.len() == 10 => {
                after = Some(UploadCursor {
                    created_at: last.created_at,
                    id: last.id.clone(),
                });
            }
            _ => break,
        }
    }
    let want: Vec<String> = (0..25).rev().map(|i| format!("{run}ls{i:02}")).collect();
    assert_eq!(seen, want, "newest first, each once");
    assert!(
        store
            .list_uploads(owner, None, 100)
            .await
            .unwrap()
            .iter()
            .all(|u| u.owner == owner),
        "only the owner's"
    );
    let due = due_of(store, run, 1_012).await;
    assert_eq!(
        due,
        vec![
            format!("{run}ls00"),
            format!("{run}ls05"),
            format!("{run}ls10")
        ],
        "expired ones, oldest expiry first"
    );
    assert_eq!(
        store
            .delete_upload(&format!("{run}ls10"), Some(1_009))
            .await
            .unwrap(),
        None,
        "not expired by then: kept"
    );
    let gone = store
        .delete_upload(&format!("{run}ls05"), Some(1_012))
        .await
        .unwrap();
    assert_eq!(gone.map(|u| u.size), Some(15));
    assert_eq!(
        store
            .delete_upload(&format!("{run}ls05"), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_upload(&format!("{run}ls05")).await.unwrap(), None);
    let due = due_of(store, run, 1_012).await;
    assert_eq!(due, vec![format!("{run}ls00"), format!("{run}ls10")]);
    let listed = store.list_uploads(lister, None, 100).await.unwrap();
    assert_eq!(listed.len(), 24);
    assert!(listed.iter().all(|u| u.id != format!("{run}ls05")));
    assert_eq!(
        store.stored_bytes(lister).await.unwrap(),
        (0..25).map(|i| 10 + i).sum::<u64>() - 15
    );
    // Expiry is set on complete uploads only, moves in the sweep's order, and clears.
    let waiting = Upload {
        id: format!("{run}ls-pending"),
        state: UploadState::Pending,
        ..make(30, Some(5_000))
    };
    store
        .insert_upload(waiting.clone(), false, None, None)
        .await
        .unwrap();
    assert!(
        !store.set_upload_expiry(&waiting.id, Some(1)).await.unwrap(),
        "a pending upload keeps the expiry of its URLs"
    );
    let keep = format!("{run}ls03");
    assert!(store.set_upload_expiry(&keep, Some(1_001)).await.unwrap());
    let due = due_of(store, run, 1_001).await;
    assert_eq!(due, vec![format!("{run}ls00"), keep.clone()]);
    assert!(store.set_upload_expiry(&keep, None).await.unwrap());
    assert_eq!(
        store.get_upload(&keep).await.unwrap().unwrap().expires_at,
        None
    );
    assert!(
        !store
            .expired_uploads(2_000, 100)
            .await
            .unwrap()
            .iter()
            .any(|u| u.id == keep),
        "a cleared expiry is not swept"
    );
    assert!(!store.set_upload_expiry("nope", Some(5)).await.unwrap());
    // Downloads add up, per upload.
    store
        .add_downloads(vec![(keep.clone(), 2), (format!("{run}ls04"), 1)])
        .await
        .unwrap();
    store.add_downloads(vec![(keep.clone(), 3)]).await.unwrap();
    assert_eq!(store.get_upload(&keep).await.unwrap().unwrap().downloads, 5);
    assert_eq!(
        store
            .get_upload(&format!("{run}ls04"))
            .await
            .unwrap()
            .unwrap()
            .downloads,
        1
    );
    // A deleted upload's thumbnail job is gone with it; finishing it does not bring the
    // upload back.
    let with_job = format!("{run}ls14");
    store.delete_upload(&with_job, None).await.unwrap();
    store
        .finish_thumbnail_job(&with_job, ThumbnailState::Ready, vec![], None)
        .await
        .unwrap();
    assert_eq!(store.get_upload(&with_job).await.unwrap(), None);
}

async fn concurrent_creates(store: Arc<dyn Store>, run: &str) {
    let owner = user(&*store, run, "burst").await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            let link = new_link(
                owner,
                format!("{run}p{i}"),
                &format!("https://burst.test/{i}"),
            );
            tokio::spawn(async move { store.create_link(link).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let created = task.await.expect("task").expect("create");
        assert!(ids.insert(created.link.id));
    }
    assert_eq!(ids.len(), 200);
}

/// Batches ingested at once over the same links (as from many proxies), some of them
/// sent twice at the same time, are each counted once: per link, per hour, per country,
/// and in the owner's totals.
async fn concurrent_batches(store: Arc<dyn Store>, run: &str) {
    let owner = user(&*store, run, "concurrent").await;
    let mut links = Vec::new();
    for i in 0..5 {
        let code = format!("{run}cb{i}");
        let url = format!("https://concurrent.test/{i}");
        links.push(
            store
                .create_link(new_link(owner, code, &url))
                .await
                .unwrap()
                .link
                .id,
        );
    }
    let day = 1_700_000_000 - 1_700_000_000 % 86_400 + 86_400 * 5;
    let batch = |b: usize| -> Vec<EnrichedClick> {
        (0..40)
            .map(|i| {
                let at = (day + 3600 * ((i % 2) as i64)) * 1000 + i as i64;
                click(links[(b + i) % links.len()], at, "Chrome", i % 10 == 0)
            })
            .collect()
    };
    // Sixteen batches; the first four sent twice, both copies at once.
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let store = store.clone();
            let b = if n < 16 { n } else { n - 16 };
            let (id, clicks) = (format!("{run}-concurrent-{b}"), batch(b));
            tokio::spawn(async move { store.ingest_clicks(&id, clicks).await })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        // A copy that finds its twin being applied elsewhere is told to retry later.
        if let Ok(IngestOutcome::Applied) = task.await.expect("task") {
            applied += 1;
        }
    }
    for b in 0..4 {
        // What the sender of a refused copy does: send it again, and hear it was counted.
        let outcome = store
            .ingest_clicks(&format!("{run}-concurrent-{b}"), batch(b))
            .await
            .unwrap();
        assert_eq!(outcome, IngestOutcome::Duplicate);
    }
    assert_eq!(applied, 16, "each batch applied once");
    let mut total = 0;
    for (i, id) in links.iter().enumerate() {
        let link = store
            .get_link("", &format!("{run}cb{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(link.clicks, 16 * 40 / 5, "clicks of link {i}");
        let stats = store
            .link_stats(StatsQuery {
                link_id: *id,
                from: day - 86_400,
                to: day + 86_400,
                interval: Interval::Hour,
                top: 10,
                include_bots: true,
            })
            .await
            .unwrap();
        assert_eq!(stats.total, 16 * 40 / 5, "stats of link {i}");
        assert_eq!(stats.series.len(), 2, "two hours of link {i}");
        assert_eq!(
            stats.countries.iter().map(|c| c.count).sum::<u64>(),
            stats.total
        );
        total += stats.total;
    }
    let account = store
        .account_stats(AccountStatsQuery {
            owner,
            from: day - 86_400,
            to: day + 86_400,
            interval: Interval::Hour,
            top: 10,
            include_bots: true,
        })
        .await
        .unwrap();
    assert_eq!((account.total, total), (16 * 40, 16 * 40));
    assert_eq!(account.bots, 16 * 4);
}

/// Passwords and targeting round-trip and patch; the same code lives on two domains;
/// domains register once, list, and unregister.
async fn link_options_and_domains(store: &dyn Store, run: &str) {
    let owner = user(store, run, "optioned").await;
    let url = format!("https://example.com/{run}/opts");
    let mut protected = new_link(owner, format!("{run}pw"), &url);
    protected.password_hash = Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
    protected.targeting = Some(Targeting {
        ios: Some("https://apps.apple.com/x".into()),
        countries: [("DE".to_owned(), "https://example.de/".to_owned())].into(),
        ..Targeting::default()
    });
    let created = store.create_link(protected.clone()).await.unwrap();
    assert!(!created.existed, "a protected link is never deduplicated");
    let read = store
        .get_link("", &format!("{run}pw"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.password_hash, protected.password_hash);
    assert_eq!(read.targeting, protected.targeting);
    let plain = store
        .create_link(new_link(owner, format!("{run}pl"), &url))
        .await
        .unwrap();
    assert!(
        !plain.existed,
        "a plain link does not dedupe to a protected one"
    );

    let patch = LinkPatch {
        password_hash: Some(None),
        targeting: Some(None),
        ..LinkPatch::default()
    };
    let patched = store
        .update_link(owner, "", &format!("{run}pw"), patch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((patched.password_hash, patched.targeting), (None, None));
    let read = store
        .get_link("", &format!("{run}pw"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((read.password_hash, read.targeting), (None, None));

    let name = format!("{run}.example.test");
    let domain = Domain {
        name: name.clone(),
        users: Some(vec![owner]),
        created_at: 1_700_000_000,
        https: DomainHttps {
            redirect_http: Some(true),
            hsts_max_age_seconds: None,
        },
        fallback_url: Some("https://fallback.test/".into()),
    };
    store.create_domain(domain.clone()).await.unwrap();
    assert_eq!(
        store.create_domain(domain.clone()).await,
        Err(StoreError::DomainExists(name.clone()))
    );
    assert_eq!(store.get_domain(&name).await.unwrap(), Some(domain.clone()));
    assert!(store.list_domains().await.unwrap().contains(&domain));
    let mut everyone = Domain {
        name: format!("{run}-open.example.test"),
        users: None,
        created_at: 1_700_000_001,
        https: DomainHttps::default(),
        fallback_url: None,
    };
    store.create_domain(everyone.clone()).await.unwrap();
    assert_eq!(
        store.get_domain(&everyone.name).await.unwrap(),
        Some(everyone.clone())
    );
    everyone.https = DomainHttps {
        redirect_http: Some(false),
        hsts_max_age_seconds: Some(600),
    };
    assert!(
        store
            .set_domain_https(&everyone.name, everyone.https)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_domain(&everyone.name).await.unwrap(),
        Some(everyone.clone())
    );
    assert!(store.list_domains().await.unwrap().contains(&everyone));
    for fallback in [Some("https://fallback.test/open".to_owned()), None] {
        assert!(
            store
                .set_domain_fallback(&everyone.name, fallback.clone())
                .await
                .unwrap()
        );
        everyone.fallback_url = fallback;
        assert_eq!(
            store.get_domain(&everyone.name).await.unwrap(),
            Some(everyone.clone())
        );
    }
    assert!(
        !store
            .set_domain_fallback(&format!("{run}-none.example.test"), None)
            .await
            .unwrap(),
        "no such domain"
    );
    assert!(
        !store
            .set_domain_https(&format!("{run}-none.example.test"), everyone.https)
            .await
            .unwrap(),
        "no such domain"
    );

    let mut on_domain = new_link(owner, format!("{run}pl"), "https://other.test/");
    on_domain.domain = name.clone();
    store.create_link(on_domain).await.unwrap();
    let there = store
        .get_link(&name, &format!("{run}pl"))
        .await
        .unwrap()
        .unwrap();
    let here = store
        .get_link("", &format!("{run}pl"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(there.url, "https://other.test/");
    assert_eq!(here.url, url, "the same code on two domains is two links");

    assert!(store.delete_domain(&name).await.unwrap());
    assert!(!store.delete_domain(&name).await.unwrap());
    assert_eq!(store.get_domain(&name).await.unwrap(), None);
    assert!(
        store
            .get_link(&name, &format!("{run}pl"))
            .await
            .unwrap()
            .is_some(),
        "links outlive their domain's registration"
    );
}

/// Proxies racing for a capped link's budget get exactly its limit between them; a
/// release returns what was not used; an expired lease is reclaimed, and its holder
/// learns that it lost it.
async fn click_budgets(store: Arc<dyn Store>) {
    // Budgets are keyed by link id alone: random ones keep runs apart.
    let link_id = i64::from(rand::random::<u32>()) + (1 << 40);
    let now_ms = 1_000_000_000;
    let request =
        move |link_id: i64, holder: &str, used: u64, want: u64, held: bool| LeaseRequest {
            link_id,
            max_clicks: 50,
            counted: 0,
            holder: holder.to_owned(),
            used,
            want,
            held,
            now_ms,
            ttl_ms: 10_000,
        };
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            let request = request(link_id, &format!("h{i}"), 0, 1_000, false);
            tokio::spawn(async move { store.lease_clicks(request).await })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("task").expect("lease").granted;
    }
    assert_eq!(total, 50, "racing leases");
    let none = store
        .lease_clicks(request(link_id, "c", 0, 10, false))
        .await
        .unwrap();
    assert_eq!((none.granted, none.remaining), (0, 0));

    // One by one on another link: "a" takes 13, uses 1 and stops; the rest returns.
    let link_id = link_id + 1;
    let a = store
        .lease_clicks(request(link_id, "a", 0, 1_000, false))
        .await
        .unwrap();
    assert_eq!((a.granted, a.remaining), (13, 37));
    assert!(store.release_clicks(link_id, "a", 1).await.unwrap());
    assert!(!store.release_clicks(link_id, "a", 1).await.unwrap());
    let b = store
        .lease_clicks(request(link_id, "b", 0, 1_000, false))
        .await
        .unwrap();
    assert_eq!(
        (b.granted, b.remaining),
        (13, 36),
        "12 returned by the release"
    );

    // "b" reports 2 used, then goes silent past its expiry and the grace: "c" reclaims
    // the 11 it did not use, and "b" is told its lease is gone.
    let report = store
        .lease_clicks(request(link_id, "b", 2, 0, true))
        .await
        .unwrap();
    assert_eq!((report.granted, report.lost), (0, false));
    let mut late = request(link_id, "c", 0, 0, false);
    late.now_ms = now_ms + 10_000 + RECLAIM_GRACE_MS + 1;
    let reclaimed = store.lease_clicks(late).await.unwrap();
    assert_eq!(
        reclaimed.remaining,
        36 + 11,
        "reclaimed from the expired lease"
    );
    let lost = store
        .lease_clicks(request(link_id, "b", 5, 0, true))
        .await
        .unwrap();
    assert!(lost.lost, "the reclaimed holder's report is told");
}

fn webhook(user: UserId, run: &str, name: &str, cursor: i64) -> shortlink_core::Webhook {
    shortlink_core::Webhook {
        id: format!("wh_{run}{name}"),
        user_id: user,
        url: format!("https://hooks.example.com/{name}"),
        events: vec![EventKind::LinkCreated],
        enabled: true,
        disabled_reason: None,
        secret: "whsec_c2VjcmV0".into(),
        previous_secret: None,
        previous_until: None,
        created_at: shortlink_core::time_util::now_unix(),
        updated_at: shortlink_core::time_util::now_unix(),
        delivery: shortlink_core::DeliveryState {
            cursor,
            ..Default::default()
        },
    }
}

/// Endpoints are owner-scoped; one holder leases an endpoint at a time, and only the
/// holder saves progress; disabling appends the owner's event; the delivery log pages
/// newest first; events an enabled endpoint still needs survive the per-user prune.
async fn webhooks(store: Arc<dyn Store>, run: &str) {
    use shortlink_core::{DeliveryOutcome, DeliveryRecord, DeliveryState, next_delivery_id};
    let owner = user(&*store, run, "hooks").await;
    let other = user(&*store, run, "nohooks").await;
    let head = store.event_feed_head().await.unwrap();
    let hook = webhook(owner, run, "a", head);
    store.create_webhook(hook.clone()).await.unwrap();
    assert_eq!(
        store.get_webhook(owner, &hook.id).await.unwrap(),
        Some(hook.clone())
    );
    assert_eq!(
        store.get_webhook(other, &hook.id).await.unwrap(),
        None,
        "owner-scoped"
    );
    assert_eq!(
        store.list_webhooks(Some(owner)).await.unwrap(),
        vec![hook.clone()]
    );
    assert!(store.list_webhooks(None).await.unwrap().contains(&hook));

    // Settings change; a fresh start clears failures but keeps the cursor.
    let mut changed = hook.clone();
    changed.url = "https://hooks.example.com/b".into();
    changed.events = vec![];
    assert!(store.update_webhook(&changed, false).await.unwrap());
    let mut ghost = changed.clone();
    ghost.id = format!("wh_{run}ghost");
    assert!(!store.update_webhook(&ghost, false).await.unwrap());
    assert!(
        store.get_webhook(owner, &ghost.id).await.unwrap().is_none(),
        "not brought back"
    );

    // Leases: 40 holders race, one wins; only it saves; after release another may lease.
    let now = 1_000_000;
    let racers: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            let id = hook.id.clone();
            tokio::spawn(async move {
                store
                    .lease_webhook(owner, &id, &format!("holder-{i}"), now, now + 10_000)
                    .await
                    .unwrap()
                    .map(|_| i)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        winners.extend(racer.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "one lease holder: {winners:?}");
    let holder = format!("holder-{}", winners[0]);
    let progress = DeliveryState {
        cursor: head + 7,
        attempt: 2,
        next_at_ms: 123,
        failing_since_ms: Some(99),
    };
    let version = changed.updated_at;
    assert!(
        !store
            .save_webhook_progress(owner, &hook.id, "intruder", version, progress, now + 10_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .save_webhook_progress(owner, &hook.id, &holder, version - 1, progress, 0)
            .await
            .unwrap(),
        "settings changed since the run read them"
    );
    assert!(
        store
            .save_webhook_progress(owner, &hook.id, &holder, version, progress, 0)
            .await
            .unwrap()
    );
    let leased = store
        .lease_webhook(owner, &hook.id, "next", now + 1, now + 10_000)
        .await
        .unwrap()
        .expect("released: another holder leases it");
    assert_eq!(leased.delivery, progress);
    assert_eq!(leased.url, changed.url);
    // An expired lease is taken over.
    assert!(
        store
            .lease_webhook(owner, &hook.id, "later", now + 20_000, now + 30_000)
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.update_webhook(&changed, true).await.unwrap());
    let fresh = store.get_webhook(owner, &hook.id).await.unwrap().unwrap();
    assert_eq!(
        fresh.delivery,
        DeliveryState {
            cursor: head + 7,
            ..Default::default()
        }
    );

    // The delivery log: newest first, paged by id.
    let records: Vec<DeliveryRecord> = (0..5)
        .map(|i| DeliveryRecord {
            id: next_delivery_id(),
            webhook_id: hook.id.clone(),
            user_id: owner,
            event_id: 10 + i,
            event_type: "link.created".into(),
            message_id: format!("msg_{}", 10 + i),
            attempt: 1,
            at_ms: 1_900_000_000_000,
            status: if i == 0 { None } else { Some(200) },
            latency_ms: 3,
            outcome: if i == 0 {
                DeliveryOutcome::Failed
            } else {
                DeliveryOutcome::Delivered
            },
            error: (i == 0).then(|| "cannot connect".into()),
            next_try_ms: (i == 0).then_some(1_900_000_001_000),
            manual: false,
        })
        .collect();
    store.record_deliveries(records.clone()).await.unwrap();
    let page = store
        .list_deliveries(owner, &hook.id, None, 3)
        .await
        .unwrap();
    let ids: Vec<i64> = page.iter().map(|r| r.event_id).collect();
    assert_eq!(ids, [14, 13, 12]);
    let rest = store
        .list_deliveries(owner, &hook.id, Some(page[2].id), 10)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|r| r.event_id).collect::<Vec<_>>(),
        [11, 10]
    );
    assert_eq!(rest[1], records[0], "stored whole");
    assert!(
        store
            .list_deliveries(other, &hook.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Disabling appends the owner's event; deleting removes the endpoint and its log.
    let told = NewEvent {
        user_id: owner,
        kind: EventKind::WebhookDisabled,
        data: format!(r#"{{"id":"{}"}}"#, hook.id),
    };
    assert!(
        store
            .disable_webhook(owner, &hook.id, "failing", told)
            .await
            .unwrap()
    );
    let disabled = store.get_webhook(owner, &hook.id).await.unwrap().unwrap();
    assert!(!disabled.enabled);
    assert_eq!(disabled.disabled_reason.as_deref(), Some("failing"));
    eventually("the webhook.disabled event", || {
        let store = store.clone();
        async move {
            let events = store.user_events(owner, 0, 100).await.unwrap();
            events
                .iter()
                .any(|e| e.kind == EventKind::WebhookDisabled)
                .then_some(())
        }
    })
    .await;
    assert!(store.delete_webhook(owner, &hook.id).await.unwrap());
    assert!(!store.delete_webhook(owner, &hook.id).await.unwrap());
    assert!(store.get_webhook(owner, &hook.id).await.unwrap().is_none());
    assert!(
        store
            .list_deliveries(owner, &hook.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Events after an enabled endpoint's cursor survive the per-user count prune; those
    // up to it do not.
    let created = store
        .append_events(
            (0..6)
                .map(|i| NewEvent {
                    user_id: owner,
                    kind: EventKind::LinkCreated,
                    data: format!(r#"{{"i":{i}}}"#),
                })
                .collect(),
        )
        .await
        .unwrap();
    let mut behind = webhook(owner, run, "behind", created[1].id);
    behind.events = vec![];
    store.create_webhook(behind.clone()).await.unwrap();
    let retention = EventRetention {
        per_user: 2,
        max_age_secs: 86_400,
    };
    eventually("the prune, up to the endpoint's cursor", || {
        let store = store.clone();
        let created = created.clone();
        async move {
            store.prune_events(retention).await.unwrap();
            let left: Vec<i64> = store
                .user_events(owner, 0, 100)
                .await
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect();
            let kept = created[2..].iter().all(|e| left.contains(&e.id));
            let dropped = created[..2].iter().all(|e| !left.contains(&e.id));
            (kept && dropped).then_some(())
        }
    })
    .await;
    store.delete_webhook(owner, &behind.id).await.unwrap();
}
