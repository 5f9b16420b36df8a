//! Batch encode, the sender's half of the wire format: 1000 records signed as envelopes
//! (PROTOCOL.md §2), joined into a JSON array body and the request signed (§4), as a supplier
//! relay (and firmware-sim, on the same cores as trackgate in the end-to-end harness) does per
//! request. Baseline: raw HMAC-SHA256 of each record and of the body, the crypto no encoder can
//! skip.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use trackgate_benches::{DEVICE_KEY, now_ms, raw_hmac, record_text};
use trackgate_proto::Secret;
use trackgate_proto::sign::{self, RequestParts};

const RECORDS: usize = 1000;

/// The supplier's request for `records`: the JSON array body and its `X-TG-Signature`.
fn encode(key: &Secret, records: &[String], timestamp: &str) -> (String, [u8; 32]) {
    let mut body = String::with_capacity(records.len() * 256);
    body.push('[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&sign::envelope(key, Some("k1"), r));
    }
    body.push(']');
    let sig = sign::request_signature(
        key,
        &RequestParts {
            timestamp,
            method: "POST",
            path: "/v1/records",
            body: body.as_bytes(),
        },
    );
    (body, sig)
}

fn batch_encode(c: &mut Criterion) {
    let ts = now_ms();
    let records: Vec<String> = (0..RECORDS)
        .map(|i| record_text(&format!("TRK-{:06}", i % 100), i as u64, ts))
        .collect();
    let key = Secret::from_bytes(DEVICE_KEY);
    let timestamp = (ts / 1000).to_string();
    // The baseline hashes a body of the same size as the real one.
    let body_len = encode(&key, &records, &timestamp).0.len();
    let body = vec![b'x'; body_len];

    let mut g = c.benchmark_group("batch encode: 1000 records into a signed supplier request");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.bench_function("baseline: raw HMAC-SHA256 of each record and of the body", |b| {
        b.iter(|| {
            for r in &records {
                black_box(raw_hmac(b"tg1-record\n", black_box(r.as_bytes())));
            }
            black_box(raw_hmac(b"tg1-request\n", black_box(&body)))
        })
    });
    g.bench_function("envelopes + JSON array + request signature", |b| {
        b.iter(|| black_box(encode(&key, black_box(&records), &timestamp)))
    });
    g.finish();
}

criterion_group!(benches, batch_encode);
criterion_main!(benches);
