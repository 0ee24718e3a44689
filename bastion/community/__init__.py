"""The Community tab: discussions and pull requests of a repo, their comments and events (the Hub's API)."""
