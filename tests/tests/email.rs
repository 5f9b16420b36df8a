//! E-mail alerts against the real binary and a real SMTP server (aiosmtpd, its own test CA):
//! messages go over STARTTLS or TLS from the first byte, say what kind of thing happened and
//! link to the page, and carry no coordinates, device id, shipment label or geofence name; each
//! recipient gets at most its hourly number, the rest are suppressed and say so in the API; an
//! e-mail rule without an SMTP server configured is refused.

use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use trackgate_e2e::receivers::SmtpReceiver;
use trackgate_e2e::*;

const QUICK: &str = "events.settle_ms = 300\nevents.interval_ms = 100\nalerts.interval_ms = 100\n";

/// acme with an admin, device `EV-SECRET-1` on shipment "Secret Shipment", a geofence "Hidden
/// Depot"; the admin's token.
fn seed(s: &Server) -> String {
    s.ok(&["org", "add", "acme", "--name", "Acme Packaging"], None);
    s.add_user_group("acme", "admins", "admin", "--email", "boss@acme.example");
    s.ok(
        &[
            "geofence",
            "put",
            "--org",
            "acme",
            "hidden",
            "--name",
            "Hidden Depot",
            "--circle",
            "10.0456,53.5123,1000",
        ],
        None,
    );
    s.add_device(&Key::derived("EV-SECRET-1", "k1"), Some("ACME"));
    s.ok(&["device", "assign", "EV-SECRET-1", "--org", "acme"], None);
    s.ok(
        &[
            "device",
            "shipment",
            "EV-SECRET-1",
            "--org",
            "acme",
            "--label",
            "Secret Shipment",
        ],
        None,
    );
    s.dev_token(&["--email", "boss@acme.example"])
}

/// `n` records in and out of the depot, a minute apart: an event each.
async fn events(s: &Server, n: u64) {
    let key = Key::derived("EV-SECRET-1", "k1");
    let t0 = now_ms() - 3_600_000;
    let envelopes: Vec<String> = (1..=n)
        .map(|seq| {
            let lat = if seq % 2 == 1 { 53.5123 } else { 53.5723 };
            key.envelope(&format!(
                r#"{{"dev":"EV-SECRET-1","seq":{seq},"ts":{},"lat":{lat},"lon":10.0456,"bat":47.25}}"#,
                t0 + seq * 60_000
            ))
        })
        .collect();
    assert_eq!(s.post_envelopes(&s.client(), &envelopes).await.counts(), (n, 0));
}

async fn add_rule(s: &Server, token: &str) {
    let (st, b) = s
        .api(
            &s.client(),
            Method::POST,
            "/v1/admin/orgs/acme/alert-rules",
            token,
            Some(json!({"id": "ops-mail", "email": "ops@acme.example"})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["channel"], "email");
    assert!(b["secret"].is_null(), "{b}");
}

fn assert_says_nothing_sensitive(message: &serde_json::Value) {
    assert_eq!(message["tls"], true, "{message}");
    assert_eq!(message["to"], json!(["ops@acme.example"]));
    assert_eq!(message["from"], "alerts@trackgate.example");
    let message_text = message["data"].as_str().unwrap();
    // The body, after the headers (whose Date could hold any digits).
    let text = message_text
        .split_once("\r\n\r\n")
        .or_else(|| message_text.split_once("\n\n"))
        .map_or(message_text, |(_, body)| body);
    assert!(text.contains("Acme Packaging"), "{text}");
    assert!(text.contains("https://localhost:"), "a link to the page: {text}");
    for leak in [
        "EV-SECRET-1",
        "Secret Shipment",
        "Hidden Depot",
        "hidden",
        "53.5",
        "10.04",
        "47.25",
    ] {
        assert!(!text.contains(leak), "{leak:?} is in the message:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_arrive_by_mail_over_starttls_saying_nothing_sensitive_at_most_the_hourly_number() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpReceiver::start(&dir.path().join("smtp"), false);
    let (_tg, s) = started_on(
        Backend::Sqlite,
        &format!(
            "{QUICK}alerts.email_per_recipient_per_hour = 2\n{}",
            smtp.trackgate_settings(false)
        ),
    );
    let boss = seed(&s);
    add_rule(&s, &boss).await;
    events(&s, 4).await;
    let got = smtp.wait_messages(2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    for m in &got {
        assert_says_nothing_sensitive(m);
    }
    assert!(
        got[0]["data"]
            .as_str()
            .unwrap()
            .contains("arrived in one of your geofences")
    );
    assert!(got[1]["data"].as_str().unwrap().contains("left one of your geofences"));
    // The other two are over the recipient's hourly number: suppressed, and the API says so.
    let c = s.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, b) = s
            .api(
                &c,
                Method::GET,
                "/v1/admin/orgs/acme/alert-rules/ops-mail/deliveries",
                &boss,
                None,
            )
            .await;
        let states: Vec<&str> = b["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["state"].as_str().unwrap())
            .collect();
        if states == ["suppressed", "suppressed", "delivered", "delivered"] {
            let reason = b["deliveries"][0]["last_error"].as_str().unwrap();
            assert!(reason.contains("email_per_recipient_per_hour"), "{reason}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{states:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_go_over_tls_from_the_first_byte_and_need_an_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpReceiver::start(&dir.path().join("smtp"), true);
    let (_tg, s) = started_on(Backend::Sqlite, &format!("{QUICK}{}", smtp.trackgate_settings(true)));
    let boss = seed(&s);
    add_rule(&s, &boss).await;
    events(&s, 1).await;
    let got = smtp.wait_messages(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_says_nothing_sensitive(&got[0]);

    // Without `[alerts.smtp]`, an e-mail rule is refused, and so is a bad address.
    let (_tg2, plain) = started_on(Backend::Sqlite, "");
    let boss = seed(&plain);
    let c = plain.client();
    let (st, b) = plain
        .api(
            &c,
            Method::POST,
            "/v1/admin/orgs/acme/alert-rules",
            &boss,
            Some(json!({"id": "m", "email": "ops@acme.example"})),
        )
        .await;
    assert_eq!(st, 400);
    assert!(b["detail"].as_str().unwrap().contains("[alerts.smtp]"), "{b}");
    let (st, b) = s
        .api(
            &s.client(),
            Method::POST,
            "/v1/admin/orgs/acme/alert-rules",
            &seed_token(&s),
            Some(json!({"id": "m2", "email": "Ops <ops@acme.example>"})),
        )
        .await;
    assert_eq!(st, 400);
    assert!(
        b["detail"].as_str().unwrap().contains("is not an e-mail address"),
        "{b}"
    );
}

fn seed_token(s: &Server) -> String {
    s.dev_token(&["--email", "boss@acme.example"])
}
