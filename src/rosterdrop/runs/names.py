"""The file names of a run's artifacts (``reports/<run-id>/``), apart from the code that
writes them, so that ``show`` can list them without loading polars."""

REPORT_JSON = "report.json"
ISSUES_CSV = "issues.csv"
SUMMARY_CSV = "patch-summary.csv"
MODIFIED_ZIP = "modified.zip"
MATCHES_CSV = "matches.csv"
PREVIEW_CSV = "preview.csv"

ARTIFACT_NAMES = (REPORT_JSON, ISSUES_CSV, SUMMARY_CSV, MODIFIED_ZIP, MATCHES_CSV, PREVIEW_CSV)
"""In the order ``show`` lists them."""
