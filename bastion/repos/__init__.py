"""Repositories: metadata in the database, content in one bare git repository each."""
