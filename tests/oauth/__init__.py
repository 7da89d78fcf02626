"""A loopback OAuth2 token endpoint (Microsoft identity platform v2.0 and plain RFC 6749) for the tests."""
