//! Hostile and malformed access tokens against the token verifier, one test per rule, with
//! keys fetched from a JWKS server on loopback that the test starts.

use std::collections::HashMap;
use std::sync::Arc;

use firewall_agent::tokens::{
    Algorithm, IssuerConfig, NoRevocation, TokenError, TokenMetrics, TokenVerifier, TokensConfig,
};
use integration_tests::tokens::{
    ED_KID, ES_KID, JwksServer, PS_KID, RS_KID, TestKeys, b64, claims, header, now,
};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "orders-api";

/// A verifier that trusts one issuer whose JWKS the test serves on loopback.
struct Fixture {
    keys: TestKeys,
    server: JwksServer,
    verifier: TokenVerifier,
}

fn issuer_config(server: &JwksServer) -> IssuerConfig {
    IssuerConfig {
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
        jwks_url: server.url(),
        algorithms: Algorithm::ALL.to_vec(),
        accept_typ_jwt: false,
        leeway_seconds: 60,
        jwks_ttl_seconds: 300,
        jwks_cooldown_seconds: 30,
    }
}

fn verifier_for(issuers: Vec<IssuerConfig>) -> TokenVerifier {
    let config = TokensConfig {
        issuers,
        ..TokensConfig::default()
    };
    TokenVerifier::new(
        &config,
        HashMap::new(),
        Arc::new(NoRevocation),
        TokenMetrics::default(),
    )
    .expect("build the verifier")
}

impl Fixture {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(adjust: impl FnOnce(&mut IssuerConfig)) -> Self {
        let keys = TestKeys::generate();
        let server = JwksServer::start(&keys.jwks());
        let mut issuer = issuer_config(&server);
        adjust(&mut issuer);
        let verifier = verifier_for(vec![issuer]);
        Self {
            keys,
            server,
            verifier,
        }
    }

    fn mint(&self, header: &Value, claims: &Value) -> String {
        self.keys.mint(header, claims)
    }

    async fn check(&self, token: &str) -> Result<(), TokenError> {
        self.verifier.verify(token).await.map(|_| ())
    }
}

fn valid_claims() -> Value {
    claims(ISSUER, AUDIENCE)
}

#[tokio::test]
async fn every_supported_algorithm_accepted() {
    let fixture = Fixture::new();
    for (alg, kid) in [
        ("ES256", ES_KID),
        ("RS256", RS_KID),
        ("PS256", PS_KID),
        ("EdDSA", ED_KID),
    ] {
        let token = fixture.mint(&header(alg, kid), &valid_claims());

        let verified = fixture.verifier.verify(&token).await;

        let verified = verified.unwrap_or_else(|error| panic!("{alg} rejected: {error:?}"));
        assert_eq!(verified.subject.as_deref(), Some("user-42"));
        assert_eq!(verified.client_id.as_deref(), Some("client-7"));
        assert_eq!(verified.scopes, ["orders:read", "orders:write"]);
    }
}

#[tokio::test]
async fn alg_none_rejected() {
    let fixture = Fixture::new();
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": ES_KID, "typ": "at+jwt"}).to_string().as_bytes()),
        b64(valid_claims().to_string().as_bytes())
    );
    // An empty signature segment is malformed already; a non-empty one must still fail on alg.
    let with_junk_signature = format!("{unsigned}AAAA");

    assert_eq!(fixture.check(&unsigned).await, Err(TokenError::Malformed));
    assert_eq!(
        fixture.check(&with_junk_signature).await,
        Err(TokenError::UnsupportedAlgorithm)
    );
    for spelling in ["None", "NONE", "nOnE"] {
        let token = fixture.mint(&header(spelling, ES_KID), &valid_claims());
        let token = format!("{token}AAAA");
        assert_eq!(
            fixture.check(&token).await,
            Err(TokenError::UnsupportedAlgorithm),
            "{spelling}"
        );
    }
}

