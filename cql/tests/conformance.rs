//! The backend conformance suite against a real CQL server (Cassandra 5 in the test
//! script; ScyllaDB works the same). `CQL_TEST_NODES` names it; scripts/test.sh starts one.

use std::sync::Arc;

use shortlink_cql::{CqlConfig, CqlStore, Retention};

const RETENTION: Retention = Retention {
    click_days: 30,
    event_hours: 168,
};
use shortlink_store::Store;

/// The node the test script started; failing loudly without one.
fn test_config(name: &str) -> CqlConfig {
    let nodes = std::env::var("CQL_TEST_NODES").unwrap_or_else(|_| {
        panic!(
            "CQL_TEST_NODES is not set: these tests need a CQL server. Run scripts/test.sh \
             (it installs and starts Cassandra), or start one and set CQL_TEST_NODES=127.0.0.1:9042"
        )
    });
    CqlConfig {
        nodes: nodes.split(',').map(str::to_owned).collect(),
        keyspace: format!("sl_{name}_{:08x}", rand::random::<u32>()),
        ..CqlConfig::default()
    }
}

/// A session of its own on the test node, to write what the store would not.
async fn raw_session(config: &CqlConfig) -> scylla::client::session::Session {
    scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&config.nodes)
        .build()
        .await
        .expect("connect")
}

