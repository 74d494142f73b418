"""The staff's login: a TOTP second factor, lockout after failed logins, session expiry,
each step in the audit log (README: The owner's account)."""
