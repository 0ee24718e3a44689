"""Moving a repository between storage regions: a durable, resumable job (docs/architecture.md)."""
