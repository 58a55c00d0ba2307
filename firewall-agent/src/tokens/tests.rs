use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;

use super::jwks::FetchFuture;
use super::*;

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "orders-api";
const NOW: f64 = 1_800_000_000.0;

/// A key source that counts fetches and can be switched to fail.
#[derive(Debug)]
struct CountingSource {
    keys: KeySet,
    fetches: AtomicUsize,
    failing: AtomicBool,
}

impl KeySource for CountingSource {
    fn fetch(&self) -> FetchFuture<'_> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = if self.failing.load(Ordering::Relaxed) {
            Err(JwksError::Timeout {
                url: "test source".into(),
            })
        } else {
            Ok(self.keys.clone())
        };
        Box::pin(std::future::ready(result))
    }
}

/// Revokes the `jti` values it holds; fails when `broken` is set.
#[derive(Debug, Default)]
struct RevokedList {
    revoked: Mutex<Vec<String>>,
    broken: AtomicBool,
}

impl RevocationCheck for RevokedList {
    fn is_revoked(&self, issuer: &str, jti: &str) -> Result<bool, RevocationError> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(RevocationError {
                issuer: issuer.into(),
                problem: "store unavailable".into(),
            });
        }
        Ok(self
            .revoked
            .lock()
            .map(|revoked| revoked.iter().any(|id| id == jti))
            .unwrap_or(true))
    }
}

struct Fixture {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    source: Arc<CountingSource>,
    revoked: Arc<RevokedList>,
    verifier: TokenVerifier,
}

fn issuer_config() -> IssuerConfig {
    IssuerConfig {
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
        jwks_url: "http://127.0.0.1:9/unused".into(),
        algorithms: vec![Algorithm::ES256],
        accept_typ_jwt: false,
        leeway_seconds: 60,
        jwks_ttl_seconds: 300,
        jwks_cooldown_seconds: 30,
    }
}

impl Fixture {
    fn new(cache_entries: usize) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate a key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("load the key");
        let keys = KeySet::from_keys([(
            "k1".to_owned(),
            VerifyingKey::p256(key.public_key().as_ref().to_vec()),
        )]);
        let source = Arc::new(CountingSource {
            keys,
            fetches: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        });
        let revoked = Arc::new(RevokedList::default());
        let config = TokensConfig {
            cache_entries,
            issuers: vec![issuer_config()],
            ..TokensConfig::default()
        };
        let sources = HashMap::from([(
            ISSUER.to_owned(),
            Arc::clone(&source) as Arc<dyn KeySource>,
        )]);
        let verifier = TokenVerifier::new(
            &config,
            sources,
            Arc::clone(&revoked) as Arc<dyn RevocationCheck>,
            TokenMetrics::default(),
        )
        .expect("build the verifier");
        Self {
            key,
            rng,
            source,
            revoked,
            verifier,
        }
    }

    fn mint(&self, jti: &str, exp: f64) -> String {
        let header = json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"});
        let claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "scope": "a b",
            "iat": NOW, "exp": exp, "jti": jti,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&self.rng, input.as_bytes())
            .expect("sign the token");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

#[tokio::test]
async fn repeated_token_served_from_cache() {
    let fixture = Fixture::new(10);
    let token = fixture.mint("t1", NOW + 600.0);

    let first = fixture.verifier.verify_at(&token, NOW).await;
    let second = fixture.verifier.verify_at(&token, NOW + 1.0).await;

    assert!(first.is_ok(), "{first:?}");
    assert_eq!(first, second);
    assert_eq!(fixture.verifier.metrics().cache_hits(), 1);
}

#[tokio::test]
async fn cached_token_expires() {
    let fixture = Fixture::new(10);
    let token = fixture.mint("t1", NOW + 10.0);
    assert!(fixture.verifier.verify_at(&token, NOW).await.is_ok());

    let later = fixture.verifier.verify_at(&token, NOW + 10.0 + 61.0).await;

    assert_eq!(later, Err(TokenError::Expired));
    assert_eq!(fixture.verifier.cached_tokens(), 0);
}

#[tokio::test]
async fn cached_token_revoked() {
    let fixture = Fixture::new(10);
    let token = fixture.mint("t1", NOW + 600.0);
    assert!(fixture.verifier.verify_at(&token, NOW).await.is_ok());
    fixture
        .revoked
        .revoked
        .lock()
        .expect("lock the list")
        .push("t1".into());

    let after = fixture.verifier.verify_at(&token, NOW + 1.0).await;

    assert_eq!(after, Err(TokenError::Revoked));
}

