"""The audit logs people read: an organization's (its admins), the instance's (instance administrators) and
each user's own security log, as pages, as Hub-format downloads and on the command line.

The queries, the record shape and the streaming live in bastion.audit (query, records, export); this
package names the current authors and tokens (accounts, tokens), resolves organizations and authorizes.
"""
