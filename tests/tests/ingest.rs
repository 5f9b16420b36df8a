//! POST /v1/records end to end: the real binary, real TLS, the database read back directly
//! (SQLite, and PostgreSQL over TLS for the tests of what is stored).

use trackgate_e2e::*;

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

async fn single_envelope_array_and_ndjson_are_stored(backend: Backend) {
    let (_dir, server) = started_on(backend, "");
    let (dev, sup, c) = (vector_device(), vector_supplier(), server.client());
    let one = dev.envelope(&record("TRK-0001", 1));
    assert_eq!(server.post(&c, &sup, JSON, &one).await.counts(), (1, 0));
    let array = format!(
        "[{},{}]",
        dev.envelope(&record("TRK-0001", 2)),
        dev.envelope(&record("TRK-0001", 3))
    );
    assert_eq!(server.post(&c, &sup, JSON, &array).await.counts(), (2, 0));
    let nd = format!(
        "{}\r\n\n{}\n",
        dev.envelope(&record("TRK-0001", 4)),
        dev.envelope(&record("TRK-0001", 5))
    );
    let reply = server.post(&c, &sup, "Application/X-NDJSON; charset=UTF-8", &nd).await;
    assert_eq!(reply.counts(), (2, 0));
    assert!(reply.rejected().is_empty());
    // An empty array is fine and counts nothing.
    assert_eq!(server.post(&c, &sup, JSON, "[]").await.counts(), (0, 0));

    let db = server.db().await;
    assert_eq!(stored(&db, Some("TRK-0001")).await, 5);
    let (rec, kid): (String, String) =
        sqlx::query_as("SELECT record, kid FROM positions WHERE device_id = 'TRK-0001' AND seq = 1")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(one.contains(&rec), "the record is stored byte for byte");
    assert_eq!(kid, "k1");
}

#[tokio::test]
async fn the_section_5_vector_request_is_accepted_when_its_time_is_now() {
    let (_dir, server) = started("ingest.retention_days = 36500");
    let c = server.client();
    // The vector's record has ts 1763800000123 (2025-11-22): inside a 100-year retention.
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../crates/proto/tests/protocol-vectors.json")).unwrap();
    let body = v["request"]["body"].as_str().unwrap();
    let reply = server.post(&c, &vector_supplier(), JSON, body).await;
    assert_eq!(reply.counts(), (1, 0));
    let envs = v["envelopes_valid"].as_array().unwrap();
    let reply = server.post(&c, &vector_device(), JSON, envs[1].as_str().unwrap()).await;
    assert_eq!(
        reply.counts(),
        (0, 1),
        "the second vector is the same record: a duplicate"
    );
}

