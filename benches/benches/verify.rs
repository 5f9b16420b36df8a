//! Per-record verification: parse the envelope, check the HMAC, validate every field, build the
//! row. Baseline: raw HMAC-SHA256 over the same record bytes, the floor no verifier can beat.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use trackgate_benches::{DEVICE_KEY, envelope, now_ms, raw_hmac, record_text};
use trackgate_proto::envelope::{ActiveKey, Clock, DeviceView, Origin, Parsed};
use trackgate_proto::{Secret, body};
use trackgate_store::Row;

fn device_keys() -> [ActiveKey; 1] {
    [ActiveKey {
        kid: "k1".into(),
        secret: Secret::from_bytes(DEVICE_KEY),
    }]
}

fn clock(now_ms: u64) -> Clock {
    Clock {
        now_ms,
        retention_ms: 365 * 86_400_000,
    }
}

/// trackgate's work for one envelope: parse, verify, validate, build the row.
fn to_row(env: &str, keys: &[ActiveKey], clock: Clock) -> Row {
    let p = Parsed::parse(env).unwrap();
    let view = DeviceView {
        enabled: true,
        supplier: None,
        keys,
    };
    let v = p.verify(Origin::Device("TRK-000001"), Some(view), clock).unwrap();
    Row::new(&v.record, v.kid, 0)
}

fn per_record(c: &mut Criterion) {
    let ts = now_ms();
    let env = envelope("TRK-000001", 42, ts);
    let rec = record_text("TRK-000001", 42, ts);
    let (keys, clock) = (device_keys(), clock(ts));
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline: raw HMAC-SHA256 of the record", |b| {
        b.iter(|| black_box(raw_hmac(b"tg1-record\n", black_box(rec.as_bytes()))))
    });
    g.bench_function("parse + verify + validate + row", |b| {
        b.iter(|| black_box(to_row(black_box(&env), &keys, clock)))
    });
    g.finish();
}

fn supplier_batch(c: &mut Criterion) {
    let ts = now_ms();
    let n = 1000;
    let envelopes: Vec<String> = (0..n).map(|i| envelope("TRK-000001", i, ts)).collect();
    let body_text = format!("[{}]", envelopes.join(","));
    let records: Vec<String> = (0..n).map(|i| record_text("TRK-000001", i, ts)).collect();
    let (keys, clock) = (device_keys(), clock(ts));
    let mut g = c.benchmark_group("body of 1000 envelopes");
    g.throughput(Throughput::Elements(n));
    g.bench_function("baseline: raw HMAC-SHA256 of each record", |b| {
        b.iter(|| {
            records
                .iter()
                .map(|r| raw_hmac(b"tg1-record\n", r.as_bytes()))
                .for_each(|m| {
                    black_box(m);
                })
        })
    });
    g.bench_function("split + parse + verify + validate + rows", |b| {
        b.iter(|| {
            let envs = body::json_envelopes(black_box(body_text.as_bytes())).unwrap();
            let rows: Vec<Row> = envs.iter().map(|e| to_row(e, &keys, clock)).collect();
            black_box(rows)
        })
    });
    g.finish();
}

criterion_group!(benches, per_record, supplier_batch);
criterion_main!(benches);