/// A migrated keyspace's store with a user named `name` and a link of that code.
async fn store_with_link(
    config: &CqlConfig,
    name: &str,
) -> (Arc<dyn Store>, i64, shortlink_core::Link) {
    use shortlink_core::Role;
    use shortlink_store::conformance::new_link;
    CqlStore::migrate(config, &mut |_| {})
        .await
        .expect("migrate");
    let store: Arc<dyn Store> = CqlStore::open(config, RETENTION).await.expect("open");
    let owner = store.create_user(name, Role::User).await.unwrap().id;
    let link = store
        .create_link(new_link(owner, name.into(), "https://example.org/"))
        .await
        .unwrap()
        .link;
    (store, owner, link)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_backend_passes_the_conformance_suite() {
    let config = test_config("conf");
    let mut steps = Vec::new();
    let version = CqlStore::migrate(&config, &mut |p| steps.push(format!("{p:?}")))
        .await
        .expect("migrate");
    assert_eq!(version, shortlink_cql::MIGRATIONS.len() as i32);
    assert!(
        steps.iter().any(|s| s.starts_with("Applied(1)")),
        "{steps:?}"
    );
    // Migrating again does nothing.
    let mut again = Vec::new();
    CqlStore::migrate(&config, &mut |p| again.push(format!("{p:?}")))
        .await
        .expect("migrate again");
    assert!(again.iter().any(|s| s.starts_with("UpToDate")), "{again:?}");

    let store: Arc<dyn Store> = CqlStore::open(&config, RETENTION).await.expect("open");
    shortlink_store::conformance::run_all(store).await;
    CqlStore::drop_keyspace(&config)
        .await
        .expect("drop keyspace");
}

#[tokio::test]
async fn opening_an_unmigrated_keyspace_says_to_migrate() {
    let config = test_config("bare");
    let error = match CqlStore::open(&config, RETENTION).await {
        Ok(_) => panic!("an unmigrated keyspace opened"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("shortlink migrate"), "{error}");
}

#[tokio::test]
async fn a_keyspace_from_a_newer_binary_is_refused() {
    let config = test_config("newer");
    CqlStore::migrate(&config, &mut |_| {})
        .await
        .expect("migrate");
    // What a newer binary's migrate would leave behind.
    let session = raw_session(&config).await;
    session
        .query_unpaged(
            format!(
                "INSERT INTO {}.schema_migrations (version, name) VALUES (99, 'future')",
                config.keyspace
            ),
            (),
        )
        .await
        .expect("record a future version");
    let refused = CqlStore::migrate(&config, &mut |_| {}).await.unwrap_err();
    assert!(refused.to_string().contains("newer"), "{refused}");
    let error = match CqlStore::open(&config, RETENTION).await {
        Ok(_) => panic!("a keyspace of a newer schema opened"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("upgrade shortlink"), "{error}");
    CqlStore::drop_keyspace(&config)
        .await
        .expect("drop keyspace");
}

/// Counts are every writer's rows plus the counters of versions before migration 14: two
/// stores (two writers) ingest on top of counters written the old way, one of them
/// remembering so few rows that it forgets and reads its own back, a third takes over a
/// closed one's slot, and every read adds them all up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_add_up_over_writers_forgotten_rows_and_older_counters() {
    use shortlink_store::IngestOutcome;
    use shortlink_store::conformance::click;

    let config = CqlConfig {
        tally_rows: 3,
        ..test_config("tally")
    };
    let (a, owner, link) = store_with_link(&config, "tally").await;
    let b: Arc<dyn Store> = CqlStore::open(&config, RETENTION).await.expect("open");
    let now = shortlink_core::time_util::now_unix();
    let hour = now - now.rem_euclid(3600);
    let earlier = hour - 48 * 3600;
    let day = hour - hour.rem_euclid(86_400);
    // Months since year 0, as the store partitions rollups.
    let month = |at: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp(at).unwrap();
        t.year() * 12 + i32::from(u8::from(t.month())) - 1
    };

    // Counters as versions before migration 14 wrote them: 5 clicks (1 a bot's) at `hour`.
    let session = raw_session(&config).await;
    let ks = &config.keyspace;
    let legacy = [
        format!(
            "UPDATE {ks}.link_clicks SET clicks = clicks + 5 WHERE link_id = {}",
            link.id
        ),
        format!(
            "UPDATE {ks}.rollup_hour SET total = total + 5, bots = bots + 1 \
             WHERE link_id = {} AND month = {} AND hour = {hour}",
            link.id,
            month(hour)
        ),
        format!(
            "UPDATE {ks}.rollup_day SET n = n + 5 WHERE link_id = {} AND month = {} \
             AND day = {day} AND dim = 'referrer' AND key = 'example.com'",
            link.id,
            month(day)
        ),
        format!(
            "UPDATE {ks}.owner_rollup_hour SET total = total + 5, bots = bots + 1 \
             WHERE owner = {owner} AND month = {} AND hour = {hour}",
            month(hour)
        ),
        format!(
            "UPDATE {ks}.owner_link_day SET total = total + 5, bots = bots + 1 \
             WHERE owner = {owner} AND month = {} AND day = {day} AND link_id = {}",
            month(day),
            link.id
        ),
    ];
    for cql in legacy {
        session
            .query_unpaged(cql, ())
            .await
            .expect("legacy counter");
    }

    let clicks = |at: i64, n: usize| -> Vec<_> {
        (0..n)
            .map(|i| click(link.id, at * 1000 + i as i64, "Firefox", false))
            .collect()
    };
    let first: Vec<_> = clicks(hour, 3)
        .into_iter()
        .chain(clicks(earlier, 2))
        .collect();
    assert_eq!(
        a.ingest_clicks("tally-1", first.clone()).await.unwrap(),
        IngestOutcome::Applied
    );
    // Over three rows remembered: `a` forgets its written rows and reads them back here.
    assert_eq!(
        a.ingest_clicks("tally-2", clicks(earlier, 4))
            .await
            .unwrap(),
        IngestOutcome::Applied
    );
    assert_eq!(
        b.ingest_clicks("tally-3", clicks(hour, 1)).await.unwrap(),
        IngestOutcome::Applied
    );
    assert_eq!(
        b.ingest_clicks("tally-1", first).await.unwrap(),
        IngestOutcome::Duplicate
    );
    assert_eq!(
        a.ingest_clicks("tally-4", clicks(hour, 2)).await.unwrap(),
        IngestOutcome::Applied
    );

    // 5 older + 3 + 2 + 4 + 1 + 2.
    for store in [&a, &b] {
        adds_up(store, link.id, owner, (earlier, hour), 17, (6, 11)).await;
    }

    // A store closing lets go of its writer slot and the next one takes it over, reading
    // back the rows it meets: the rows of a key stay as many as the writers at once.
    a.close_ingestion().await;
    let c: Arc<dyn Store> = CqlStore::open(&config, RETENTION).await.expect("open");
    let both: Vec<_> = clicks(earlier, 1)
        .into_iter()
        .chain(clicks(hour, 1))
        .collect();
    assert_eq!(
        c.ingest_clicks("tally-5", both).await.unwrap(),
        IngestOutcome::Applied
    );
    let writers: Vec<(i64,)> = session
        .query_unpaged(
            format!(
                "SELECT writer FROM {ks}.link_clicks_w WHERE link_id = {}",
                link.id
            ),
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(i64,)>()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        writers,
        vec![(0,), (1,)],
        "slot 0 taken over, not a third writer"
    );
    for store in [&b, &c] {
        adds_up(store, link.id, owner, (earlier, hour), 19, (7, 12)).await;
    }
    CqlStore::drop_keyspace(&config)
        .await
        .expect("drop keyspace");
}

/// Asserts `link`'s counts: its total, its clicks at the two hours (one a bot's, at the
/// second), its referrer and its owner's account, all `total`.
async fn adds_up(
    store: &Arc<dyn Store>,
    link: i64,
    owner: i64,
    (earlier, hour): (i64, i64),
    total: u64,
    (at_earlier, at_hour): (u64, u64),
) {
    use shortlink_core::Interval;
    use shortlink_store::{AccountStatsQuery, StatsQuery};
    let read = store.get_link("", "tally").await.unwrap().unwrap();
    assert_eq!(read.clicks, total, "the link's clicks");
    let stats = store
        .link_stats(StatsQuery {
            link_id: link,
            from: earlier - 3600,
            to: hour + 3600,
            interval: Interval::Hour,
            top: 10,
            include_bots: true,
        })
        .await
        .unwrap();
    assert_eq!((stats.total, stats.bots), (total, 1));
    let series: Vec<(i64, u64)> = stats.series.iter().map(|p| (p.ts, p.count)).collect();
    assert_eq!(series, vec![(earlier, at_earlier), (hour, at_hour)]);
    let referrers: Vec<(&str, u64)> = stats
        .referrers
        .iter()
        .map(|k| (k.key.as_str(), k.count))
        .collect();
    assert_eq!(referrers, vec![("example.com", total)]);
    let account = store
        .account_stats(AccountStatsQuery {
            owner,
            from: earlier - 3600,
            to: hour + 3600,
            interval: Interval::Hour,
            top: 10,
            include_bots: true,
        })
        .await
        .unwrap();
    assert_eq!((account.total, account.bots), (total, 1));
    assert_eq!(account.links.len(), 1);
    assert_eq!(account.links[0].clicks, total);
}

/// Counts a round could not write wait in memory and are written by the round of the next
/// batch ingested; a batch of the failed round sent again is then counted once. Here a
/// count table is dropped under the store (every write to it fails) and created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_that_did_not_land_are_written_by_the_next_round() {
    use shortlink_store::IngestOutcome;
    use shortlink_store::conformance::click;

    let config = test_config("carry");
    let (store, _, link) = store_with_link(&config, "carry").await;
    let now = shortlink_core::time_util::now_unix();
    let clicks = |n: usize| -> Vec<_> {
        (0..n)
            .map(|i| click(link.id, now * 1000 + i as i64, "Firefox", false))
            .collect()
    };
    assert_eq!(
        store.ingest_clicks("carry-1", clicks(3)).await.unwrap(),
        IngestOutcome::Applied
    );

    let session = raw_session(&config).await;
    let ks = &config.keyspace;
    let schema = |cql: String| {
        let mut statement = scylla::statement::Statement::new(cql);
        statement.set_request_timeout(Some(std::time::Duration::from_secs(60)));
        statement
    };
    session
        .query_unpaged(schema(format!("DROP TABLE {ks}.link_clicks_w")), ())
        .await
        .expect("drop");
    let failed = store.ingest_clicks("carry-2", clicks(2)).await;
    assert!(failed.is_err(), "{failed:?}");
    session
        .query_unpaged(
            schema(format!(
                "CREATE TABLE {ks}.link_clicks_w (link_id bigint, writer bigint, \
                 clicks bigint, PRIMARY KEY ((link_id), writer))"
            )),
            (),
        )
        .await
        .expect("create again");

    // Sent again as the shipper does, until the table is known everywhere.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let outcome = loop {
        match store.ingest_clicks("carry-2", clicks(2)).await {
            Ok(outcome) => break outcome,
            Err(error) if std::time::Instant::now() < deadline => {
                eprintln!("sent again later: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(error) => panic!("{error}"),
        }
    };
    assert_eq!(outcome, IngestOutcome::Applied);
    assert_eq!(
        store.ingest_clicks("carry-2", clicks(2)).await.unwrap(),
        IngestOutcome::Duplicate
    );
    // The table came back empty: the total written again is the whole of it.
    let read = store.get_link("", "carry").await.unwrap().unwrap();
    assert_eq!(read.clicks, 5);
    CqlStore::drop_keyspace(&config)
        .await
        .expect("drop keyspace");
}