#[tokio::test]
async fn hs256_with_public_key_as_secret_rejected() {
    let fixture = Fixture::new();
    let jwk = fixture.keys.rs_jwk(RS_KID, Some("RS256")).to_string();
    let header_bytes = header("HS256", RS_KID).to_string();
    let signing_input = format!(
        "{}.{}",
        b64(header_bytes.as_bytes()),
        b64(valid_claims().to_string().as_bytes())
    );
    // The classic confusion: HMAC keyed with the published public key, as the JWK text and as
    // the raw modulus.
    let modulus = fixture.keys.rs_jwk(RS_KID, None)["n"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    for secret in [jwk.as_bytes(), modulus.as_bytes()] {
        let signature = fixture.keys.sign("HS256", signing_input.as_bytes(), secret);
        let token = format!("{signing_input}.{}", b64(&signature));

        assert_eq!(
            fixture.check(&token).await,
            Err(TokenError::UnsupportedAlgorithm)
        );
    }
}

#[tokio::test]
async fn rs256_header_on_ec_key_rejected() {
    let fixture = Fixture::new();
    let token = fixture.mint(&header("RS256", ES_KID), &valid_claims());

    assert_eq!(
        fixture.check(&token).await,
        Err(TokenError::AlgorithmMismatch)
    );
}

#[tokio::test]
async fn es256_header_on_rsa_key_rejected() {
    let fixture = Fixture::new();
    let token = fixture.mint(&header("ES256", RS_KID), &valid_claims());

    assert_eq!(
        fixture.check(&token).await,
        Err(TokenError::AlgorithmMismatch)
    );
}

#[tokio::test]
async fn kid_of_other_key_type_rejected() {
    let fixture = Fixture::new();
    let cases = [
        // An Ed25519 signature presented under the P-256 key's id, and the reverse.
        ("EdDSA", ES_KID),
        ("ES256", ED_KID),
        // RSA padding other than the one the JWK declares.
        ("PS256", RS_KID),
        ("RS256", PS_KID),
    ];
    for (alg, kid) in cases {
        let token = fixture.mint(&header(alg, kid), &valid_claims());

        assert_eq!(
            fixture.check(&token).await,
            Err(TokenError::AlgorithmMismatch),
            "{alg} under {kid}"
        );
    }
}

#[tokio::test]
async fn algorithm_outside_issuer_allowlist_rejected() {
    let fixture = Fixture::with(|issuer| issuer.algorithms = vec![Algorithm::ES256]);
    let token = fixture.mint(&header("RS256", RS_KID), &valid_claims());

    assert_eq!(
        fixture.check(&token).await,
        Err(TokenError::UnsupportedAlgorithm)
    );
}

#[tokio::test]
async fn unknown_issuer_rejected() {
    let fixture = Fixture::new();
    let mut claims = valid_claims();
    claims["iss"] = json!("https://issuer.example/");
    let token = fixture.mint(&header("ES256", ES_KID), &claims);

    assert_eq!(
        fixture.check(&token).await,
        Err(TokenError::UntrustedIssuer)
    );
}

#[tokio::test]
async fn missing_issuer_rejected() {
    let fixture = Fixture::new();
    let mut claims = valid_claims();
    claims.as_object_mut().map(|claims| claims.remove("iss"));
    let token = fixture.mint(&header("ES256", ES_KID), &claims);

    assert_eq!(
        fixture.check(&token).await,
        Err(TokenError::UntrustedIssuer)
    );
}

#[tokio::test]
async fn wrong_audience_rejected() {
    let fixture = Fixture::new();
    for audience in [json!("billing-api"), json!(["billing-api", "ORDERS-API"]), json!([])] {
        let mut claims = valid_claims();
        claims["aud"] = audience.clone();
        let token = fixture.mint(&header("ES256", ES_KID), &claims);

        assert_eq!(
            fixture.check(&token).await,
            Err(TokenError::InvalidAudience),
            "{audience}"
        );
    }
}

#[tokio::test]
async fn audience_array_naming_this_api_accepted() {
    let fixture = Fixture::new();
    let mut claims = valid_claims();
    claims["aud"] = json!(["billing-api", AUDIENCE]);
    let token = fixture.mint(&header("ES256", ES_KID), &claims);

    assert_eq!(fixture.check(&token).await, Ok(()));
}

#[tokio::test]
async fn missing_audience_rejected() {
    let fixture = Fixture::new();
    let mut claims = valid_claims();
    claims.as_object_mut().map(|claims| claims.remove("aud"));
    let token = fixture.mint(&header("ES256", ES_KID), &claims);

    assert_eq!(
        fixture.check(&token).await,
        Err(TokenError::InvalidAudience)
    );
}

#[tokio::test]
async fn missing_expiry_rejected() {
    let fixture = Fixture::new();
    let mut claims = valid_claims();
    claims.as_object_mut().map(|claims| claims.remove("exp"));
    let token = fixture.mint(&header("ES256", ES_KID), &claims);

    assert_eq!(fixture.check(&token).await, Err(TokenError::MissingExpiry));
}

#[tokio::test]
async fn claims_of_wrong_type_rejected() {
    let fixture = Fixture::new();
    let later = now() + 600;
    let cases = [
        ("exp", json!(later.to_string())),
        ("exp", json!(-1)),
        ("exp", json!(null)),
        ("nbf", json!("0")),
        ("iat", json!("now")),
        ("iat", json!(true)),
        ("aud", json!({ "name": AUDIENCE })),
        ("aud", json!([AUDIENCE, 7])),
        ("iss", json!([ISSUER])),
        ("sub", json!(42)),
        ("scope", json!(["orders:read"])),
        ("client_id", json!({})),
        ("jti", json!(1)),
    ];
    for (name, value) in cases {
        let mut claims = valid_claims();
        claims[name] = value.clone();
        let token = fixture.mint(&header("ES256", ES_KID), &claims);

        assert_eq!(
            fixture.check(&token).await,
            Err(TokenError::InvalidClaim),
            "{name} = {value}"
        );
    }
}

#[tokio::test]
async fn nbf_in_future_rejected() {
    let fixture = Fixture::new();
    let mut claims = valid_claims();
    claims["nbf"] = json!(now() + 120);
    let token = fixture.mint(&header("ES256", ES_KID), &claims);

    assert_eq!(fixture.check(&token).await, Err(TokenError::NotYetValid));
}

#[tokio::test]
async fn nbf_within_leeway_accepted() {
    let fixture = Fixture::new();
    let mut claims = valid_claims();
    claims["nbf"] = json!(now() + 30);
    let token = fixture.mint(&header("ES256", ES_KID), &claims);

    assert_eq!(fixture.check(&token).await, Ok(()));
}

#[tokio::test]
async fn iat_in_future_rejected() {
    let fixture = Fixture::new();
    let mut claims = valid_claims();
    claims["iat"] = json!(now() + 3600);
    let token = fixture.mint(&header("ES256", ES_KID), &claims);

    assert_eq!(fixture.check(&token).await, Err(TokenError::NotYetValid));
}

#[tokio::test]
async fn expired_beyond_leeway_rejected() {
    let fixture = Fixture::new();
    let mut claims = valid_claims();
    claims["exp"] = json!(now() - 61 - 5);
    let token = fixture.mint(&header("ES256", ES_KID), &claims);

    assert_eq!(fixture.check(&token).await, Err(TokenError::Expired));
}

#[tokio::test]
async fn expired_within_leeway_accepted() {
    let fixture = Fixture::new();
    let mut claims = valid_claims();
    claims["exp"] = json!(now() - 30);
    let token = fixture.mint(&header("ES256", ES_KID), &claims);

    assert_eq!(fixture.check(&token).await, Ok(()));
}

#[tokio::test]
async fn configured_leeway_applies() {
    let fixture = Fixture::with(|issuer| issuer.leeway_seconds = 0);
    let mut claims = valid_claims();
    claims["exp"] = json!(now() - 5);
    let token = fixture.mint(&header("ES256", ES_KID), &claims);

    assert_eq!(fixture.check(&token).await, Err(TokenError::Expired));
}

#[tokio::test]
async fn oversized_token_rejected_before_decoding() {
    let fixture = Fixture::new();
    // Invalid characters too: the size check must come first.
    let oversized = "*".repeat(8 * 1024 + 1);
    let mut claims = valid_claims();
    claims["padding"] = json!("x".repeat(8 * 1024));
    let large_valid = fixture.mint(&header("ES256", ES_KID), &claims);

    assert_eq!(fixture.check(&oversized).await, Err(TokenError::TooLarge));
    assert_eq!(fixture.check(&large_valid).await, Err(TokenError::TooLarge));
}

#[tokio::test]
async fn bad_charset_rejected() {
    let fixture = Fixture::new();
    let token = fixture.mint(&header("ES256", ES_KID), &valid_claims());
    let (signing_input, signature) = token.rsplit_once('.').expect("three segments");
    let cases = [
        format!("{token}="),
        format!("{token}=="),
        token.replacen('-', "+", 1).replacen('_', "/", 1) + "+/",
        format!("{signing_input}.{signature}.extra"),
        format!("{signing_input}"),
        format!(".{token}"),
        format!("{signing_input}..{signature}"),
        format!("{token} "),
        format!("{}\u{e9}", &token[..token.len() - 1]),
        format!("{token}\n"),
        String::new(),
    ];
    for case in cases {
        assert_eq!(fixture.check(&case).await, Err(TokenError::Malformed), "{case:?}");
    }
}

#[tokio::test]
async fn non_canonical_base64_rejected() {
    let fixture = Fixture::new();
    let token = fixture.mint(&header("ES256", ES_KID), &valid_claims());
    // A single trailing character cannot be the end of base64; a 5-character group likewise.
    let broken = format!("{token}A");

    let result = fixture.check(&broken).await;

    assert!(
        matches!(result, Err(TokenError::Malformed | TokenError::InvalidSignature)),
        "{result:?}"
    );
}

#[tokio::test]
async fn crit_header_rejected() {
    let fixture = Fixture::new();
    for crit in [json!(["exp"]), json!([]), json!(["b64"])] {
        let mut header = header("ES256", ES_KID);
        header["crit"] = crit.clone();
        header["exp"] = json!(1);
        header["b64"] = json!(false);
        let token = fixture.mint(&header, &valid_claims());

        assert_eq!(
            fixture.check(&token).await,
            Err(TokenError::CriticalHeader),
            "{crit}"
        );
    }
}

#[tokio::test]
async fn key_reference_headers_rejected() {
    let fixture = Fixture::new();
    let attacker_url = format!("http://{}/attacker-jwks.json", fixture.server.addr);
    let cases = [
        ("jku", json!(attacker_url)),
        ("x5u", json!(attacker_url)),
        ("jwk", fixture.keys.es_jwk(ES_KID)),
        ("x5c", json!(["MIIB"])),
    ];
    let requests_before = fixture.server.requests();
    for (name, value) in cases {
        let mut header = header("ES256", ES_KID);
        header[name] = value;
        let token = fixture.mint(&header, &valid_claims());

        assert_eq!(
            fixture.check(&token).await,
            Err(TokenError::UntrustedKeyHeader),
            "{name}"
        );
    }
    assert_eq!(
        fixture.server.requests(),
        requests_before,
        "a URL from a token header was fetched"
    );
}

#[tokio::test]
async fn typ_jwt_rejected_without_switch() {
    let fixture = Fixture::new();
    for typ in [json!("JWT"), json!("jwt"), json!("application/jwt"), json!(null)] {
        let mut header = header("ES256", ES_KID);
        header["typ"] = typ.clone();
        let token = fixture.mint(&header, &valid_claims());

        assert_eq!(
            fixture.check(&token).await,
            Err(TokenError::InvalidType),
            "{typ}"
        );
    }
    let mut header = header("ES256", ES_KID);
    header.as_object_mut().map(|header| header.remove("typ"));
    let token = fixture.mint(&header, &valid_claims());
    assert_eq!(fixture.check(&token).await, Err(TokenError::InvalidType));
}

#[tokio::test]
async fn typ_jwt_accepted_with_switch() {
    let fixture = Fixture::with(|issuer| issuer.accept_typ_jwt = true);
    for typ in ["JWT", "at+jwt", "application/AT+JWT"] {
        let mut header = header("ES256", ES_KID);
        header["typ"] = json!(typ);
        let token = fixture.mint(&header, &valid_claims());

        assert_eq!(fixture.check(&token).await, Ok(()), "{typ}");
    }
}

#[tokio::test]
async fn at_jwt_media_type_accepted() {
    let fixture = Fixture::new();
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+Jwt"] {
        let mut header = header("ES256", ES_KID);
        header["typ"] = json!(typ);
        let token = fixture.mint(&header, &valid_claims());

        assert_eq!(fixture.check(&token).await, Ok(()), "{typ}");
    }
}