#[tokio::test]
async fn revoked_token_never_cached() {
    let fixture = Fixture::new(10);
    fixture
        .revoked
        .revoked
        .lock()
        .expect("lock the list")
        .push("t1".into());
    let token = fixture.mint("t1", NOW + 600.0);

    let result = fixture.verifier.verify_at(&token, NOW).await;

    assert_eq!(result, Err(TokenError::Revoked));
    assert_eq!(fixture.verifier.cached_tokens(), 0);
}

#[tokio::test]
async fn failing_revocation_check_rejects() {
    let fixture = Fixture::new(10);
    fixture.revoked.broken.store(true, Ordering::Relaxed);
    let token = fixture.mint("t1", NOW + 600.0);

    let result = fixture.verifier.verify_at(&token, NOW).await;

    assert_eq!(result, Err(TokenError::RevocationUnavailable));
}

#[tokio::test]
async fn cache_holds_at_most_capacity() {
    let fixture = Fixture::new(3);
    for index in 0..10 {
        let token = fixture.mint(&format!("t{index}"), NOW + 600.0);
        assert!(fixture.verifier.verify_at(&token, NOW).await.is_ok());
    }

    assert_eq!(fixture.verifier.cached_tokens(), 3);
}

#[tokio::test]
async fn zero_capacity_disables_cache() {
    let fixture = Fixture::new(0);
    let token = fixture.mint("t1", NOW + 600.0);

    assert!(fixture.verifier.verify_at(&token, NOW).await.is_ok());
    assert!(fixture.verifier.verify_at(&token, NOW).await.is_ok());

    assert_eq!(fixture.verifier.cached_tokens(), 0);
    assert_eq!(fixture.verifier.metrics().cache_hits(), 0);
}

#[tokio::test]
async fn failed_refresh_keeps_keys_and_waits_cooldown() {
    let fixture = Fixture::new(0);
    let token = fixture.mint("t1", NOW + 600.0);
    assert!(fixture.verifier.verify_at(&token, NOW).await.is_ok());
    fixture.source.failing.store(true, Ordering::Relaxed);
    let issuer = fixture
        .verifier
        .issuers
        .get(ISSUER)
        .expect("the issuer is configured");

    // Past the time to live, the refresh fails; the next one waits for the cooldown.
    let after_ttl = std::time::Instant::now() + Duration::from_secs(301);
    let next = issuer.keys.refresh_if_due(after_ttl).await;

    assert!(next >= std::time::Instant::now() + Duration::from_secs(29));
    assert_eq!(fixture.source.fetches.load(Ordering::Relaxed), 2);
    assert!(fixture.verifier.verify_at(&token, NOW).await.is_ok());
}

#[tokio::test]
async fn missing_keys_fetch_limited_by_cooldown() {
    let fixture = Fixture::new(0);
    fixture.source.failing.store(true, Ordering::Relaxed);
    let token = fixture.mint("t1", NOW + 600.0);

    for _ in 0..5 {
        let result = fixture.verifier.verify_at(&token, NOW).await;
        assert_eq!(result, Err(TokenError::KeysUnavailable));
    }

    assert_eq!(fixture.source.fetches.load(Ordering::Relaxed), 1);
}

#[test]
fn config_rejects_unknown_route_issuer() {
    let config = TokensConfig {
        issuers: vec![issuer_config()],
        ..TokensConfig::default()
    };
    let auth = RouteAuthConfig {
        required: true,
        scopes: vec!["orders:read".into()],
        issuers: vec!["https://elsewhere.example".into()],
    };

    let result = config.validate_route(&auth);

    assert_eq!(result.map_err(|(key, _)| key), Err("routes.auth.issuers"));
}

#[test]
fn config_rejects_invalid_scope_name() {
    let config = TokensConfig {
        issuers: vec![issuer_config()],
        ..TokensConfig::default()
    };
    let auth = RouteAuthConfig {
        required: true,
        scopes: vec!["orders read".into()],
        issuers: Vec::new(),
    };

    assert_eq!(
        config.validate_route(&auth).map_err(|(key, _)| key),
        Err("routes.auth.scopes")
    );
}

