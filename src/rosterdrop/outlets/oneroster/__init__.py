"""The read-only OneRoster REST provider's core (docs/outlets.md, "The OneRoster API").

- ``records``: directory rows → OneRoster 1.1/1.2 JSON records, by keyset from SQL
  (:func:`records.all_records` also feeds the CSV bundles pushed to destinations);
- ``query``: ``filter``/``sort``/``orderBy``/``fields``/``limit``/``offset`` parsed into a
  typed query (pure);
- ``pages``: one answer's count and page in SQL, with a keyset shortcut for sequential paging;
- ``tokens``: OAuth 2 client-credentials tokens in ``api_tokens``, shared by every process.
"""
