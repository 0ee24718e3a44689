"""Scanners: each turns file content into a ScanResult; none of them trusts or executes the content."""
