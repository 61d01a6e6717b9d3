//! API handler tests run in process: the control plane's router over the embedded store
//! in a temporary folder, each request handed to it with `oneshot`. For behaviour that
//! needs no socket (validation, ownership, paging, error envelopes); what crosses the
//! proxy or the network is tested against the real binary in the workspace's `tests/`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, header};
use serde_json::{Value, json};
use shortlink_control::ingest::Ingestor;
use shortlink_control::{AppState, Backends, ControlConfig, app, bootstrap_admin};
use shortlink_embedded::{EmbeddedConfig, EmbeddedStore};
use shortlink_objects::LocalDir;
use shortlink_store::Store;
use tower::ServiceExt;

const ADMIN_KEY: &str = "sl_test_admin_key_0123456789abcdef";

/// The control plane's router on a fresh store.
struct Api {
    app: Router,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            EmbeddedStore::open(EmbeddedConfig::new(dir.path().join("data"))).unwrap();
        bootstrap_admin(store.as_ref(), Some(ADMIN_KEY))
            .await
            .unwrap();
        let config = ControlConfig::default();
        let salt = store.installation_salt().await.unwrap();
        let backends = Backends {
            store: store.clone(),
            objects: Arc::new(LocalDir::open(dir.path().join("objects")).unwrap()),
            ingestor: Arc::new(Ingestor::new(store, &config).unwrap()),
        };
        let state = AppState::new(backends, config, "http://short.test", salt, None).unwrap();
        Api {
            app: app(state),
            _dir: dir,
        }
    }

    /// Sends `method path` as `key` (with a JSON `body`); returns (status, JSON body or
    /// `null`).
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {key}"));
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let mut request = request.body(body).unwrap();
        // What axum's server adds: the client's address.
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn create(&self, key: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, "/api/v1/links", key, Some(body))
            .await
    }

    async fn get_json(&self, path: &str, key: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, key, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Creates a user and a key for it as admin; returns the key.
    async fn new_user(&self, name: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/users",
                ADMIN_KEY,
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "create user {name}: {body}");
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/keys",
                ADMIN_KEY,
                Some(json!({"user": name, "label": "test"})),
            )
            .await;
        assert_eq!(status, 201, "create key for {name}: {body}");
        body["key"].as_str().unwrap().to_owned()
    }
}

#[track_caller]
fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error envelope: {body}"))
}

#[tokio::test]
async fn plain_links_deduplicate_per_owner() {
    let s = Api::start().await;
    let url = json!({"url": "https://dedupe.example/page"});
    let (first_status, first) = s.create(ADMIN_KEY, url.clone()).await;
    assert_eq!(first_status, 201);
    let (again_status, again) = s.create(ADMIN_KEY, url.clone()).await;
    assert_eq!(
        again_status, 200,
        "the same URL again returns the existing link"
    );
    assert_eq!(again["code"], first["code"]);

    let (tagged_status, tagged) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://dedupe.example/page", "tags": ["x"]}),
        )
        .await;
    assert_eq!(tagged_status, 201, "options make a new link");
    assert_ne!(tagged["code"], first["code"]);

    let bob = s.new_user("bob").await;
    let (bob_status, bobs) = s.create(&bob, url).await;
    assert_eq!(bob_status, 201);
    assert_ne!(
        bobs["code"], first["code"],
        "another owner gets their own code"
    );
}

/// Generated codes are deterministic in (url, owner, attempt) for the first attempts
/// only: an owner with more links to one URL than those attempts still gets new ones.
#[tokio::test]
async fn many_links_to_one_url_all_get_codes() {
    let s = Api::start().await;
    let mut codes = std::collections::HashSet::new();
    for i in 0..40 {
        let (status, link) = s
            .create(
                ADMIN_KEY,
                json!({"url": "https://same.example/", "tags": [format!("t{i}")]}),
            )
            .await;
        assert_eq!(status, 201, "link {i}: {link}");
        assert!(codes.insert(link["code"].as_str().unwrap().to_owned()));
    }
}

