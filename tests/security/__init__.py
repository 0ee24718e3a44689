"""Security findings, one test each, driving Bastion from outside (HTTP, the hub client, git) as an
attacker would. Every future finding lands here as a test that failed before its fix."""
