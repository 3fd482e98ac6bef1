"""A OneRoster REST test server on 127.0.0.1 (no tests here).

``OneRosterServer`` serves a data set (OneRoster CSV files converted to the
REST JSON of 1.1 or 1.2) under ``/ims/oneroster/v1p1`` or
``/ims/oneroster/rostering/v1p2`` with ``limit``/``offset`` paging,
``X-Total-Count`` and ``Link`` headers (each optional), a server-side page
size cap, and either auth style: OAuth 2 client credentials (``POST /token``
with HTTP Basic; bearer tokens that expire) or OAuth 1.0a HMAC-SHA1, whose
signatures are verified here independently of the client's code (nonce
replay and stale timestamps refused). Faults are scripted per request: a
status (429 with ``Retry-After``, 500, 401), a delay (slow responses). Every
request is recorded, so tests can assert what the client sent.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import secrets
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

PREFIX = {"1.1": "/ims/oneroster/v1p1", "1.2": "/ims/oneroster/rostering/v1p2"}
TOKEN_PATH = "/oauth/token"
Dataset = dict[str, list[dict[str, Any]]]


# --- OneRoster CSV → REST JSON --------------------------------------------------------------


def read_csv_files(source: Path) -> dict[str, list[dict[str, str]]]:
    """The CSV files of a folder or ZIP, as rows of strings keyed by file name."""
    files: dict[str, str] = {}
    if source.is_dir():
        for path in source.glob("*.csv"):
            files[path.name] = path.read_text(encoding="utf-8-sig")
    else:
        with zipfile.ZipFile(source) as archive:
            for name in archive.namelist():
                if name.endswith(".csv"):
                    files[name] = archive.read(name).decode("utf-8-sig")
    return {name: list(csv.DictReader(io.StringIO(text))) for name, text in files.items()}


def _ref(value: str | None, kind: str) -> dict[str, str] | None:
    if not value:
        return None
    return {"href": f"/{kind}s/{value}", "sourcedId": value, "type": kind}


def _refs(value: str | None, kind: str) -> list[dict[str, str]]:
    return [r for v in (value or "").split(",") if (r := _ref(v.strip(), kind))]


def _list(value: str | None) -> list[str]:
    return [v for v in (value or "").split(",") if v]


def _base(row: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {"sourcedId": row["sourcedId"]}
    for name in ("status", "dateLastModified"):
        if row.get(name):
            record[name] = row[name]
    return record


def _scalars(row: dict[str, str], *names: str) -> dict[str, str]:
    return {n: row[n] for n in names if row.get(n)}


def _user_ids(value: str | None) -> list[dict[str, str]]:
    ids = []
    for item in _list(value):
        kind, _, identifier = item.strip("{}").partition(":")
        ids.append({"type": kind, "identifier": identifier})
    return ids


def _flag(value: str, version: str) -> Any:
    """1.2 servers send booleans as JSON booleans; odd spellings stay strings."""
    if version == "1.2" and value in ("true", "false"):
        return value == "true"
    return value


def to_json(files: dict[str, list[dict[str, str]]], version: str) -> Dataset:
    """OneRoster CSV rows (1.1 or 1.2) → the REST collections of ``version``."""
    data: Dataset = {}
    data["orgs"] = [
        {**_base(r), **_scalars(r, "name", "type", "identifier"),
         "parent": _ref(r.get("parentSourcedId"), "org"), "children": []}
        for r in files.get("orgs.csv", [])
    ]
    data["academicSessions"] = [
        {**_base(r), **_scalars(r, "title", "type", "startDate", "endDate", "schoolYear"),
         "parent": _ref(r.get("parentSourcedId"), "academicSession")}
        for r in files.get("academicSessions.csv", [])
    ]
    data["courses"] = [
        {**_base(r), **_scalars(r, "title", "courseCode"),
         "schoolYear": _ref(r.get("schoolYearSourcedId"), "academicSession"),
         "grades": _list(r.get("grades")), "subjects": _list(r.get("subjects")),
         "org": _ref(r.get("orgSourcedId"), "org"),
         "subjectCodes": _list(r.get("subjectCodes"))}
        for r in files.get("courses.csv", [])
    ]
    data["classes"] = [
        {**_base(r), **_scalars(r, "title", "classCode", "classType", "location"),
         "grades": _list(r.get("grades")), "subjects": _list(r.get("subjects")),
         "course": _ref(r.get("courseSourcedId"), "course"),
         "school": _ref(r.get("schoolSourcedId"), "org"),
         "terms": _refs(r.get("termSourcedIds"), "academicSession"),
         "subjectCodes": _list(r.get("subjectCodes")), "periods": _list(r.get("periods"))}
        for r in files.get("classes.csv", [])
    ]
    data["enrollments"] = [
        {**_base(r), **_scalars(r, "role", "beginDate", "endDate"),
         **({"primary": _flag(r["primary"], version)} if r.get("primary") else {}),
         "user": _ref(r.get("userSourcedId"), "user"),
         "class": _ref(r.get("classSourcedId"), "class"),
         "school": _ref(r.get("schoolSourcedId"), "org")}
        for r in files.get("enrollments.csv", [])
    ]
    roles_of: dict[str, list[dict[str, Any]]] = {}
    for r in files.get("roles.csv", []):
        roles_of.setdefault(r["userSourcedId"], []).append(
            {**_scalars(r, "roleType", "role", "beginDate", "endDate"),
             "org": _ref(r.get("orgSourcedId"), "org"),
             **({"userProfile": r["userProfileSourcedId"]}
                if r.get("userProfileSourcedId") else {})})
    users = []
    for r in files.get("users.csv", []):
        user = {**_base(r), **_scalars(r, "username", "givenName", "familyName", "middleName",
                                        "identifier", "email", "sms", "phone", "password"),
                "enabledUser": _flag(r.get("enabledUser", ""), version),
                "userIds": _user_ids(r.get("userIds")), "agents": _refs(r.get("agentSourcedIds"),
                                                                        "user"),
                "grades": _list(r.get("grades"))}
        if version == "1.1":
            user["role"] = r.get("role", "")
            user["orgs"] = _refs(r.get("orgSourcedIds"), "org")
        else:
            user.update(_scalars(r, "userMasterIdentifier", "preferredMiddleName", "pronouns"))
            if r.get("preferredGivenName"):
                user["preferredFirstName"] = r["preferredGivenName"]
            if r.get("preferredFamilyName"):
                user["preferredLastName"] = r["preferredFamilyName"]
            if "role" in r:  # a 1.1 export served as 1.2: roles from role + orgs
                orgs = _refs(r.get("orgSourcedIds"), "org")
                user["roles"] = [{"roleType": "primary" if i == 0 else "secondary",
                                  "role": r["role"], "org": org} for i, org in enumerate(orgs)]
                user["primaryOrg"] = orgs[0] if orgs else None
            else:
                user["roles"] = roles_of.get(r["sourcedId"], [])
                user["primaryOrg"] = _ref(r.get("primaryOrgSourcedId"), "org")
        users.append(user)
    data["users"] = users
    return data


def load_dataset(source: Path, version: str) -> Dataset:
    return to_json(read_csv_files(source), version)


# --- OAuth 1 verification (independent of rosterdrop's signer) ------------------------------


def _enc(value: str) -> str:
    return quote(value, safe="~")


def verify_oauth1(method: str, url: str, header: str, key: str, secret: str,
                  seen_nonces: set[str], now: float) -> str | None:
    """None when the request is properly signed, else why not."""
    if not header.startswith("OAuth "):
        return "no OAuth header"
    params: dict[str, str] = {}
    for part in header[len("OAuth "):].split(","):
        name, _, value = part.strip().partition("=")
        params[unquote(name)] = unquote(value.strip('"'))
    if params.get("oauth_consumer_key") != key:
        return "unknown consumer key"
    if params.get("oauth_signature_method") != "HMAC-SHA1":
        return "signature method"
    if abs(now - int(params.get("oauth_timestamp", "0"))) > 300:
        return "stale timestamp"
    nonce = params.get("oauth_nonce", "")
    if not nonce or nonce in seen_nonces:
        return "nonce reused"
    signature = params.pop("oauth_signature", "")
    parts = urlsplit(url)
    pairs = [*parse_qsl(parts.query, keep_blank_values=True), *params.items()]
    normalized = "&".join(f"{k}={v}" for k, v in sorted((_enc(k), _enc(v)) for k, v in pairs))
    base_uri = f"{parts.scheme}://{parts.netloc.lower()}{parts.path}"
    base = f"{method}&{_enc(base_uri)}&{_enc(normalized)}"
    expected = base64.b64encode(
        hmac.new(f"{_enc(secret)}&".encode(), base.encode(), hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(expected, signature):
        return "bad signature"
    seen_nonces.add(nonce)
    return None


# --- the server -----------------------------------------------------------------------------


@dataclass
class Fault:
    """Answer the next ``times`` requests whose path+query contains ``match`` like this."""

    match: str
    status: int = 500
    times: int = 1
    retry_after: str | None = None
    delay: float = 0.0
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class OneRosterServer:
    data: Dataset
    version: str = "1.1"
    auth: str = "oauth2"
    client_id: str = "rosterdrop-client"
    secret: str = "s3cr3t-Ω/+&="
    max_limit: int = 10_000
    send_total: bool = True
    send_link: bool = True
    token_lifetime: int = 3600
    link_root: str | None = None
    """Where next-page links point (default: this server)."""
    requests: list[Seen] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)
    nonces: set[str] = field(default_factory=set)
    auth_failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root + PREFIX[self.version]

    @property
    def token_url(self) -> str:
        return self.root + TOKEN_PATH

    def source(self, **overrides: Any) -> dict[str, Any]:
        """A ``[tenants.X.source]`` table for this server (secret from $RD_TEST_SECRET)."""
        table: dict[str, Any] = {
            "type": "oneroster-api", "base_url": self.base_url, "client_id": self.client_id,
            "client_secret_env": "RD_TEST_SECRET", "auth": self.auth,
            "rate_limit_per_second": 0, "timeout_seconds": 5,
        }
        if self.auth == "oauth2":
            table["token_url"] = self.token_url
        table.update(overrides)
        return table

    def fail(self, match: str, status: int = 500, **kwargs: Any) -> None:
        with self.lock:
            self.faults.append(Fault(match, status, **kwargs))

    def expire_tokens(self) -> None:
        with self.lock:
            for token in self.tokens:
                self.tokens[token] = 0.0

    def methods(self) -> set[str]:
        return {seen.method for seen in self.requests}

    def _fault(self, target: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.match in target and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def api(self) -> OneRosterServer:
        return self.server.api

    def _record(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        with self.api.lock:
            self.api.requests.append(Seen(self.command, parts.path, query, dict(self.headers)))
        return parts.path, query

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> None:
        payload = raw if raw is not None else json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _refuse_method(self) -> None:
        self._record()
        self._read_body()
        self._send(405, {"imsx_codeMajor": "failure", "imsx_description": "read only"})

    do_PUT = do_DELETE = do_PATCH = _refuse_method

    def do_POST(self) -> None:
        path, _ = self._record()
        body = self._read_body()
        api = self.api
        if path != TOKEN_PATH or api.auth != "oauth2":
            self._send(405, {"error": "method_not_allowed"})
            return
        fault = api._fault(path)
        if fault is not None:
            time.sleep(fault.delay)
            self._send(fault.status, {"error": "server_error"},
                       {"Retry-After": fault.retry_after} if fault.retry_after else None)
            return
        expected = base64.b64encode(f"{api.client_id}:{api.secret}".encode()).decode()
        form = dict(parse_qsl(body.decode()))
        if self.headers.get("Authorization") != f"Basic {expected}" \
                or form.get("grant_type") != "client_credentials":
            self._send(401, {"error": "invalid_client"})
            return
        token = secrets.token_urlsafe(16)
        with api.lock:
            api.tokens[token] = time.monotonic() + api.token_lifetime
        self._send(200, {"access_token": token, "token_type": "Bearer",
                         "expires_in": api.token_lifetime})

    def _authorized(self) -> bool:
        api = self.api
        header = self.headers.get("Authorization", "")
        if api.auth == "oauth2":
            token = header.removeprefix("Bearer ")
            with api.lock:
                valid = api.tokens.get(token, 0.0) > time.monotonic()
            if not valid:
                api.auth_failures.append("token")
            return valid
        url = f"http://{self.headers.get('Host')}{self.path}"
        with api.lock:
            problem = verify_oauth1(self.command, url, header, api.client_id, api.secret,
                                    api.nonces, time.time())
        if problem:
            api.auth_failures.append(problem)
        return problem is None

    def do_GET(self) -> None:
        path, query = self._record()
        api = self.api
        fault = api._fault(self.path)
        if fault is not None:
            time.sleep(fault.delay)  # a slow answer; then a fault, or the normal page
            if fault.status != 200 or fault.body is not None:
                headers = dict(fault.headers)
                if fault.retry_after:
                    headers["Retry-After"] = fault.retry_after
                self._send(fault.status, {"imsx_codeMajor": "failure"}, headers,
                           raw=fault.body)
                return
        if not self._authorized():
            self._send(401, {"imsx_codeMajor": "failure", "imsx_description": "unauthorized"})
            return
        prefix = PREFIX[api.version]
        collection = path.removeprefix(prefix + "/") if path.startswith(prefix + "/") else None
        if collection not in api.data:
            self._send(404, {"imsx_codeMajor": "failure", "imsx_description": "unknown"})
            return
        records = api.data[collection]
        limit = min(int(query.get("limit", "100")), api.max_limit)
        offset = int(query.get("offset", "0"))
        page = records[offset:offset + limit]
        headers = {}
        if api.send_total:
            headers["X-Total-Count"] = str(len(records))
        if api.send_link:
            links = []
            if offset + limit < len(records):
                links.append(f'<{api.link_root or api.root}{path}?limit={limit}&'
                             f'offset={offset + limit}>; rel="next"')
            links.append(f'<{api.root}{path}?limit={limit}&offset=0>; rel="first"')
            headers["Link"] = ", ".join(links)
        self._send(200, {collection: page}, headers)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    api: OneRosterServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and went away; nothing to report


@contextmanager
def serving(api: OneRosterServer) -> Iterator[OneRosterServer]:
    """Run ``api`` on 127.0.0.1 (a free port) for the duration of the block."""
    httpd = _HTTPServer(("127.0.0.1", api.port), _Handler)
    httpd.api = api
    api.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield api
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
