"""Access tokens: wire format (prefix + checksum), hashed storage, roles, verification."""
