//! The CPU cost of each state mode's per-request work, without the network:
//! a session-table increment (stateful, soft), a token verify + mint
//! (stateless), making a new session, and the whole `POST /counter` answer
//! in each mode. Quoted in the README:
//! `cargo bench -p servers --bench state`.

use criterion::{criterion_group, criterion_main, Criterion};
use servers::codec::{parse_request, Limits, Request};
use servers::state::sid::SessionId;
use servers::state::table::{Policy, SessionTable};
use servers::state::token::TokenKey;
use servers::state::{State, StateConfig, StateKey, StateMode};
use std::hint::black_box;
use std::time::Duration;

fn request(extra: &str) -> Request {
    let raw = format!("POST /counter HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
    parse_request(raw.as_bytes(), &Limits::default())
        .unwrap()
        .unwrap()
        .0
}

fn parts(c: &mut Criterion) {
    let table = SessionTable::new(100_000, Policy::Refuse).unwrap();
    let ids: Vec<_> = (0..10_000)
        .map(|_| SessionId::generate().unwrap())
        .collect();
    for id in &ids {
        table.insert(*id, 0).unwrap();
    }
    let mut i = 0;
    c.bench_function("table/increment (10k of 100k sessions)", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(table.increment(ids[i]))
        })
    });
    c.bench_function("table/increment unknown id", |b| {
        let guess = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
        b.iter(|| black_box(table.increment(black_box(guess))))
    });
    let fresh: Vec<_> = (0..1000).map(|_| SessionId::generate().unwrap()).collect();
    let mut j = 0;
    c.bench_function("table/insert + remove", |b| {
        b.iter(|| {
            j = (j + 1) % fresh.len();
            table.insert(fresh[j], 1).unwrap();
            black_box(table.remove(fresh[j]))
        })
    });
    c.bench_function("sid/generate (getrandom)", |b| {
        b.iter(|| black_box(SessionId::generate().unwrap()))
    });
    let key = TokenKey::new(b"bench key, 16 bytes or more").unwrap();
    let token = key.mint(41);
    c.bench_function("token/verify + mint", |b| {
        b.iter(|| {
            let n = key.verify(black_box(&token)).unwrap();
            black_box(key.mint(n + 1))
        })
    });
}

fn modes(c: &mut Criterion) {
    let state = |mode| {
        State::new(&StateConfig {
            mode,
            ttl: Duration::from_secs(60),
            max_sessions: 100_000,
            session_idle: None,
            key: Some(StateKey(b"bench key, 16 bytes or more".to_vec())),
            route: None,
        })
        .unwrap()
    };
    let mut g = c.benchmark_group("counter");
    let stateless = state(StateMode::Stateless);
    let first = stateless.counter(&request(""));
    let token = &first.headers[0].1;
    let req = request(&format!("X-State-Token: {token}\r\n"));
    g.bench_function("stateless", |b| {
        b.iter(|| black_box(stateless.counter(&req)))
    });
    for mode in [StateMode::Stateful, StateMode::Soft] {
        let s = state(mode);
        let first = s.counter(&request(""));
        let cookie = first.headers[0].1.split(';').next().unwrap().to_string();
        let req = request(&format!("Cookie: {cookie}\r\n"));
        g.bench_function(mode.as_str(), |b| b.iter(|| black_box(s.counter(&req))));
    }
    g.finish();
}

criterion_group!(benches, parts, modes);
criterion_main!(benches);
