//! Cost of a click's identity (the hash that folds identical clicks at capture), for a
//! load generator's click (no user agent) and a browser's (user agent, referrer).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use shortlink_proxy::clicks::click_identity;

const BROWSER_UA: &[u8] = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

fn identity(c: &mut Criterion) {
    let ip = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)));
    let clicks: [(&str, [Option<&[u8]>; 4]); 2] = [
        ("bare", [None, None, Some(b"127.0.0.1:18080"), None]),
        (
            "browser",
            [
                Some(BROWSER_UA),
                Some(b"https://news.example.com/some/article"),
                Some(b"sho.rt"),
                Some(b"DE"),
            ],
        ),
    ];
    let mut group = c.benchmark_group("click_identity");
    for (name, fields) in clicks {
        group.bench_function(name, |b| {
            b.iter(|| {
                click_identity(
                    black_box(42),
                    black_box(1_700_000_000_123),
                    ip,
                    false,
                    false,
                    black_box(fields),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, identity);
criterion_main!(benches);