#[tokio::test]
async fn repeated_member_rejected() {
    let fixture = Fixture::new();
    let claims = valid_claims().to_string();
    let repeated_aud = claims.replacen('{', "{\"aud\":\"billing-api\",", 1);
    let token = fixture
        .keys
        .mint_raw("ES256", header("ES256", ES_KID).to_string().as_bytes(), repeated_aud.as_bytes());
    let repeated_alg = br#"{"alg":"ES256","kid":"es-1","typ":"at+jwt","alg":"none"}"#;
    let token_alg = fixture.keys.mint_raw("ES256", repeated_alg, valid_claims().to_string().as_bytes());

    assert_eq!(fixture.check(&token).await, Err(TokenError::InvalidJson));
    assert_eq!(fixture.check(&token_alg).await, Err(TokenError::InvalidJson));
}

#[tokio::test]
async fn non_object_segments_rejected() {
    let fixture = Fixture::new();
    let header_bytes = header("ES256", ES_KID).to_string();
    for claims in [&b"[1,2]"[..], b"\"text\"", b"{", b"null"] {
        let token = fixture.keys.mint_raw("ES256", header_bytes.as_bytes(), claims);

        assert_eq!(fixture.check(&token).await, Err(TokenError::InvalidJson));
    }
}

#[tokio::test]
async fn tampered_claims_rejected() {
    let fixture = Fixture::new();
    let token = fixture.mint(&header("ES256", ES_KID), &valid_claims());
    let mut forged = valid_claims();
    forged["scope"] = json!("admin");
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(forged.to_string().as_bytes()), parts[2]);

    assert_eq!(
        fixture.check(&tampered).await,
        Err(TokenError::InvalidSignature)
    );
}

