"""Outlets: what the clean directory feeds (docs/outlets.md).

- ``oneroster``: the read-only OneRoster REST provider's records and queries;
- ``dispatch``: which finished runs go to which destination or alert, and the attempts;
- ``sftp_push``: the push of the applied directory to an SFTP server (Apple School Manager);
- ``alerts``: Slack, Microsoft Teams and signed webhook posts.
"""
