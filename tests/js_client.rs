//! The JavaScript client (`clients/js`, its committed build) in a real browser against the
//! real binary (`tests/browser/client.mjs`: typed calls, events falling back from
//! WebSocket to SSE to long polling and resuming by event id across two in-place upgrades,
//! the React hooks), and its `npm pack` tarball installed and used from Node.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{ADMIN_KEY, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_works_in_a_real_browser_across_transports_and_upgrades() {
    let (browser_dir, chromium) = common::browser();
    let mut server = TestServer::start().await;
    let mut child = tokio::process::Command::new("node")
        .arg(browser_dir.join("client.mjs"))
        .arg(&server.proxy)
        .arg(ADMIN_KEY)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node (install Node.js 18 or later)");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = String::new();
    let mut upgrades = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("the browser test finished within 180 s")
            .unwrap();
        let Some(line) = line else { break };
        println!("{line}");
        if line == "@upgrade" {
            // The old process ends its streams as it hands over; the client reconnects.
            let (status, _) = server.upgrade().await;
            assert!(status.success(), "the old process exited with {status}");
            upgrades += 1;
            stdin.write_all(b"upgraded\n").await.unwrap();
            stdin.flush().await.unwrap();
        }
        output.push_str(&line);
        output.push('\n');
    }
    let status = child.wait().await.unwrap();
    assert!(
        status.success() && output.contains("all steps passed"),
        "browser test failed:\n{output}\nserver log:\n{}",
        server.log_text()
    );
    assert_eq!(
        upgrades, 2,
        "the server was upgraded twice under the stream"
    );
}

/// `npm pack` makes a tarball that installs into an empty project (no network: the package
/// has no dependencies) and works from Node against the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packed_client_installs_and_works_from_node() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let package = root.join("clients/js");
    let dir = tempfile::tempdir().unwrap();
    let run = |program: &str, args: &[&str], cwd: &Path| {
        let output = std::process::Command::new(program)
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    // The committed build is what gets packed (no build step here: see scripts/test.sh).
    let packed = run(
        "npm",
        &[
            "pack",
            "--ignore-scripts",
            "--json",
            "--pack-destination",
            dir.path().to_str().unwrap(),
        ],
        &package,
    );
    let packed: serde_json::Value = serde_json::from_str(&packed).unwrap();
    let files: Vec<&str> = packed[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for want in [
        "dist/index.js",
        "dist/index.d.ts",
        "dist/react.js",
        "dist/react.d.ts",
        "dist/events.js",
        "dist/schema.d.ts",
        "package.json",
        "README.md",
    ] {
        assert!(files.contains(&want), "{want} is not packed: {files:?}");
    }
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("src/") || f.contains("node_modules")),
        "{files:?}"
    );
    let tarball = dir.path().join(packed[0]["filename"].as_str().unwrap());
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(
        app.join("package.json"),
        r#"{"name":"app","private":true,"type":"module"}"#,
    )
    .unwrap();
    run(
        "npm",
        &[
            "install",
            "--offline",
            "--no-audit",
            "--no-fund",
            tarball.to_str().unwrap(),
        ],
        &app,
    );

    let server = TestServer::start().await;
    std::fs::write(
        app.join("use.mjs"),
        r#"
import { Shortlink, ApiError } from '@shortlink/client';
const [base, key] = process.argv.slice(2);
const sl = new Shortlink({ baseUrl: base, apiKey: key });
// Node without a global WebSocket falls back to SSE on its own.
const stream = sl.events({ types: ['link.created'], transports: ['websocket', 'sse', 'polling'] });
const opened = new Promise((resolve) => stream.on('status', (s, t) => s === 'open' && resolve(t)));
const transport = await opened;
const link = await sl.links.create({ url: 'https://example.com/from-node', alias: 'fromnode' });
const event = await new Promise((resolve) => stream.on('event', resolve));
stream.close();
let refused = null;
try { await sl.links.create({ url: 'https://example.com/x', alias: 'fromnode' }); }
catch (e) { refused = e instanceof ApiError ? `${e.status} ${e.code}` : String(e); }
console.log(JSON.stringify({ code: link.code, event: event.data.code, id: event.id, transport, refused }));
"#,
    )
    .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("node")
            .arg("use.mjs")
            .arg(&server.proxy)
            .arg(ADMIN_KEY)
            .current_dir(&app)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Node script finished within 30 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["code"], "fromnode");
    assert_eq!(result["event"], "fromnode");
    assert!(result["id"].as_u64().unwrap() > 0);
    let expected = if node_has_websocket(&app) {
        "websocket"
    } else {
        "sse"
    };
    assert_eq!(result["transport"], expected, "{result}");
    assert_eq!(result["refused"], "409 alias_taken");
}

fn node_has_websocket(cwd: &Path) -> bool {
    let out = std::process::Command::new("node")
        .args(["-e", "process.stdout.write(String(typeof WebSocket))"])
        .current_dir(cwd)
        .output()
        .unwrap();
    out.stdout == b"function"
}
