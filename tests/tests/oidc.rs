//! Operator tokens from an OpenID provider over real TLS: RS256 and ES256 ID tokens accepted;
//! bad signature, wrong `aud`, wrong `iss`, expired, not yet valid, unknown `kid` and `alg: none`
//! all refused with 401; an unknown `kid` refetches the JWKS exactly once, and a key published in
//! a rotation is picked up that way.

use serde_json::{Value, json};
use trackgate_e2e::idp::{Idp, SigningKey};
use trackgate_e2e::op::RealOp;
use trackgate_e2e::{Server, now_ms};

fn claims(iss: &str, extra: Value) -> Value {
    let now = now_ms() / 1000;
    let mut c = json!({"iss": iss, "aud": "trackgate-test", "sub": "user-1", "email": "ann@idp.example",
                       "groups": ["g-1"], "tid": "tenant-1", "iat": now, "nbf": now, "exp": now + 600});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

/// Organization `acme` with device `d-1`, seen by viewer group `g` whose members carry the
/// identity-provider group `idp_group`.
fn seed(s: &Server, idp_group: &str) {
    s.ok(&["org", "add", "acme", "--name", "Acme"], None);
    s.ok(&["device", "add", "d-1"], None);
    s.ok(&["device", "assign", "d-1", "--org", "acme"], None);
    let args = [
        "user-group",
        "add",
        "--org",
        "acme",
        "g",
        "--name",
        "G",
        "--role",
        "viewer",
    ];
    let mut args = args.to_vec();
    args.extend(["--idp-group", idp_group]);
    s.ok(&args, None);
}

#[tokio::test]
async fn id_tokens_from_a_provider_are_verified_against_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = SigningKey::rs256(dir.path(), "rsa-1");
    let ec = SigningKey::es256("ec-1");
    let idp = Idp::start(dir.path(), &[&rsa, &ec]).await;
    let extra = format!(
        "auth.jwks_min_refresh_secs = 0\n[[auth.issuers]]\nissuer = {:?}\naudience = \"trackgate-test\"\nca = {:?}\nplatform_admins = [\"root@idp.example\"]\n",
        idp.issuer, idp.ca
    );
    let s = Server::start_in(&dir.path().join("tg"), &extra).unwrap();
    seed(&s, "g-1");
    let c = s.client();
    let call = |token: String| {
        let req = c.get(s.url("/v1/devices")).bearer_auth(token);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };

    for key in [&rsa, &ec] {
        let (status, body) = call(key.sign(&claims(&idp.issuer, json!({})))).await;
        assert_eq!(status, 200, "{:?}: {body}", key.alg);
        assert_eq!(body["devices"][0]["id"], "d-1", "the groups claim admitted the user");
    }
    let fetched = idp.jwks_fetches();
    assert!(fetched >= 1, "the keys came from the provider's JWKS");
    // The map page may reach the issuer and the token endpoint its discovery named.
    let page = c.get(s.url("/")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    let connect = format!("connect-src 'self' {} https://tokens.idp.example;", idp.issuer);
    assert!(csp.contains(&connect), "{csp}");

    let other = SigningKey::es256("ec-1");
    let now = now_ms() / 1000;
    let cases = [
        (
            "bad signature",
            other.sign(&claims(&idp.issuer, json!({}))),
            "signature",
        ),
        (
            "wrong aud",
            ec.sign(&claims(&idp.issuer, json!({"aud": "another-app"}))),
            "aud",
        ),
        (
            "wrong iss",
            ec.sign(&claims("https://evil.example", json!({}))),
            "issuer",
        ),
        (
            "expired",
            rsa.sign(&claims(&idp.issuer, json!({"exp": now - 3600}))),
            "expired",
        ),
        (
            "not yet valid",
            rsa.sign(&claims(&idp.issuer, json!({"nbf": now + 3600}))),
            "not valid yet",
        ),
    ];
    for (name, token, detail) in cases {
        let (status, body) = call(token).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(detail), "{name}: {body}");
    }
    assert_eq!(idp.jwks_fetches(), fetched, "known kids never refetch");

    // alg none: header and payload, no signature.
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims(&idp.issuer, json!({})))
    );
    assert_eq!(call(none).await.0, 401);

    // An unknown kid: one refetch, then refused.
    let stranger = SigningKey::es256("ec-unknown");
    let (status, body) = call(stranger.sign(&claims(&idp.issuer, json!({})))).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("signing key"), "{body}");
    assert_eq!(
        idp.jwks_fetches(),
        fetched + 1,
        "exactly one refetch for an unknown kid"
    );

    // A rotation: the provider publishes a new key; the first token naming it fetches it.
    let next = SigningKey::rs256(dir.path(), "rsa-2");
    idp.add_key(&next);
    let (status, body) = call(next.sign(&claims(&idp.issuer, json!({})))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(idp.jwks_fetches(), fetched + 2);

    // Who the token names, and a platform administrator by this issuer's list.
    let me = c
        .get(s.url("/v1/me"))
        .bearer_auth(ec.sign(&claims(&idp.issuer, json!({"email": "Root@IdP.example", "groups": []}))))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(me["issuer"], idp.issuer);
    assert_eq!(me["platform_admin"], true, "{me}");
    // Dev tokens are still trusted in dev mode, alongside the provider.
    let dev = s.ok(&["dev-token", "--email", "x@idp.example", "--groups", "g-1"], None);
    assert_eq!(call(dev.trim().to_owned()).await.0, 200);
}

