"""The issue catalogue: every code rosterdrop reports, with its severity.

Codes are a public contract (JSON output, history, email, issues.csv). Add
codes when needed; never change the meaning of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Code(StrEnum):
    # package
    ZIP_UNREADABLE = "ZIP_UNREADABLE"
    ZIP_NESTED_FOLDER = "ZIP_NESTED_FOLDER"
    ZIP_UNEXPECTED_FILE = "ZIP_UNEXPECTED_FILE"
    ZIP_UNSAFE = "ZIP_UNSAFE"
    FORMAT_UNKNOWN = "FORMAT_UNKNOWN"
    FORMAT_FOREIGN = "FORMAT_FOREIGN"
    FILE_MISSING = "FILE_MISSING"
    FILE_NAME_CASE = "FILE_NAME_CASE"
    FILE_EMPTY = "FILE_EMPTY"
    FILE_DUPLICATE = "FILE_DUPLICATE"
    MANIFEST_INVALID = "MANIFEST_INVALID"
    HEADER_MISSING_COLUMN = "HEADER_MISSING_COLUMN"
    HEADER_COLUMN_CASE = "HEADER_COLUMN_CASE"
    HEADER_UNKNOWN_COLUMN = "HEADER_UNKNOWN_COLUMN"
    HEADER_DUPLICATE_COLUMN = "HEADER_DUPLICATE_COLUMN"
    HEADER_NEAR_MISS = "HEADER_NEAR_MISS"
    HEADER_BLANK_COLUMNS = "HEADER_BLANK_COLUMNS"
    HEADER_MISSING_UNUSED = "HEADER_MISSING_UNUSED"
    HEADER_FIELD_COUNT = "HEADER_FIELD_COUNT"
    ENCODING_INVALID = "ENCODING_INVALID"
    # records
    ROW_COLUMN_COUNT = "ROW_COLUMN_COUNT"
    VALUE_REQUIRED = "VALUE_REQUIRED"
    VALUE_INVALID = "VALUE_INVALID"
    VALUE_TOO_LONG = "VALUE_TOO_LONG"
    VALUE_CASE = "VALUE_CASE"
    ID_DUPLICATE = "ID_DUPLICATE"
    REFERENCE_MISSING = "REFERENCE_MISSING"
    PATCHED_REFERENCE = "PATCHED_REFERENCE"
    EMAIL_MISSING = "EMAIL_MISSING"
    EMAIL_INVALID = "EMAIL_INVALID"
    ENCODING_CONVERTED = "ENCODING_CONVERTED"
    # sync
    MATCH_AMBIGUOUS = "MATCH_AMBIGUOUS"
    MATCH_MISSING = "MATCH_MISSING"
    ACCOUNT_NAME_FAILED = "ACCOUNT_NAME_FAILED"
    CHANGE_THRESHOLD = "CHANGE_THRESHOLD"
    ACCOUNT_LOCAL = "ACCOUNT_LOCAL"
    UPLOAD_SUPERSEDED = "UPLOAD_SUPERSEDED"
    # people import (rosterdrop people import: accounts created outside the SIS)
    IMPORT_INVALID = "IMPORT_INVALID"
    # source (a pull from a OneRoster REST API that produced no upload)
    SOURCE_UNREACHABLE = "SOURCE_UNREACHABLE"
    SOURCE_REFUSED = "SOURCE_REFUSED"
    SOURCE_INVALID = "SOURCE_INVALID"
    # outlets (a delivery after the run: never changes the run's status)
    DELIVERY_FAILED = "DELIVERY_FAILED"
    DELIVERY_UNREACHABLE = "DELIVERY_UNREACHABLE"
    DELIVERY_REFUSED = "DELIVERY_REFUSED"
    DELIVERY_HOST_KEY_MISMATCH = "DELIVERY_HOST_KEY_MISMATCH"
    # run (rosterdrop itself could not finish the run; nothing was applied)
    RUN_TIMED_OUT = "RUN_TIMED_OUT"
    RUN_INTERRUPTED = "RUN_INTERRUPTED"


@dataclass(frozen=True, slots=True)
class CodeInfo:
    severity: Severity
    """The usual severity; a few codes are errors or warnings by field."""
    title: str
    """What went wrong, as a heading for the report."""
    fix: str
    """What the admin should do about it."""


E, W = Severity.ERROR, Severity.WARNING

CATALOGUE: dict[Code, CodeInfo] = {
    Code.ZIP_UNREADABLE: CodeInfo(
        E, "The upload is not a readable ZIP file",
        "Export again and upload the complete ZIP file; a partial or damaged upload cannot be read."),
    Code.ZIP_NESTED_FOLDER: CodeInfo(
        E, "The ZIP contains a folder",
        "Select the CSV files themselves and compress them, not the folder that holds them."),
    Code.ZIP_UNEXPECTED_FILE: CodeInfo(
        E, "The ZIP contains a file that is not a CSV file",
        "Remove every file that is not one of the layout's .csv files and upload again."),
    Code.ZIP_UNSAFE: CodeInfo(
        E, "The ZIP was refused as unsafe",
        "Upload a plain ZIP of CSV files: no links, no encryption, no paths, within the size limits."),
    Code.FORMAT_UNKNOWN: CodeInfo(
        E, "The upload layout was not recognised",
        "Upload either the OneRoster CSV files or the Apple School Manager CSV files, not a mix."),
    Code.FORMAT_FOREIGN: CodeInfo(
        E, "The upload is in another roster format",
        "Export the roster as OneRoster CSV 1.1/1.2 or as Apple School Manager CSV; the "
        "message names the format found and where its system offers one of those."),
    Code.FILE_MISSING: CodeInfo(
        E, "A required file is missing",
        "Add the missing file to the export (it may hold only its header row)."),
    Code.FILE_NAME_CASE: CodeInfo(
        E, "A file name has the wrong upper/lower case",
        "Rename the file exactly as expected; names are case sensitive."),
    Code.FILE_EMPTY: CodeInfo(
        E, "A required file is empty",
        "Export the file again with its header row."),
    Code.FILE_DUPLICATE: CodeInfo(
        E, "The ZIP holds two files with the same name",
        "Keep one copy of the file in the ZIP."),
    Code.MANIFEST_INVALID: CodeInfo(
        E, "The OneRoster manifest.csv is invalid",
        "Export a manifest.csv with oneroster.version 1.1 or 1.2 and a file.<name> row for each file."),
    Code.HEADER_MISSING_COLUMN: CodeInfo(
        E, "A required column is missing",
        "Add the column to the file's header row, spelled exactly as the layout defines it."),
    Code.HEADER_COLUMN_CASE: CodeInfo(
        E, "A column name has the wrong upper/lower case",
        "Rename the column exactly as expected; column names are case sensitive."),
    Code.HEADER_UNKNOWN_COLUMN: CodeInfo(
        E, "A column is not part of the layout",
        "Remove the column or rename it to one the layout defines."),
    Code.HEADER_DUPLICATE_COLUMN: CodeInfo(
        E, "A column appears twice",
        "Keep one column of that name in the header row."),
    Code.HEADER_NEAR_MISS: CodeInfo(
        E, "A column name is a near miss of a column the layout defines",
        "Rename the column as the message suggests (\"did you mean\"), spelled exactly."),
    Code.HEADER_BLANK_COLUMNS: CodeInfo(
        W, "The header ends in blank column names (a spreadsheet artifact); they were ignored",
        "No action needed; delete the empty columns in the spreadsheet before exporting."),
    Code.HEADER_MISSING_UNUSED: CodeInfo(
        W, "A column the layout defines but the sync does not read is missing",
        "Add the column (it may be empty) to match the layout exactly; with "
        "strict_headers = true this is an error."),
    Code.HEADER_FIELD_COUNT: CodeInfo(
        E, "The header row has a different number of columns than the records",
        "Fix the header row: most records have the number of fields the message gives."),
    Code.ENCODING_INVALID: CodeInfo(
        E, "A file's text encoding is not supported",
        "Export the file as UTF-8 (or UTF-16 / Windows-1252)."),
    Code.ROW_COLUMN_COUNT: CodeInfo(
        E, "A record has the wrong number of fields",
        "Check the record for an unbalanced quote or a stray separator."),
    Code.VALUE_REQUIRED: CodeInfo(
        E, "A required value is blank",
        "Fill in the value in the SIS and export again."),
    Code.VALUE_INVALID: CodeInfo(
        E, "A value is not allowed",
        "Correct the value in the SIS and export again."),
    Code.VALUE_TOO_LONG: CodeInfo(
        E, "A value is longer than rosterdrop accepts",
        "Correct the value in the SIS (the message gives the limit) and export again."),
    Code.VALUE_CASE: CodeInfo(
        W, "A value had the wrong upper/lower case and was corrected",
        "No action needed; the SIS export should use the exact spelling."),
    Code.ID_DUPLICATE: CodeInfo(
        E, "An ID is used twice",
        "Give every record its own ID in the SIS."),
    Code.REFERENCE_MISSING: CodeInfo(
        E, "A reference points to a record that does not exist",
        "Add the referenced record to the export, or widen the filter that removed it."),
    Code.PATCHED_REFERENCE: CodeInfo(
        W, "A dangling instructor or roster reference was removed",
        "No action needed for this sync; fix the record in the SIS to keep it."),
    Code.EMAIL_MISSING: CodeInfo(
        W, "A person has no email address",
        "Add an email address in the SIS if the account needs one."),
    Code.EMAIL_INVALID: CodeInfo(
        W, "An email address is invalid and was dropped",
        "Correct the email address in the SIS."),
    Code.ENCODING_CONVERTED: CodeInfo(
        W, "A file was converted to UTF-8",
        "No action needed; exporting as UTF-8 avoids the conversion."),
    Code.MATCH_AMBIGUOUS: CodeInfo(
        E, "A person matches more than one existing account",
        "Make the matching fields unique in the SIS, or change duplicates.match_on."),
    Code.ACCOUNT_NAME_FAILED: CodeInfo(
        E, "A managed account name could not be made",
        "Fill in the field the account name format uses, or change account_format."),
    Code.MATCH_MISSING: CodeInfo(
        E, "A new person matched no existing account (require_match)",
        "Import the account (`rosterdrop people import`), correct the person's values in the "
        "SIS, or turn duplicates.require_match off once the migration is done."),
    Code.CHANGE_THRESHOLD: CodeInfo(
        E, "The sync would deactivate or remove too much and was held",
        "Check the export; release the run with `rosterdrop approve RUN_ID` or drop it with "
        "`rosterdrop discard RUN_ID`."),
    Code.ACCOUNT_LOCAL: CodeInfo(
        W, "A locally edited account was not updated from the SIS",
        "No action needed; edit the account locally again if the SIS values should apply."),
    Code.UPLOAD_SUPERSEDED: CodeInfo(
        W, "A queued upload was skipped because a newer one arrived",
        "No action needed."),
    Code.IMPORT_INVALID: CodeInfo(
        E, "A row of a people import file cannot be imported",
        "Correct the file as the message says and import it again; nothing of it was "
        "imported."),
    Code.SOURCE_UNREACHABLE: CodeInfo(
        E, "The SIS could not be reached",
        "Check that the SIS's OneRoster API is up and reachable from the rosterdrop server; "
        "the next scheduled pull tries again, or run `rosterdrop resync --tenant T`."),
    Code.SOURCE_REFUSED: CodeInfo(
        E, "The SIS refused the request",
        "Check the tenant's source settings (base_url, client_id, the client secret, "
        "token_url) and the API client's permissions in the SIS; test with "
        "`rosterdrop pull --tenant T --dry-run`."),
    Code.SOURCE_INVALID: CodeInfo(
        E, "The SIS answered with something that is not OneRoster data",
        "Check that base_url points at the OneRoster API (ending in /ims/oneroster/v1p1 or "
        "/ims/oneroster/rostering/v1p2) and ask the SIS vendor about the answer quoted."),
    Code.DELIVERY_FAILED: CodeInfo(
        W, "A delivery to an outlet failed",
        "The run itself is unaffected. The message names the cause; the delivery is retried "
        "with backoff, and `rosterdrop redeliver RUN_ID` starts it again once fixed."),
    Code.DELIVERY_UNREACHABLE: CodeInfo(
        W, "An outlet could not be reached",
        "Check that the destination's host and port (or the webhook URL) are reachable from "
        "the rosterdrop server; the delivery is retried with backoff."),
    Code.DELIVERY_REFUSED: CodeInfo(
        W, "An outlet refused the delivery",
        "Check the destination's username and password or key (or the webhook URL and "
        "secret) and its permissions on the remote folder; then `rosterdrop redeliver`."),
    Code.DELIVERY_HOST_KEY_MISMATCH: CodeInfo(
        W, "The SFTP destination's host key is not the pinned one",
        "Nothing was sent. Ask the destination's operator for its host key fingerprint "
        "(`ssh-keyscan HOST | ssh-keygen -lf -`); if the key changed on purpose, put the new "
        "SHA256:… in host_key_fingerprint, otherwise treat it as an attack."),
    Code.RUN_TIMED_OUT: CodeInfo(
        E, "The run took longer than its time limit and was stopped",
        "Nothing was applied. Upload again; if it keeps happening with uploads of this size, "
        "raise job_timeout_seconds or give the server more CPU."),
    Code.RUN_INTERRUPTED: CodeInfo(
        E, "The server could not finish the run",
        "Nothing was applied. The message names the cause (a full disk, the database not "
        "answering); ask whoever runs the rosterdrop server to fix it, then upload again "
        "or run `rosterdrop resync --tenant T`."),
}


def default_severity(code: Code) -> Severity:
    return CATALOGUE[code].severity
