//! The codec's cost: parsing a request and writing a response, plus the cost
//! of one unit of `/work` CPU kernel (quoted in the README).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use servers::codec::{parse_request, write_response, Limits, Response};
use std::hint::black_box;

const WRK_LIKE: &[u8] =
    b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n";
const BROWSER_LIKE: &[u8] = b"GET /file/index.html HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\nCookie: sid=0123456789abcdef0123456789abcdef\r\nUpgrade-Insecure-Requests: 1\r\n\r\n";

fn codec(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("parse");
    for (name, raw) in [("wrk_like", WRK_LIKE), ("browser_like", BROWSER_LIKE)] {
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| parse_request(black_box(raw), &limits).unwrap())
        });
    }
    g.finish();

    let resp = Response::text(200, "Hello, World!");
    let mut out = Vec::with_capacity(256);
    c.bench_function("write_response/hello", |b| {
        b.iter(|| {
            out.clear();
            write_response(&mut out, black_box(&resp), true, false);
            black_box(out.len())
        })
    });

    c.bench_function("work/compute_1_unit", |b| {
        b.iter(|| servers::work::compute(black_box(1)))
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