#[tokio::test]
async fn token_signed_by_unpublished_key_rejected() {
    let fixture = Fixture::new();
    let stranger = TestKeys::generate();
    let token = stranger.mint(&header("ES256", ES_KID), &valid_claims());

    assert_eq!(
        fixture.check(&token).await,
        Err(TokenError::InvalidSignature)
    );
}

#[tokio::test]
async fn missing_kid_rejected() {
    let fixture = Fixture::new();
    let header = json!({ "alg": "ES256", "typ": "at+jwt" });
    let token = fixture.mint(&header, &valid_claims());

    assert_eq!(fixture.check(&token).await, Err(TokenError::UnknownKey));
}

#[tokio::test]
async fn unknown_kid_refetches_once_per_cooldown() {
    let fixture = Fixture::new();
    let good = fixture.mint(&header("ES256", ES_KID), &valid_claims());
    assert_eq!(fixture.check(&good).await, Ok(()));
    let fetches_after_first = fixture.server.requests();

    for attempt in 0..5 {
        let token = fixture.mint(&header("ES256", &format!("made-up-{attempt}")), &valid_claims());
        assert_eq!(fixture.check(&token).await, Err(TokenError::UnknownKey));
    }

    assert_eq!(fetches_after_first, 1);
    assert_eq!(
        fixture.server.requests(),
        2,
        "five unknown key ids within the cooldown caused more than one fetch"
    );
}

