"""SCIM 2.0 provisioning (RFC 7643/7644) for the instance and per organization: the IdP's tokens, the
Users and Groups it provisions, and SCIM groups linked to org roles and resource groups."""
