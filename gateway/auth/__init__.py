"""People and roles: local users (argon2 passwords, optional TOTP), their API tokens and
login sessions, the role -> action matrix, and `fixalloc users`. docs/users.md is the
operator's guide; gateway/http_auth.py puts it in front of the HTTP API."""
