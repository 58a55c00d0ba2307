"""Interop check of the agent's authorization server with real client libraries.

authlib runs the authorization-code flow with PKCE (including the login form), refreshes and
revokes; PyJWT's PyJWKClient verifies the issued access tokens against the published JWKS.
The Rust test `oauth_interop` starts the agent on loopback and runs this script with the
settings in environment variables. Every check is an assert, so a failure exits non-zero.
"""

import html.parser
import os
import sys
import urllib.parse

import jwt
import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.common.security import generate_token

ISSUER = os.environ["OAUTH_ISSUER"]
PUBLIC_CLIENT = os.environ["OAUTH_PUBLIC_CLIENT"]
REDIRECT_URI = os.environ["OAUTH_REDIRECT_URI"]
CONFIDENTIAL_CLIENT = os.environ["OAUTH_CONFIDENTIAL_CLIENT"]
CONFIDENTIAL_SECRET = os.environ["OAUTH_CONFIDENTIAL_SECRET"]
USERNAME = os.environ["OAUTH_USERNAME"]
PASSWORD = os.environ["OAUTH_PASSWORD"]
TIMEOUT_SECONDS = 10


class HiddenInputs(html.parser.HTMLParser):
    """Collects the form action and the hidden inputs of the login page."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form":
            self.action = attributes.get("action")
        if tag == "input" and attributes.get("type") == "hidden":
            self.fields[attributes["name"]] = attributes["value"]


def verify_access_token(jwks_client, token, audience):
    """Verifies signature, issuer, audience and expiry with PyJWT, and returns the claims."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt", header
    assert header["alg"] == "ES256", header
    signing_key = jwks_client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["ES256"],
        audience=audience,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "iss", "sub", "aud", "jti"]},
    )
    assert claims["client_id"], claims
    return claims


def sign_in(browser, authorization_url):
    """Opens the login page, submits the form and returns the redirect location."""
    page = browser.get(authorization_url, allow_redirects=False, timeout=TIMEOUT_SECONDS)
    assert page.status_code == 200, (page.status_code, page.text)
    assert page.headers["Cache-Control"] == "no-store"
    form = HiddenInputs()
    form.feed(page.text)
    assert form.action and "csrf_token" in form.fields, page.text

    fields = dict(form.fields, username=USERNAME, password=PASSWORD)
    response = browser.post(
        urllib.parse.urljoin(ISSUER, form.action),
        data=fields,
        allow_redirects=False,
        timeout=TIMEOUT_SECONDS,
    )
    assert response.status_code == 303, (response.status_code, response.text)
    return response.headers["Location"]


def authorization_code_flow(metadata, jwks_client):
    session = OAuth2Session(
        PUBLIC_CLIENT,
        token_endpoint_auth_method="none",
        scope="read write",
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
    )
    verifier = generate_token(64)
    url, state = session.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier
    )

    location = sign_in(requests.Session(), url)
    returned = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert location.startswith(REDIRECT_URI), location
    assert returned["state"] == state, returned
    assert returned["iss"] == ISSUER, returned

    token = session.fetch_token(
        metadata["token_endpoint"],
        authorization_response=location,
        code_verifier=verifier,
        state=state,
    )
    claims = verify_access_token(jwks_client, token["access_token"], ISSUER)
    assert claims["sub"] == USERNAME, claims
    assert claims["scope"] == "read write", claims
    assert claims["exp"] - claims["iat"] == 900, claims
    print("authorization code with PKCE: ok")

    protected = ISSUER + "/api/orders"
    anonymous = requests.get(protected, timeout=TIMEOUT_SECONDS)
    assert anonymous.status_code == 401, anonymous.status_code
    bearer = {"Authorization": "Bearer " + token["access_token"]}
    allowed = requests.get(protected, headers=bearer, timeout=TIMEOUT_SECONDS)
    assert allowed.status_code == 200, (allowed.status_code, allowed.text)
    print("proxy accepts the issued access token: ok")

    refreshed = session.refresh_token(
        metadata["token_endpoint"], refresh_token=token["refresh_token"]
    )
    assert refreshed["refresh_token"] != token["refresh_token"]
    verify_access_token(jwks_client, refreshed["access_token"], ISSUER)
    print("refresh with rotation: ok")

    revoked = session.revoke_token(
        metadata["revocation_endpoint"],
        token=refreshed["refresh_token"],
        token_type_hint="refresh_token",
    )
    assert revoked.status_code == 200, revoked.text
    try:
        session.refresh_token(
            metadata["token_endpoint"], refresh_token=refreshed["refresh_token"]
        )
    except OAuthError as error:
        assert error.error == "invalid_grant", error
    else:
        raise AssertionError("a revoked refresh token was accepted")
    # Revoking the refresh token revoked its family, including the access token it issued.
    bearer = {"Authorization": "Bearer " + refreshed["access_token"]}
    rejected = requests.get(ISSUER + "/api/orders", headers=bearer, timeout=TIMEOUT_SECONDS)
    assert rejected.status_code == 401, rejected.status_code
    print("revocation: ok")


def client_credentials_flow(metadata, jwks_client):
    session = OAuth2Session(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, scope="read")
    token = session.fetch_token(
        metadata["token_endpoint"],
        grant_type="client_credentials",
        resource="https://api.example/orders",
    )
    claims = verify_access_token(jwks_client, token["access_token"], "https://api.example/orders")
    assert claims["sub"] == CONFIDENTIAL_CLIENT, claims

    auth = (CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET)
    introspected = requests.post(
        metadata["introspection_endpoint"],
        data={"token": token["access_token"]},
        auth=auth,
        timeout=TIMEOUT_SECONDS,
    ).json()
    assert introspected["active"] is True, introspected

    revoked = requests.post(
        metadata["revocation_endpoint"],
        data={
            "token": token["access_token"],
            "client_id": CONFIDENTIAL_CLIENT,
            "client_secret": CONFIDENTIAL_SECRET,
        },
        timeout=TIMEOUT_SECONDS,
    )
    assert revoked.status_code == 200, revoked.text
    introspected = requests.post(
        metadata["introspection_endpoint"],
        data={"token": token["access_token"]},
        auth=auth,
        timeout=TIMEOUT_SECONDS,
    ).json()
    assert introspected["active"] is False, introspected
    print("client credentials, introspection, access-token revocation: ok")


def endpoint_guards(metadata):
    get = requests.get(metadata["token_endpoint"], timeout=TIMEOUT_SECONDS)
    assert get.status_code == 405, get.status_code
    assert get.headers["Allow"] == "POST"

    failed = requests.post(
        metadata["token_endpoint"],
        data={"grant_type": "client_credentials"},
        auth=(CONFIDENTIAL_CLIENT, "wrong"),
        timeout=TIMEOUT_SECONDS,
    )
    assert failed.status_code == 401, failed.status_code
    assert failed.headers["Cache-Control"] == "no-store"
    print("endpoint guards: ok")


def main():
    metadata = requests.get(
        ISSUER + "/.well-known/oauth-authorization-server", timeout=TIMEOUT_SECONDS
    ).json()
    assert metadata["issuer"] == ISSUER, metadata
    assert metadata["code_challenge_methods_supported"] == ["S256"], metadata
    jwks_client = jwt.PyJWKClient(metadata["jwks_uri"])

    authorization_code_flow(metadata, jwks_client)
    client_credentials_flow(metadata, jwks_client)
    endpoint_guards(metadata)
    print("all interop checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