#[tokio::test]
async fn rotated_key_found_by_refetch() {
    let fixture = Fixture::new();
    let good = fixture.mint(&header("ES256", ES_KID), &valid_claims());
    assert_eq!(fixture.check(&good).await, Ok(()));
    let mut rotated = fixture.keys.jwks();
    rotated["keys"]
        .as_array_mut()
        .expect("keys array")
        .push(fixture.keys.es_jwk("es-2"));
    fixture.server.set_document(&rotated);

    let token = fixture.mint(&header("ES256", "es-2"), &valid_claims());

    assert_eq!(fixture.check(&token).await, Ok(()));
}

#[tokio::test]
async fn loopback_issuer_accepted_only_when_configured() {
    let keys = TestKeys::generate();
    let server = JwksServer::start(&keys.jwks());
    let other_server = JwksServer::start(&TestKeys::generate().jwks());
    let token = keys.mint(&header("ES256", ES_KID), &valid_claims());
    let mut other_issuer = issuer_config(&other_server);
    other_issuer.issuer = "https://other.example".into();

    let without = verifier_for(vec![other_issuer.clone()]);
    let with = verifier_for(vec![other_issuer, issuer_config(&server)]);

    assert_eq!(
        without.verify(&token).await.map(|_| ()),
        Err(TokenError::UntrustedIssuer)
    );
    assert_eq!(server.requests(), 0, "an unconfigured issuer's JWKS was fetched");
    assert!(with.verify(&token).await.is_ok());
}

#[tokio::test]
async fn issuer_keys_not_shared_across_issuers() {
    let keys = TestKeys::generate();
    let server = JwksServer::start(&keys.jwks());
    let other_keys = TestKeys::generate();
    let other_server = JwksServer::start(&other_keys.jwks());
    let mut other_issuer = issuer_config(&other_server);
    other_issuer.issuer = "https://other.example".into();
    let verifier = verifier_for(vec![issuer_config(&server), other_issuer]);
    // Signed by the other issuer's key but claiming to come from ISSUER.
    let token = other_keys.mint(&header("ES256", ES_KID), &valid_claims());

    assert_eq!(
        verifier.verify(&token).await.map(|_| ()),
        Err(TokenError::InvalidSignature)
    );
}

#[tokio::test]
async fn unreachable_jwks_rejects_as_unavailable() {
    let keys = TestKeys::generate();
    let server = JwksServer::start(&keys.jwks());
    let config = issuer_config(&server);
    drop(server);
    let verifier = verifier_for(vec![config]);
    let token = keys.mint(&header("ES256", ES_KID), &valid_claims());

    assert_eq!(
        verifier.verify(&token).await.map(|_| ()),
        Err(TokenError::KeysUnavailable)
    );
}
