//! Per-record verification: parse the envelope, check the HMAC, validate every field, build the
//! row. Baseline: raw HMAC-SHA256 over the same record bytes, the floor no verifier can beat.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::hint::black_box;
use trackgate_benches::{DEVICE_KEY, envelope, now_ms, record_text};
use trackgate_proto::envelope::{ActiveKey, Clock, DeviceView, Origin, Parsed};
use trackgate_proto::{Secret, body};
use trackgate_store::Row;

fn per_record(c: &mut Criterion) {
    let ts = now_ms();
    let env = envelope("TRK-000001", 42, ts);
    let rec = record_text("TRK-000001", 42, ts);
    let keys = [ActiveKey {
        kid: "k1".into(),
        secret: Secret::from_bytes(DEVICE_KEY),
    }];
    let clock = Clock {
        now_ms: ts,
        retention_ms: 365 * 86_400_000,
    };
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline: raw HMAC-SHA256 of the record", |b| {
        b.iter(|| {
            let mut m = Hmac::<Sha256>::new_from_slice(&DEVICE_KEY).unwrap();
            m.update(b"tg1-record\n");
            m.update(black_box(rec.as_bytes()));
            black_box(m.finalize())
        })
    });
    g.bench_function("parse + verify + validate + row", |b| {
        b.iter(|| {
            let p = Parsed::parse(black_box(&env)).unwrap();
            let view = DeviceView {
                enabled: true,
                supplier: None,
                keys: &keys,
            };
            let v = p.verify(Origin::Device("TRK-000001"), Some(view), clock).unwrap();
            black_box(Row::new(&v.record, v.kid, 0))
        })
    });
    g.finish();
}

fn supplier_batch(c: &mut Criterion) {
    let ts = now_ms();
    let n = 1000;
    let body_text = format!(
        "[{}]",
        (0..n)
            .map(|i| envelope("TRK-000001", i, ts))
            .collect::<Vec<_>>()
            .join(",")
    );
    let records: Vec<String> = (0..n).map(|i| record_text("TRK-000001", i, ts)).collect();
    let keys = [ActiveKey {
        kid: "k1".into(),
        secret: Secret::from_bytes(DEVICE_KEY),
    }];
    let clock = Clock {
        now_ms: ts,
        retention_ms: 365 * 86_400_000,
    };
    let mut g = c.benchmark_group("body of 1000 envelopes");
    g.throughput(Throughput::Elements(n));
    g.bench_function("baseline: raw HMAC-SHA256 of each record", |b| {
        b.iter(|| {
            for r in &records {
                let mut m = Hmac::<Sha256>::new_from_slice(&DEVICE_KEY).unwrap();
                m.update(b"tg1-record\n");
                m.update(r.as_bytes());
                black_box(m.finalize());
            }
        })
    });
    g.bench_function("split + parse + verify + validate + rows", |b| {
        b.iter_batched(
            || (),
            |()| {
                let envs = body::json_envelopes(black_box(body_text.as_bytes())).unwrap();
                let rows: Vec<Row> = envs
                    .iter()
                    .map(|e| {
                        let p = Parsed::parse(e).unwrap();
                        let view = DeviceView {
                            enabled: true,
                            supplier: None,
                            keys: &keys,
                        };
                        let v = p.verify(Origin::Device("TRK-000001"), Some(view), clock).unwrap();
                        Row::new(&v.record, v.kid, 0)
                    })
                    .collect();
                black_box(rows)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, per_record, supplier_batch);
criterion_main!(benches);
