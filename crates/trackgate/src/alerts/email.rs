//! E-mail alerts over SMTP (lettre), always encrypted: STARTTLS required (never a plaintext
//! fallback) or TLS from the first byte, TLS 1.2+, the server's certificate verified against the
//! system's roots and, when given, `alerts.smtp.ca`. A message says only that something of a kind
//! happened in the recipient's organization and links to the map page: no position, device,
//! shipment or geofence (questionnaires forbid sensitive data in notifications), so a mailbox
//! learns nothing an operator would have to sign in to see. Each recipient gets at most
//! `alerts.email_per_recipient_per_hour`; the rest are suppressed (recorded, not sent).

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters, TlsVersion};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::path::PathBuf;
use std::time::Duration;
use trackgate_store::alerts::Delivery;

/// How the SMTP server is reached (`[alerts.smtp]`).
#[derive(Clone, PartialEq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    /// TLS from the first byte (port 465) rather than STARTTLS (port 587).
    pub implicit_tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender: `trackgate <alerts@example.com>`.
    pub from: String,
    /// A CA trusted for the server beside the system's roots.
    pub ca: Option<PathBuf>,
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("implicit_tls", &self.implicit_tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("ca", &self.ca)
            .finish()
    }
}

/// Sends alert e-mails.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    page_url: String,
}

/// Is `address` one an alert may be sent to? (`local@domain`, no spaces or angle brackets: a
/// bare address, not a display name.)
pub fn valid_address(address: &str) -> bool {
    address.len() <= 254 && !address.contains(['<', '>', ' ', ',', ';']) && address.parse::<lettre::Address>().is_ok()
}

impl Mailer {
    pub fn new(s: &SmtpSettings, page_url: &str) -> anyhow::Result<Mailer> {
        let mut tls = TlsParameters::builder(s.host.clone()).set_min_tls_version(TlsVersion::Tlsv12);
        if let Some(ca) = &s.ca {
            let pem =
                std::fs::read(ca).map_err(|e| anyhow::anyhow!("reading `alerts.smtp.ca` {}: {e}", ca.display()))?;
            tls = tls.add_root_certificate(
                Certificate::from_pem(&pem).map_err(|e| anyhow::anyhow!("`alerts.smtp.ca` {}: {e}", ca.display()))?,
            );
        }
        let tls = tls.build_rustls()?;
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
            .port(s.port)
            .timeout(Some(s.timeout))
            .tls(if s.implicit_tls {
                Tls::Wrapper(tls)
            } else {
                Tls::Required(tls)
            });
        if let (Some(user), Some(password)) = (&s.username, &s.password) {
            b = b.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Mailer {
            transport: b.build(),
            from: s
                .from
                .parse()
                .map_err(|e| anyhow::anyhow!("`alerts.smtp.from` {:?} is not a mailbox: {e}", s.from))?,
            page_url: page_url.to_owned(),
        })
    }

    pub async fn send(&self, d: &Delivery) -> Result<(), String> {
        let to: Mailbox = d
            .target
            .parse()
            .map_err(|e| format!("the rule's address does not parse: {e}"))?;
        let message = message(&self.from, to, d, &self.page_url).map_err(|e| format!("building the message: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}

/// What happened, in words that name nothing: no device, shipment, place or value.
pub fn what_happened(kind: &str) -> &'static str {
    match kind {
        "enter" => "a shipment arrived in one of your geofences",
        "exit" => "a shipment left one of your geofences",
        "jump" => "a tracker reported an implausible position",
        "battery_low" => "a tracker's battery is running low",
        "temperature_out" => "a shipment's temperature left its range",
        "stale" => "a tracker stopped reporting",
        _ => "something happened to one of your shipments",
    }
}

/// The message of delivery `d` to `to`.
pub fn message(from: &Mailbox, to: Mailbox, d: &Delivery, page_url: &str) -> Result<Message, lettre::error::Error> {
    let text = format!(
        "In your organization {org}, {what}.\n\n\
         Sign in to see which and where: {page_url}\n\n\
         You get this e-mail because an administrator of {org} subscribed this address to \
         trackgate's alerts (rule {rule}). It says nothing more on purpose: the details are \
         behind your sign-in.\n",
        org = d.org_name,
        what = what_happened(&d.event.kind),
        rule = d.rule_id,
    );
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(format!("trackgate: {}", what_happened(&d.event.kind)))
        .header(ContentType::TEXT_PLAIN)
        .body(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trackgate_store::StoredEvent;
    use trackgate_store::alerts::Channel;

    fn delivery(kind: &str) -> Delivery {
        let mut detail = serde_json::Map::new();
        detail.insert("geofence".into(), "Siemens-Werk-Amberg".into());
        Delivery {
            id: 7,
            org_id: "acme".into(),
            org_name: "Acme Packaging".into(),
            rule_id: "ops-mail".into(),
            channel: Channel::Email,
            target: "ops@acme.example".into(),
            secret: None,
            attempts: 0,
            created_ms: 0,
            event: StoredEvent {
                id: 1,
                org_id: "acme".into(),
                device_id: "TRK-SECRET-0042".into(),
                ts: 1_700_000_000_000,
                seq: 9,
                kind: kind.into(),
                detail,
                lat: Some(53.123456),
                lon: Some(9.654321),
                created_ms: 0,
            },
        }
    }

    #[test]
    fn a_message_names_the_kind_and_links_to_the_page_and_nothing_else() {
        let from: Mailbox = "trackgate <alerts@tg.example>".parse().unwrap();
        for kind in crate::events::KINDS {
            let d = delivery(kind);
            let m = message(&from, d.target.parse().unwrap(), &d, "https://tg.example/").unwrap();
            let text = String::from_utf8(m.formatted()).unwrap();
            assert!(text.contains("https://tg.example/"), "{text}");
            assert!(text.contains(what_happened(kind)), "{text}");
            for leak in ["TRK-SECRET-0042", "53.12", "9.65", "Siemens", "1700000000"] {
                assert!(!text.contains(leak), "{leak} in {text}");
            }
        }
    }

    #[test]
    fn addresses_are_bare() {
        assert!(valid_address("ops@acme.example"));
        for bad in ["ops", "Ops <ops@acme.example>", "a@b.example, c@d.example", "ops@"] {
            assert!(!valid_address(bad), "{bad}");
        }
    }
}
