"""Pulling a tenant's roster from its SIS's OneRoster REST API (1.1 and 1.2).

A pull reads the six rostering collections, writes them as a OneRoster CSV
bundle ZIP (exactly the upload layout of formats.md) and queues that ZIP like
an upload, so validation, filter, patch, guard, history, artifacts and the
email are the pipeline's own::

    schedule (pure) ─► puller ─► client (httpx, auth) ─► bundle (JSON → CSV ZIP)
                                                           └─► intake/queue ─► runner

Modules: ``auth`` (OAuth 2 client credentials, OAuth 1 HMAC-SHA1 signing),
``client`` (paging, retries, rate limit; only GET and the token POST),
``bundle`` (records → CSV files → ZIP, streamed through disk), ``schedule``
(pure: when is a pull due), ``puller`` (the I/O shell: one pull, the daemon's
scheduler thread, the state folder).
"""
