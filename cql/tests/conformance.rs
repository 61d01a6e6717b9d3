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
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&config.nodes)
        .build()
        .await
        .expect("connect");
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
