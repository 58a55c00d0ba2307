//! Identity headers that the proxy sends upstream.
//!
//! The proxy removes these headers from every incoming request, so the upstream can trust
//! that they come from the proxy, and sets them from the verified token's claims.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::proxy::Principal;

/// The verified token's `sub`.
pub const X_AUTH_SUBJECT: HeaderName = HeaderName::from_static("x-auth-subject");
/// The verified token's scopes, separated by spaces.
pub const X_AUTH_SCOPES: HeaderName = HeaderName::from_static("x-auth-scopes");
/// The verified token's `client_id`.
pub const X_AUTH_CLIENT_ID: HeaderName = HeaderName::from_static("x-auth-client-id");
/// The verified token's `iss`.
pub const X_AUTH_ISSUER: HeaderName = HeaderName::from_static("x-auth-issuer");

/// Removes the identity headers a client sent and sets them from `principal`. A claim value
/// that cannot be a header value (control characters) is left out, so the upstream never receives
/// a value the proxy did not verify.
pub fn set_identity_headers(headers: &mut HeaderMap, principal: Option<&Principal>) {
    crate::proxy::headers::remove_named(
        headers,
        &[X_AUTH_SUBJECT, X_AUTH_SCOPES, X_AUTH_CLIENT_ID, X_AUTH_ISSUER],
    );
    let Some(principal) = principal else {
        return;
    };

    let scopes = principal.scopes.join(" ");
    let values = [
        (X_AUTH_SUBJECT, principal.subject.as_deref()),
        (X_AUTH_SCOPES, Some(scopes.as_str())),
        (X_AUTH_CLIENT_ID, principal.client_id.as_deref()),
        (X_AUTH_ISSUER, Some(principal.issuer.as_str())),
    ];
    for (name, value) in values {
        let Some(value) = value else {
            continue;
        };
        match HeaderValue::from_str(value) {
            Ok(value) => {
                headers.insert(name, value);
            }
            Err(_) => {
                tracing::debug!(header = %name, "claim not representable as a header value, left out");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_supplied_identity_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(X_AUTH_SUBJECT, HeaderValue::from_static("admin"));
        headers.append(X_AUTH_SCOPES, HeaderValue::from_static("everything"));
        headers.append(X_AUTH_SCOPES, HeaderValue::from_static("more"));

        set_identity_headers(&mut headers, None);

        assert!(headers.get(X_AUTH_SUBJECT).is_none());
        assert!(headers.get(X_AUTH_SCOPES).is_none());
    }

    #[test]
    fn principal_written_once() {
        let mut headers = HeaderMap::new();
        headers.insert(X_AUTH_SUBJECT, HeaderValue::from_static("admin"));
        let principal = Principal {
            subject: Some("user-1".into()),
            client_id: None,
            scopes: vec!["a".into(), "b".into()],
            issuer: "https://issuer.example".into(),
        };

        set_identity_headers(&mut headers, Some(&principal));

        assert_eq!(headers.get_all(X_AUTH_SUBJECT).iter().count(), 1);
        assert_eq!(headers[X_AUTH_SUBJECT], "user-1");
        assert_eq!(headers[X_AUTH_SCOPES], "a b");
        assert_eq!(headers[X_AUTH_ISSUER], "https://issuer.example");
        assert!(headers.get(X_AUTH_CLIENT_ID).is_none());
    }
}