#[test]
fn config_rejects_bad_issuers() {
    let cases: [(fn(&mut IssuerConfig), &str); 5] = [
        (|issuer| issuer.jwks_url = "file:///etc/jwks.json".into(), "tokens.issuers.jwks_url"),
        (|issuer| issuer.audiences.clear(), "tokens.issuers.audiences"),
        (|issuer| issuer.algorithms.clear(), "tokens.issuers.algorithms"),
        (|issuer| issuer.leeway_seconds = 3600, "tokens.issuers.leeway_seconds"),
        (|issuer| issuer.jwks_ttl_seconds = 0, "tokens.issuers.jwks_ttl_seconds"),
    ];
    for (adjust, expected) in cases {
        let mut issuer = issuer_config();
        adjust(&mut issuer);
        let config = TokensConfig {
            issuers: vec![issuer],
            ..TokensConfig::default()
        };

        assert_eq!(config.validate().map_err(|(key, _)| key), Err(expected));
    }
}

#[test]
fn config_rejects_repeated_issuer() {
    let config = TokensConfig {
        issuers: vec![issuer_config(), issuer_config()],
        ..TokensConfig::default()
    };

    assert_eq!(
        config.validate().map_err(|(key, _)| key),
        Err("tokens.issuers.issuer")
    );
}

#[test]
fn config_parses_from_toml() {
    let text = r#"
default_required = true
max_token_bytes = 4096

[[issuers]]
issuer = "https://issuer.example"
audiences = ["orders-api"]
jwks_url = "https://issuer.example/jwks.json"
algorithms = ["ES256", "EdDSA"]
accept_typ_jwt = true
"#;

    let config: TokensConfig = toml::from_str(text).expect("parse the section");

    assert!(config.default_required);
    assert_eq!(config.max_token_bytes, 4096);
    assert_eq!(config.issuers[0].algorithms, [Algorithm::ES256, Algorithm::EdDSA]);
    assert!(config.issuers[0].accept_typ_jwt);
    assert_eq!(config.issuers[0].leeway_seconds, config::DEFAULT_LEEWAY_SECONDS);
    assert!(config.validate().is_ok());
}

#[test]
fn config_rejects_hmac_algorithm() {
    let text = r#"
[[issuers]]
issuer = "https://issuer.example"
audiences = ["orders-api"]
jwks_url = "https://issuer.example/jwks.json"
algorithms = ["HS256"]
"#;

    assert!(toml::from_str::<TokensConfig>(text).is_err());
}

#[test]
fn jwks_skips_unusable_keys() {
    let document = json!({ "keys": [
        { "kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA" },
        { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
        { "kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
          "x": URL_SAFE_NO_PAD.encode([1; 32]), "y": URL_SAFE_NO_PAD.encode([2; 32]) },
        { "kty": "EC", "crv": "P-256", "kid": "private", "d": "AA",
          "x": URL_SAFE_NO_PAD.encode([1; 32]), "y": URL_SAFE_NO_PAD.encode([2; 32]) },
        { "kty": "EC", "crv": "P-256", "kid": "rs-alg", "alg": "RS256",
          "x": URL_SAFE_NO_PAD.encode([1; 32]), "y": URL_SAFE_NO_PAD.encode([2; 32]) },
        { "kty": "EC", "crv": "P-256", "kid": "good",
          "x": URL_SAFE_NO_PAD.encode([1; 32]), "y": URL_SAFE_NO_PAD.encode([2; 32]) },
    ]});

    let keys = KeySet::parse(document.to_string().as_bytes()).expect("one key is usable");

    assert_eq!(keys.len(), 1);
    assert!(keys.get("good").is_some_and(|key| key.permits(Algorithm::ES256)));
}

#[test]
fn jwks_drops_repeated_kid() {
    let key = |x: u8| {
        json!({ "kty": "EC", "crv": "P-256", "kid": "same",
          "x": URL_SAFE_NO_PAD.encode([x; 32]), "y": URL_SAFE_NO_PAD.encode([2; 32]) })
    };
    let document = json!({ "keys": [key(1), key(3)] });

    let result = KeySet::parse(document.to_string().as_bytes());

    assert!(result.is_err(), "{result:?}");
}

#[test]
fn jwks_without_keys_array_rejected() {
    for document in [&b"{}"[..], b"[]", b"{\"keys\": {}}", b"not json"] {
        assert!(KeySet::parse(document).is_err());
    }
}

#[test]
fn scope_names_follow_rfc_6749() {
    assert!(config::is_scope_token("orders:read"));
    assert!(config::is_scope_token("https://api.example/orders.read"));
    assert!(!config::is_scope_token(""));
    assert!(!config::is_scope_token("a b"));
    assert!(!config::is_scope_token("quote\""));
    assert!(!config::is_scope_token("back\\slash"));
}