async fn duplicates_are_counted_not_stored_twice(backend: Backend) {
    let (_dir, server) = started_on(backend, "");
    let (dev, sup, c) = (vector_device(), vector_supplier(), server.client());
    let env = dev.envelope(&record("TRK-0001", 7));
    assert_eq!(server.post(&c, &sup, JSON, &env).await.counts(), (1, 0));
    assert_eq!(server.post(&c, &sup, JSON, &env).await.counts(), (0, 1));
    let twice = format!("[{env},{env}]");
    assert_eq!(server.post(&c, &sup, JSON, &twice).await.counts(), (0, 2));
    let fresh = dev.envelope(&record("TRK-0001", 8));
    assert_eq!(
        server
            .post(&c, &sup, JSON, &format!("[{fresh},{fresh}]"))
            .await
            .counts(),
        (1, 1)
    );
    assert_eq!(stored(&server.db().await, None).await, 2);
    assert_eq!(
        server
            .metric(r#"trackgate_records_total{outcome="duplicate",transport="https"}"#)
            .await,
        4.0
    );
}

async fn a_changed_resend_is_a_conflict_and_the_stored_record_is_kept(backend: Backend) {
    let (_dir, server) = started_on(backend, "");
    let (dev, sup, c) = (vector_device(), vector_supplier(), server.client());
    let first = record("TRK-0001", 9);
    server.post(&c, &sup, JSON, &dev.envelope(&first)).await.counts();
    let changed = first.replace("\"bat\":87", "\"bat\":12");
    let reply = server.post(&c, &sup, JSON, &dev.envelope(&changed)).await;
    assert_eq!(reply.counts(), (0, 0));
    assert_eq!(reply.rejected(), [(0, "conflict".to_owned())]);
    let db = server.db().await;
    let kept: String = sqlx::query_scalar("SELECT record FROM positions WHERE seq = 9")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(kept, first);
}

async fn a_mixed_batch_is_answered_per_index_and_the_good_records_are_stored(backend: Backend) {
    let (_dir, server) = started_on(backend, "");
    let (dev, sup, c) = (vector_device(), vector_supplier(), server.client());
    server.add_device(&Key::derived("TRK-OFF", "k1"), Some("ACME"));
    server.ok(&["device", "disable", "TRK-OFF"], None);
    server.add_device(&Key::derived("TRK-ELSE", "k1"), None);
    let bad_sig = dev.envelope(&record("TRK-0001", 3)).replace("\"seq\":3", "\"seq\":4");
    let envelopes = [
        dev.envelope(&record("TRK-0001", 1)),                                      // 0 ok
        "{\"m\":{\"dev\":\"TRK-0001\"},\"sig\":\"00\"}".to_owned(),                // 1 malformed
        bad_sig,                                                                   // 2 bad_signature
        Key::derived("TRK-NONE", "k1").envelope(&record("TRK-NONE", 1)),           // 3 unknown_device
        dev.envelope(&record("TRK-0001", 5).replace("\"bat\"", "\"battery\"")),    // 4 unknown_field
        dev.envelope(&record("TRK-0001", 6).replace("\"bat\":87", "\"bat\":187")), // 5 bad_value
        dev.envelope(&format!(
            r#"{{"dev":"TRK-0001","seq":7,"ts":{}}}"#,
            now_ms() + 3_600_000
        )), // 6 ts_out_of_range
        Key::derived("TRK-OFF", "k1").envelope(&record("TRK-OFF", 1)),             // 7 device_disabled
        Key::derived("TRK-ELSE", "k1").envelope(&record("TRK-ELSE", 1)),           // 8 not_permitted
        Key::new("TRK-0001", "k9", &"11".repeat(32)).envelope(&record("TRK-0001", 9)), // 9 unknown_key
        "42".to_owned(),                                                           // 10 malformed
        dev.envelope(&record("TRK-0001", 2)),                                      // 11 ok
    ];
    let body = format!("[{}]", envelopes.join(","));
    let reply = server.post(&c, &sup, JSON, &body).await;
    assert_eq!(reply.counts(), (2, 0));
    let expected = [
        (1, "malformed"),
        (2, "bad_signature"),
        (3, "unknown_device"),
        (4, "unknown_field"),
        (5, "bad_value"),
        (6, "ts_out_of_range"),
        (7, "device_disabled"),
        (8, "not_permitted"),
        (9, "unknown_key"),
        (10, "malformed"),
    ];
    assert_eq!(reply.rejected(), expected.map(|(i, r)| (i, r.to_owned())));
    let db = server.db().await;
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM positions ORDER BY seq")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(seqs, [1, 2], "only the good records are stored");
    // The rejections are kept for supplier support, with the key that sent them.
    let kept: Vec<(String, String)> = sqlx::query_as("SELECT reason, key_name FROM rejects ORDER BY idx")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(kept.len(), 10);
    assert!(kept.iter().all(|(_, k)| k == "ACME/s1"));
    assert_eq!(
        server
            .metric(r#"trackgate_rejections_total{reason="malformed",transport="https"}"#)
            .await,
        2.0
    );
    // NDJSON: a line that is not JSON is malformed at its index, the rest goes on.
    let nd = format!("not json\n{}\n", dev.envelope(&record("TRK-0001", 30)));
    let reply = server.post(&c, &sup, NDJSON, &nd).await;
    assert_eq!(reply.counts(), (1, 0));
    assert_eq!(reply.rejected(), [(0, "malformed".to_owned())]);
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused_before_any_key_lookup() {
    let (_dir, server) = started("");
    let (dev, sup, c) = (vector_device(), vector_supplier(), server.client());
    let body = dev.envelope(&record("TRK-0001", 1));
    let now = now_ms() / 1000;
    for ts in [now - 301, now + 301, 0] {
        let reply = server.post_at(&c, &sup, JSON, &body, &ts.to_string()).await;
        assert_eq!((reply.status, reply.error()), (401, "stale_request"), "ts {ts}");
    }
    // Even for a key that does not exist: the window comes first.
    let nobody = Key::derived("NOBODY", "k1");
    let reply = server
        .post_at(&c, &nobody, JSON, &body, &(now - 1000).to_string())
        .await;
    assert_eq!(reply.error(), "stale_request");
    for ts in [now - 290, now + 290] {
        assert_eq!(server.post_at(&c, &sup, JSON, &body, &ts.to_string()).await.status, 200);
    }
    assert_eq!(stored(&server.db().await, None).await, 1);
}

async fn unknown_revoked_and_wrong_keys_are_unauthorized_alike(backend: Backend) {
    let (_dir, server) = started_on(backend, "ingest.key_refresh_ms = 100");
    let (dev, sup, c) = (vector_device(), vector_supplier(), server.client());
    let body = dev.envelope(&record("TRK-0001", 1));
    let unknown_owner = Key::derived("NOBODY", "k1");
    let unknown_kid = Key::new("ACME", "s9", &sup.secret.to_hex());
    let wrong_secret = Key::new("ACME", "s1", &"22".repeat(32));
    for key in [&unknown_owner, &unknown_kid, &wrong_secret] {
        let reply = server.post(&c, key, JSON, &body).await;
        assert_eq!((reply.status, reply.error()), (401, "unauthorized"), "{}", key.name());
    }
    // Missing or ill-formed headers are the same 401.
    let resp = c
        .post(server.url("/v1/records"))
        .header("content-type", JSON)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // A signature over other bytes than were sent.
    let ts = (now_ms() / 1000).to_string();
    let parts = trackgate_proto::sign::RequestParts {
        timestamp: &ts,
        method: "POST",
        path: "/v1/records",
        body: b"[]",
    };
    let sig = hex::encode(trackgate_proto::sign::request_signature(&sup.secret, &parts));
    let resp = c
        .post(server.url("/v1/records"))
        .header("content-type", JSON)
        .header("x-tg-key", sup.name())
        .header("x-tg-timestamp", &ts)
        .header("x-tg-signature", sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    assert_eq!(server.post(&c, &sup, JSON, &body).await.status, 200);
    server.ok(&["key", "revoke", "ACME", "s1"], None);
    let revoked = wait_for_status(&server, &c, &sup, &dev.envelope(&record("TRK-0001", 2)), 401).await;
    assert_eq!(revoked.error(), "unauthorized");
    // A disabled supplier is refused the same way.
    let s2 = Key::derived("ACME", "s2");
    server.import_key(&s2);
    wait_for_status(&server, &c, &s2, &dev.envelope(&record("TRK-0001", 3)), 200).await;
    server.ok(&["supplier", "disable", "ACME"], None);
    wait_for_status(&server, &c, &s2, &dev.envelope(&record("TRK-0001", 4)), 401).await;
    // Once refused, nothing of a request is stored.
    let db = server.db().await;
    let before = stored(&db, None).await;
    assert_eq!(
        server
            .post(&c, &s2, JSON, &dev.envelope(&record("TRK-0001", 99)))
            .await
            .status,
        401
    );
    assert_eq!(
        server
            .post(&c, &sup, JSON, &dev.envelope(&record("TRK-0001", 98)))
            .await
            .status,
        401
    );
    assert_eq!(stored(&db, None).await, before);
    let refused: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM positions WHERE seq IN (98, 99)")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(refused, 0);
}

/// Provisioning changes reach the server within `ingest.key_refresh_ms`: poll until they have.
async fn wait_for_status(server: &Server, c: &reqwest::Client, key: &Key, body: &str, status: u16) -> Reply {
    for _ in 0..100 {
        let reply = server.post(c, key, JSON, body).await;
        if reply.status == status {
            return reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("status never became {status}");
}

async fn a_device_key_carries_only_its_own_records(backend: Backend) {
    let (_dir, server) = started_on(backend, "");
    let (dev, c) = (vector_device(), server.client());
    let other = Key::derived("TRK-0002", "k1");
    server.add_device(&other, Some("ACME"));
    let body = format!(
        "[{},{}]",
        dev.envelope(&record("TRK-0001", 1)),
        other.envelope(&record("TRK-0002", 1))
    );
    let reply = server.post(&c, &dev, JSON, &body).await;
    assert_eq!(reply.counts(), (1, 0));
    assert_eq!(reply.rejected(), [(1, "not_permitted".to_owned())]);
    // A supplier key carries only its own devices' records.
    let rival = Key::derived("RIVAL", "s1");
    server.add_supplier(&rival);
    let reply = server
        .post(&c, &rival, JSON, &dev.envelope(&record("TRK-0001", 2)))
        .await;
    assert_eq!(reply.rejected(), [(0, "not_permitted".to_owned())]);
    assert_eq!(stored(&server.db().await, None).await, 1);
}

async fn key_rotation_and_a_revoked_kid(backend: Backend) {
    let (_dir, server) = started_on(backend, "ingest.key_refresh_ms = 100");
    let (dev, sup, c) = (vector_device(), vector_supplier(), server.client());
    let k2 = Key::derived("TRK-0001", "k2");
    server.import_key(&k2);
    let no_kid = |seq| trackgate_proto::sign::envelope(&k2.secret, None, &record("TRK-0001", seq));
    let body = format!(
        "[{},{},{}]",
        dev.envelope(&record("TRK-0001", 1)),
        k2.envelope(&record("TRK-0001", 2)),
        no_kid(3)
    );
    assert_eq!(server.post(&c, &sup, JSON, &body).await.counts(), (3, 0));
    server.ok(&["key", "revoke", "TRK-0001", "k1"], None);
    let mut reply = server.post(&c, &sup, JSON, &dev.envelope(&record("TRK-0001", 4))).await;
    for _ in 0..100 {
        if !reply.rejected().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        reply = server.post(&c, &sup, JSON, &dev.envelope(&record("TRK-0001", 5))).await;
    }
    assert_eq!(reply.rejected(), [(0, "unknown_key".to_owned())]);
    let body = format!("[{},{}]", k2.envelope(&record("TRK-0001", 6)), no_kid(7));
    assert_eq!(server.post(&c, &sup, JSON, &body).await.counts(), (2, 0));
}

#[tokio::test]
async fn size_and_media_type_limits() {
    let (_dir, server) = started("http.max_body_bytes = 4096\nhttp.max_records = 3");
    let (dev, sup, c) = (vector_device(), vector_supplier(), server.client());
    let big = format!("[{}]", vec![dev.envelope(&record("TRK-0001", 1)); 40].join(","));
    assert!(big.len() > 4096);
    let reply = server.post(&c, &sup, JSON, &big).await;
    assert_eq!((reply.status, reply.error()), (413, "too_large"));
    let four: Vec<String> = (1..=4).map(|s| dev.envelope(&record("TRK-0001", s))).collect();
    let reply = server.post(&c, &sup, JSON, &format!("[{}]", four.join(","))).await;
    assert_eq!((reply.status, reply.error()), (413, "too_large"));
    assert!(reply.body["detail"].as_str().unwrap().contains("at most 3"));
    for ct in ["text/plain", "application/json; charset=latin1", "application/xml"] {
        let reply = server.post(&c, &sup, ct, "[]").await;
        assert_eq!((reply.status, reply.error()), (415, "unsupported_media_type"), "{ct}");
    }
    // 415 comes before authentication, 413 (declared length) too.
    let nobody = Key::derived("NOBODY", "k1");
    assert_eq!(server.post(&c, &nobody, "text/plain", "[]").await.status, 415);
    assert_eq!(server.post(&c, &nobody, JSON, &big).await.status, 413);
    assert_eq!(stored(&server.db().await, None).await, 0);
}

#[tokio::test]
async fn malformed_bodies_are_400_after_authentication() {
    let (_dir, server) = started("");
    let (sup, c) = (vector_supplier(), server.client());
    let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
    for body in ["not json", "\u{feff}[]", "42", "\"x\"", "[1,", deep.as_str(), ""] {
        let reply = server.post(&c, &sup, JSON, body).await;
        assert_eq!((reply.status, reply.error()), (400, "malformed"), "{body:?}");
        assert!(!reply.body["detail"].as_str().unwrap().is_empty());
    }
    let nobody = Key::derived("NOBODY", "k1");
    assert_eq!(server.post(&c, &nobody, JSON, "not json").await.status, 401);
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let (_dir, server) = started("http.rate_limit_per_second = 0.5\nhttp.rate_limit_burst = 2");
    let (dev, sup, c) = (vector_device(), vector_supplier(), server.client());
    assert_eq!(server.post(&c, &sup, JSON, "[]").await.status, 200);
    assert_eq!(server.post(&c, &sup, JSON, "[]").await.status, 200);
    let reply = server.post(&c, &sup, JSON, &dev.envelope(&record("TRK-0001", 1))).await;
    assert_eq!((reply.status, reply.error()), (429, "rate_limited"));
    let wait: u64 = reply.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Another key has its own budget.
    assert_eq!(server.post_record(&c, &dev, 1).await.counts(), (1, 0));
    assert_eq!(stored(&server.db().await, None).await, 1);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let (_dir, server) = started("");
    let c = server.client();
    let r = c.get(server.url("/v1/records")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = c.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "not_found");
}

#[tokio::test]
async fn http1_and_http2_are_both_served() {
    let (_dir, server) = started("");
    let (dev, sup) = (vector_device(), vector_supplier());
    let h2 = server.client();
    let resp = h2.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let h1 = reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(server.dir.join("data/tls/dev-cert.pem")).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let resp = h1.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(
        server
            .post(&h1, &sup, JSON, &dev.envelope(&record("TRK-0001", 1)))
            .await
            .counts(),
        (1, 0)
    );
}

trackgate_e2e::on_both_backends!(
    single_envelope_array_and_ndjson_are_stored,
    duplicates_are_counted_not_stored_twice,
    a_changed_resend_is_a_conflict_and_the_stored_record_is_kept,
    a_mixed_batch_is_answered_per_index_and_the_good_records_are_stored,
    unknown_revoked_and_wrong_keys_are_unauthorized_alike,
    a_device_key_carries_only_its_own_records,
    key_rotation_and_a_revoked_kid,
);
