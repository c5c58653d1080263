"""OAuth 2.0 and OpenID Connect, by the document each module implements.

No Jupyter imports: the server extension, the hub service and the in-kernel broker
use the same modules.

- :mod:`.rfc6749`: the authorization request, the token endpoint client
  (:class:`~.rfc6749.TokenEndpoint`), :class:`~.rfc6749.TokenResponse`, client
  authentication, and :class:`~.rfc6749.OAuthProtocolError` with a subclass per code;
- :mod:`.rfc7636`: PKCE (the verifier; S256 only);
- :mod:`.rfc7009`: token revocation;
- :mod:`.rfc9207`: the authorization response's issuer (mix-up defence);
- :mod:`.oidc`: discovery, JWKS, the ID token (authlib's claims validation), UserInfo;
- :mod:`.rfc8693`: token exchange;
- :mod:`.entra_obo`: Entra ID's on-behalf-of (jwt-bearer) exchange;
- :mod:`.rfc8628`: the device authorization grant (user code, polling, its errors);
- :mod:`.rfc7523`: ``private_key_jwt`` client authentication;
- :mod:`.http`: the transports (environment proxies, ``SSL_CERT_FILE``, a CA bundle);
- :mod:`.flavours`: each IdP vendor's documented deviations, one module per vendor;
- :mod:`.client`: :class:`~.client.IdPClient`, one IdP put together from the above.

Grants of other documents go in modules of their own beside these, sending their
requests through :meth:`.rfc6749.TokenEndpoint.request`: :mod:`.rfc8628` (device
authorization) and :mod:`.google_sts` (Google's STS for Workforce Identity Federation,
a flavour of RFC 8693).
"""
