//! Webhooks: an event POSTed as JSON to the rule's HTTPS URL, signed like an ingest request
//! (PROTOCOL.md §2) so that suppliers' engineers verify it with the code they already have:
//! `X-TG-Timestamp` (Unix seconds) and `X-TG-Signature` = hex HMAC-SHA256(the rule's secret,
//! `"tg1-request\n"` ++ timestamp ++ `"\nPOST\n"` ++ the URL's path ++ `"\n"` ++ body).
//! `X-TG-Delivery` names the delivery: at-least-once means a receiver may see one twice.

use super::destination::{GuardedResolver, webhook_url};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use trackgate_proto::sign::{RequestParts, request_signature};
use trackgate_store::alerts::Delivery;

/// The HTTPS client webhooks are sent with: TLS 1.2+ verified against the system's roots (and
/// `ca`, when given), every connection's addresses checked, no redirects followed.
pub fn client(ca: Option<&std::path::Path>, timeout: Duration, allow_private: bool) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca {
        for cert in crate::tls::read_certs(path)? {
            roots.add(cert)?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .build()?)
}

/// The body a delivery sends.
pub fn body(d: &Delivery) -> String {
    json!({
        "delivery": d.id,
        "rule": d.rule_id,
        "event": d.event,
    })
    .to_string()
}

/// Send one delivery; `Err` says why it did not land.
pub async fn send(client: &reqwest::Client, d: &Delivery, allow_private: bool) -> Result<(), String> {
    let url = webhook_url(&d.target, allow_private)?;
    let secret = d.secret.as_ref().ok_or("the rule has no secret")?;
    let body = body(d);
    let timestamp = (trackgate_store::now_ms() / 1000).to_string();
    let sig = request_signature(
        secret,
        &RequestParts {
            timestamp: &timestamp,
            method: "POST",
            path: url.path(),
            body: body.as_bytes(),
        },
    );
    let answer = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-tg-timestamp", &timestamp)
        .header("x-tg-signature", hex::encode(sig))
        .header("x-tg-webhook", &d.rule_id)
        .header("x-tg-delivery", d.id.to_string())
        .body(body)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = answer.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

/// A send error in words, with its cause (TLS, connection, resolution), never a secret.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "failed".to_owned()
    };
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