#[test]
fn production_refuses_to_start_with_dev_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        "mode = \"production\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[auth]\ndev_tokens = true\n",
    )
    .unwrap();
    let out = std::process::Command::new(trackgate_e2e::binary())
        .args(["--config"])
        .arg(&config)
        .arg("serve")
        .env("TRACKGATE_MASTER_KEY", "11".repeat(32))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.dev_tokens"), "{err}");
}

/// A real OpenID provider (oidc-provider from npm, `tests/oidc/op.mjs`): a scripted sign-in
/// through its pages gets an ID token, and trackgate accepts it, matching the user's groups.
#[tokio::test]
async fn an_id_token_from_a_real_openid_provider_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let op = RealOp::start(&dir.path().join("op"), None);
    let (issuer, cert_path) = (op.issuer.clone(), op.ca.clone());
    let id_token = op.login("ann");

    let extra = format!("[[auth.issuers]]\nissuer = {issuer:?}\naudience = \"trackgate\"\nca = {cert_path:?}\n");
    let s = Server::start_in(&dir.path().join("tg"), &extra).unwrap();
    seed(&s, "op-group");
    let c = s.client();
    let get = |path: &str| {
        let req = c.get(s.url(path)).bearer_auth(&id_token);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let me = get("/v1/me").await;
    assert_eq!(me["issuer"], issuer, "{me}");
    assert_eq!(me["email"], "ann@op.example");
    assert_eq!(me["memberships"][0]["user_group_id"], "g");
    let devices = get("/v1/devices").await;
    assert_eq!(devices["devices"][0]["id"], "d-1", "{devices}");
    // The same token with its payload altered is refused.
    let mut parts: Vec<String> = id_token.split('.').map(str::to_owned).collect();
    parts[2] = parts[2].chars().rev().collect();
    let forged = parts.join(".");
    let r = c.get(s.url("/v1/devices")).bearer_auth(forged).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

/// Every admin change needs a recent sign-in at the provider (`auth_time` within
/// `auth.reauth_max_age_secs`): a token from a sign-in an hour ago gets 401 with RFC 9470's
/// challenge naming the reason; the same user, freshly signed in through the real provider,
/// makes the change.
#[tokio::test]
async fn an_admin_change_needs_a_recent_sign_in_at_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let op = RealOp::start(&dir.path().join("op"), None);
    let (issuer, cert_path) = (op.issuer.clone(), op.ca.clone());
    let extra = format!(
        "auth.reauth_max_age_secs = 300\n[[auth.issuers]]\nissuer = {issuer:?}\naudience = \"trackgate\"\nca = {cert_path:?}\n"
    );
    let s = Server::start_in(&dir.path().join("tg"), &extra).unwrap();
    s.ok(&["org", "add", "acme", "--name", "Acme"], None);
    s.add_user_group("acme", "admins", "admin", "--email", "ann@op.example");
    let c = s.client();
    let change = |token: String| {
        let req = c
            .put(s.url("/v1/admin/orgs/acme/retention"))
            .bearer_auth(token)
            .json(&json!({"positions_days": 30}));
        async move { req.send().await.unwrap() }
    };
    // Signed in an hour ago (a dev token of the same user says so).
    let stale = s.dev_token(&["--email", "ann@op.example", "--auth-age-secs", "3600"]);
    let r = change(stale).await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains(r#"error="insufficient_user_authentication""#) && challenge.contains("max_age=300"),
        "{challenge}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_user_authentication");
    assert!(
        body["detail"].as_str().unwrap().contains("within the last 300 seconds"),
        "{body}"
    );
    assert!(
        s.ok(&["org", "list"], None)
            .contains(r#""positions_retention_days":null"#)
    );

    // A fresh sign-in through the real provider.
    let fresh = op.login("ann");
    let r = change(fresh).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert!(
        s.ok(&["org", "list"], None)
            .contains(r#""positions_retention_days":30"#)
    );
}
