//! Token checks against the dev key, with tokens built by hand where a check needs a bad one.

use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

fn setup() -> (tempfile::TempDir, DevKey, Authenticator) {
    let dir = tempfile::tempdir().unwrap();
    let key = DevKey::ensure(dir.path()).unwrap();
    let cfg = config::RawAuth::default().validate(false).unwrap();
    let auth = Authenticator::new(&cfg, Some(&key)).unwrap();
    (dir, key, auth)
}

fn sign(key: &DevKey, claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some("dev".into());
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn good(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "u1", "email": "Ann@Acme.example",
                       "iat": now(), "nbf": now(), "exp": now() + 600});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

#[tokio::test]
async fn a_minted_dev_token_names_its_holder() {
    let (_d, key, auth) = setup();
    let t = key
        .mint(&dev::DevClaims {
            email: "ann@acme.example".into(),
            groups: vec!["g1".into(), "g2".into()],
            tenant: Some("t1".into()),
            platform_admin: false,
            ttl_secs: 60,
            auth_age_secs: 0,
        })
        .unwrap();
    let id = auth.verify(&t).await.unwrap();
    assert_eq!(id.issuer, DEV_ISSUER);
    assert_eq!(id.email.as_deref(), Some("ann@acme.example"));
    assert_eq!(id.groups, ["g1", "g2"]);
    assert_eq!(id.tenant.as_deref(), Some("t1"));
    assert!(!id.platform_admin);
    assert_eq!(id.actor(), "oidc:trackgate-dev#ann@acme.example");
}

#[tokio::test]
async fn each_bad_token_is_refused_with_its_reason() {
    let (_d, key, auth) = setup();
    assert_eq!(
        auth.verify(&sign(&key, good(json!({}))))
            .await
            .unwrap()
            .email
            .as_deref(),
        Some("ann@acme.example")
    );
    let cases = [
        (good(json!({"aud": "someone-else"})), AuthError::Audience),
        (good(json!({"exp": now() - 3600})), AuthError::Expired),
        (good(json!({"nbf": now() + 3600})), AuthError::NotYetValid),
        (
            good(json!({"iss": "https://elsewhere.example"})),
            AuthError::UntrustedIssuer,
        ),
        (
            good(json!({"sub": ""})),
            AuthError::Claims("`sub` must be a non-empty string"),
        ),
    ];
    for (claims, want) in cases {
        assert_eq!(
            auth.verify(&sign(&key, claims.clone())).await.unwrap_err(),
            want,
            "{claims}"
        );
    }
    // Within the leeway is fine.
    assert!(auth.verify(&sign(&key, good(json!({"exp": now() - 30})))).await.is_ok());

    // Signed by another key.
    let other_dir = tempfile::tempdir().unwrap();
    let other = DevKey::ensure(other_dir.path()).unwrap();
    assert_eq!(
        auth.verify(&sign(&other, good(json!({})))).await.unwrap_err(),
        AuthError::Signature
    );

    // A payload altered after signing.
    let t = sign(&key, good(json!({})));
    let parts: Vec<&str> = t.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(good(json!({"email": "boss@acme.example"})).to_string());
    let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
    assert_eq!(auth.verify(&tampered).await.unwrap_err(), AuthError::Signature);

    // alg none, and HS256 (a public key used as an HMAC secret).
    for alg in ["none", "HS256"] {
        let h = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
        let p = URL_SAFE_NO_PAD.encode(good(json!({})).to_string());
        let err = auth.verify(&format!("{h}.{p}.")).await.unwrap_err();
        assert!(
            matches!(err, AuthError::Malformed | AuthError::Algorithm),
            "{alg}: {err:?}"
        );
    }
    assert_eq!(auth.verify("not a token").await.unwrap_err(), AuthError::Malformed);
}

#[tokio::test]
async fn dev_tokens_are_refused_when_dev_mode_is_off() {
    let (_d, key, _) = setup();
    let cfg = config::RawAuth {
        dev_tokens: Some(false),
        ..Default::default()
    }
    .validate(false)
    .unwrap();
    let auth = Authenticator::new(&cfg, None).unwrap();
    let t = sign(&key, good(json!({})));
    assert_eq!(auth.verify(&t).await.unwrap_err(), AuthError::UntrustedIssuer);
}

#[test]
fn production_refuses_dev_tokens_and_issuers_must_be_https() {
    let e = config::RawAuth {
        dev_tokens: Some(true),
        ..Default::default()
    }
    .validate(true)
    .unwrap_err();
    assert!(e.to_string().contains("auth.dev_tokens"), "{e}");
    assert!(!config::RawAuth::default().validate(true).unwrap().dev_tokens);
    let raw = |issuer: &str| config::RawAuth {
        issuers: vec![config::RawIssuer {
            issuer: Some(issuer.into()),
            audience: Some("client".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = raw("http://idp.example").validate(true).unwrap_err().to_string();
    assert!(e.contains("auth.issuers[0].issuer") && e.contains("https"), "{e}");
    assert!(raw("https://login.microsoftonline.com/t/v2.0").validate(true).is_ok());
}

#[test]
fn bearer_header_parsing() {
    assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
    assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
    assert_eq!(bearer(Some("Basic abc")), Err(AuthError::Missing));
    assert_eq!(bearer(Some("Bearer ")), Err(AuthError::Missing));
    assert_eq!(bearer(None), Err(AuthError::Missing));
}

#[test]
fn the_fresh_sign_in_window_is_taken_as_given_within_its_bounds() {
    let age = |secs: u64| {
        config::RawAuth {
            reauth_max_age_secs: Some(secs),
            ..Default::default()
        }
        .validate(false)
    };
    assert_eq!(age(10).unwrap().reauth_max_age, Duration::from_secs(10));
    assert_eq!(
        config::RawAuth::default().validate(false).unwrap().reauth_max_age,
        Duration::from_secs(900)
    );
    for bad in [0, 9, 86_401] {
        let e = age(bad).unwrap_err().to_string();
        assert!(
            e.contains("auth.reauth_max_age_secs") && e.contains(&bad.to_string()),
            "{e}"
        );
    }
}
