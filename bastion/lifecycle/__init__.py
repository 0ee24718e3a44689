"""Identity lifecycle: deprovisioning (every credential of a user revoked in one transaction),
reactivation, account deletion with pseudonymised audit events, and the export of a user's own data."""