/// A body is a JSON object: an array of the fields' values is refused (serde would read
/// a struct from it), nested objects too; an integer field takes `24.0`, which JSON
/// Schema counts as an integer.
#[tokio::test]
async fn bodies_are_objects_and_integral_numbers_are_integers() {
    let s = Api::start().await;
    for body in [
        json!(["https://array.example/"]),
        json!(null),
        json!("https://array.example/"),
        json!({"url": "https://array.example/", "targeting": [null, null]}),
    ] {
        let (status, answer) = s.create(ADMIN_KEY, body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(error_code(&answer), "invalid_body");
    }
    let (status, link) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://float.example/", "max_clicks": 24.0, "redirect": 302.0}),
        )
        .await;
    assert_eq!(status, 201, "{link}");
    assert_eq!(link["max_clicks"], 24);
    assert_eq!(link["redirect"], 302);
    let (status, answer) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://float.example/", "max_clicks": 2.5}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    // The bodies read by hand (sign-in, key rotation) follow the same rule.
    for path in ["/api/v1/auth/login", "/api/v1/keys/0123456789abcdef/rotate"] {
        let (status, answer) = s
            .call(Method::POST, path, ADMIN_KEY, Some(json!(["admin", "x"])))
            .await;
        assert_eq!(status, 422, "{path}: {answer}");
        assert_eq!(error_code(&answer), "invalid_body", "{path}");
    }
}

#[tokio::test]
async fn list_pages_with_cursor_and_filters() {
    let s = Api::start().await;
    let key = s.new_user("lister").await;
    let mut codes = Vec::new();
    for i in 0..7 {
        let tags = if i % 2 == 0 {
            json!(["even"])
        } else {
            json!([])
        };
        let (status, body) = s
            .create(
                &key,
                json!({"url": format!("https://list.example/item-{i}"), "tags": tags}),
            )
            .await;
        assert_eq!(status, 201);
        codes.push(body["code"].as_str().unwrap().to_owned());
    }
    codes.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/links?limit=3&cursor={c}"),
            None => "/api/v1/links?limit=3".into(),
        };
        let body = s.get_json(&path, &key).await;
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|i| i["code"].as_str().unwrap().to_owned()));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, codes, "every link once, newest first");

    let body = s.get_json("/api/v1/links?tag=even", &key).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 4);
    let body = s.get_json("/api/v1/links?q=ITEM-3", &key).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert_eq!(body["items"][0]["url"], "https://list.example/item-3");

    // Other users see none of them.
    let body = s.get_json("/api/v1/links", ADMIN_KEY).await;
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| !codes.contains(&i["code"].as_str().unwrap().to_owned()))
    );

    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=1000", "invalid_limit"),
        ("limit=abc", "invalid_query"),
        ("cursor=bogus", "invalid_cursor"),
        ("colour=red", "invalid_query"),
    ] {
        let (status, body) = s
            .call(Method::GET, &format!("/api/v1/links?{query}"), &key, None)
            .await;
        assert_eq!((status, error_code(&body)), (422, code), "{query}");
    }
}

#[tokio::test]
async fn users_see_and_change_only_their_own_links() {
    let s = Api::start().await;
    let alice = s.new_user("alice").await;
    let mallory = s.new_user("mallory").await;
    let (_, body) = s
        .create(
            &alice,
            json!({"url": "https://alice.example/", "alias": "alices"}),
        )
        .await;
    assert_eq!(body["code"], "alices");
    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        let patch = (method == Method::PATCH).then(|| json!({"disabled": true}));
        let (status, body) = s
            .call(method.clone(), "/api/v1/links/alices", &mallory, patch)
            .await;
        assert_eq!(
            status, 404,
            "{method} on someone else's link is 404, not 403"
        );
        assert_eq!(error_code(&body), "not_found");
    }
    let (status, body) = s
        .call(Method::GET, "/api/v1/links/alices", &alice, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["disabled"], false);
}

#[tokio::test]
async fn every_error_code_answered_is_a_listed_one() {
    // The envelope's codes come from one closed list (what the API documents).
    let s = Api::start().await;
    let cases = [
        (Method::GET, "/api/v1/links/nope", Some(ADMIN_KEY), None),
        (Method::GET, "/api/v1/links", None, None),
        (
            Method::POST,
            "/api/v1/links",
            Some(ADMIN_KEY),
            Some(json!({"url": ""})),
        ),
        (Method::GET, "/api/v1/links?limit=0", Some(ADMIN_KEY), None),
    ];
    for (method, path, key, body) in cases {
        let (status, body) = s
            .call(method.clone(), path, key.unwrap_or("sl_unknown"), body)
            .await;
        let code = error_code(&body);
        let listed = shortlink_control::ErrorCode::parse(code)
            .unwrap_or_else(|| panic!("{method} {path}: '{code}' is not listed"));
        assert_eq!(listed.status().as_u16(), status, "{method} {path}");
    }
}
