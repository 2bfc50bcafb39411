"""A GitHub stand-in for tests/github_app.rs: the part of GitHub a GitHub App's credential
provider talks to (App authentication, installations, installation access tokens) and a
few repository endpoints that enforce those tokens, as GitHub documents them.

Run once per test binary:

    standin.py --app-id 12345 --public-key app.pub.pem

It listens on 127.0.0.1 (a free port), prints one JSON line on stdout
({"port", "openapi_version", "openapi_file", "pygithub"...}) and serves until stdin closes
(the test process exited). Each test asks it for an instance of its own
(`POST /_standin/instances`, optional JSON body of overrides, answer {"port"}): a separate
listener with its own state (requests seen, tokens issued, failure switches), so tests
running in parallel never see each other's traffic. The first listener is an instance too.

What GitHub's side does here:

- App authentication (`/app/...` and `GET /repos/{owner}/{repo}/installation`,
  `/orgs/{org}/installation`, `/users/{user}/installation`): `Authorization: Bearer <JWT>`
  signed RS256 by the App's private key (verified with the public key given at start, or
  an instance's own), `iss` the App id (number or string, as GitHub accepts both),
  `iat` not in the future (30 s drift allowed), `exp` not passed, `exp - iat <= 600` and
  `exp` at most 10 minutes ahead. Anything else: 401 with GitHub's message.
- `POST /app/installations/{installation_id}/access_tokens`: the body (empty = `{}`, the
  request body is optional) is validated against the requestBody schema of that operation
  in @octokit/openapi's `generated/api.github.com.json` ($refs resolved); invalid: 422.
  Repositories (`repositories` names or `repository_ids`) the installation does not have,
  or permissions beyond the installation's grant: 422. Otherwise 201 with `ghs_<36>`,
  `expires_at` one hour ahead (`token_ttl`), `permissions` (what was asked, or the whole
  grant when nothing was; `metadata: read` always included, as GitHub does),
  `repository_selection` and `repositories`.
- Repository endpoints, for `octo/hello` (id 1296269) and `octo/secret` (id 1296270), also
  as `/repositories/{id}/...`: a token that cannot see the repository gets 404 Not Found,
  one without the permission 403 "Resource not accessible by integration" (with
  `X-Accepted-GitHub-Permissions`), no or an unknown token 401. Required permissions:
    GET  /repos/{o}/{r}                   metadata:read
    GET  /repos/{o}/{r}/issues            issues:read
    POST /repos/{o}/{r}/issues            issues:write
    GET  /repos/{o}/{r}/keys              administration:read (paginated: `per_page`, at
                                          most 100 or the `max_per_page` switch, and
                                          `page`; `Link: <…>; rel="next"` while more)
    POST /repos/{o}/{r}/keys              administration:write
    DELETE /repos/{o}/{r}/keys/{key_id}   administration:write (204; 404 when no such key)
    GET  /repos/{o}/{r}/contents/{path}   contents:read
    anything else under the repository: metadata:read, then 404 Not Found.
- `DELETE /installation/token`: revokes the installation token used (204); it is refused
  (401) from then on.
  `elsewhere/thing` (id 7) exists but the App is not installed there.

Test-only endpoints of an instance (never recorded):
  GET  /_standin/requests   every request so far: {"requests": [{"seq", "time", "method", "path",
                            "headers": [[name, value], ...], "body", "kind" (app |
                            installation | access_tokens | api), "status", "response",
                            "reason" (why it was refused), "app_jwt" (the claims of a
                            verified App JWT), "token" (for API calls: what the token
                            used was issued for)}]}
  POST /_standin/reset      forget the requests seen
  GET  /_standin/tokens     every token issued: {"tokens": [{"token", "installation_id",
                            "repositories", "repository_ids", "requested_permissions",
                            "permissions", "expires_at", "expires_at_unix"}]}
  POST /_standin/control    JSON switches, merged: fail_access_tokens (a status such as
                            500, or null), fail_installation (status or null),
                            access_tokens_delay_ms, token_ttl (seconds), max_per_page
                            (the most items of a listing's page), fail_delete_keys
                            (a status such as 500, or null)
  GET  /_standin/keys       every deploy key: {"keys": {"owner/repo": [key, ...]}}
  POST /_standin/instances  a new instance; body overrides {"app_id", "public_key"
                            (PEM), "grant" (the installation's permissions)}
  POST /_standin/shutdown   stop this instance's listener
"""

import argparse
import base64
import copy
import hashlib
import json
import os
import re
import secrets
import string
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import jwt

HERE = os.path.dirname(os.path.abspath(__file__))
OPENAPI_PACKAGE = os.path.join(HERE, "node_modules", "@octokit", "openapi")
OPENAPI_FILE = os.path.join(OPENAPI_PACKAGE, "generated", "api.github.com.json")
ACCESS_TOKENS = "/app/installations/{installation_id}/access_tokens"
DOCS = "https://docs.github.com/rest"
API_VERSIONS = {"2022-11-28"}

INSTALLATION_ID = 42
ACCOUNT = {"login": "octo", "id": 583231, "type": "Organization"}
# full name -> repository
REPOS = {
    "octo/hello": {"id": 1296269, "private": False},
    "octo/secret": {"id": 1296270, "private": True},
    "elsewhere/thing": {"id": 7, "private": False},
}
INSTALLED = {"octo/hello", "octo/secret"}
DEFAULT_GRANT = {
    "metadata": "read",
    "issues": "write",
    "contents": "read",
    "administration": "write",
}
LEVEL = {"read": 1, "write": 2, "admin": 3}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- the published schema


def resolve_refs(node, doc, depth=0):
    """`node` with every local `$ref` replaced by what it points to."""
    if depth > 64:
        raise ValueError("$ref nesting too deep")
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            target = doc
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            return resolve_refs(target, doc, depth + 1)
        return {k: resolve_refs(v, doc, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_refs(v, doc, depth + 1) for v in node]
    return node


def load_access_tokens_schema():
    with open(OPENAPI_FILE, encoding="utf-8") as f:
        doc = json.load(f)
    op = doc["paths"][ACCESS_TOKENS]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    with open(os.path.join(OPENAPI_PACKAGE, "package.json"), encoding="utf-8") as f:
        version = json.load(f)["version"]
    # OpenAPI 3.0 schema objects are JSON Schema (Wright draft 00, i.e. draft 4/5 rules)
    # with extra annotations (example, nullable, ...) a validator ignores.
    return resolve_refs(schema, doc), version, doc["openapi"]


SCHEMA, OPENAPI_VERSION, OPENAPI_SPEC_VERSION = load_access_tokens_schema()
VALIDATOR = jsonschema.Draft4Validator(SCHEMA)


def schema_errors(body):
    return sorted(
        (
            "For '{}', {}".format("/".join(str(p) for p in e.absolute_path) or "body", e.message)
            for e in VALIDATOR.iter_errors(body)
        )
    )


# ---------------------------------------------------------------- helpers


def gh_error(status, message, **extra):
    body = {"message": message, "documentation_url": DOCS, "status": str(status)}
    body.update(extra)
    return status, body


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def new_token():
    alphabet = string.ascii_letters + string.digits
    return "ghs_" + "".join(secrets.choice(alphabet) for _ in range(36))


def repo_json(full_name, host):
    owner, name = full_name.split("/")
    r = REPOS[full_name]
    base = f"http://{host}"
    return {
        "id": r["id"],
        "node_id": base64.b64encode(f"010:Repository{r['id']}".encode()).decode(),
        "name": name,
        "full_name": full_name,
        "private": r["private"],
        "visibility": "private" if r["private"] else "public",
        "owner": {
            "login": owner,
            "id": ACCOUNT["id"] if owner == ACCOUNT["login"] else 1,
            "type": "Organization",
            "url": f"{base}/users/{owner}",
        },
        "html_url": f"https://github.com/{full_name}",
        "description": f"The {name} repository",
        "fork": False,
        "url": f"{base}/repos/{full_name}",
        "default_branch": "main",
        "archived": False,
        "disabled": False,
        "created_at": "2011-01-26T19:01:12Z",
        "updated_at": "2026-01-26T19:14:43Z",
        "pushed_at": "2026-01-26T19:06:43Z",
    }


class Instance:
    """One listener's GitHub: its App key, installation grant, tokens and records."""

    def __init__(self, app_id, public_key, grant=None):
        self.app_id = str(app_id)
        self.public_key = public_key
        self.grant = dict(grant or DEFAULT_GRANT)
        self.lock = threading.Lock()
        self.records = []
        self.seq = 0
        self.tokens = {}  # token -> info
        self.token_order = []
        self.control = {
            "fail_access_tokens": None,
            "fail_installation": None,
            "access_tokens_delay_ms": 0,
            "token_ttl": 3600,
            "max_per_page": 100,
            "fail_delete_keys": None,
        }
        self.issues = {
            "octo/hello": [
                {"number": 1, "title": "Found a bug", "state": "open", "body": "It breaks."}
            ],
            "octo/secret": [
                {"number": 1, "title": "Secret plans", "state": "open", "body": "Hush."}
            ],
        }
        self.keys = {"octo/hello": [], "octo/secret": []}
        # Deploy key ids are unique across repositories, as GitHub's are.
        self.next_key_id = 4201
        self.contents = {
            "octo/hello": {"README.md": b"# hello\n\nHello, world.\n"},
            "octo/secret": {"README.md": b"# secret\n"},
        }
        self.server = None

    # -------------------------------------------------------- App authentication

    def verify_app_jwt(self, headers):
        """(claims, None) or (None, (status, body, reason))."""
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None, (
                *gh_error(
                    401,
                    "A JSON web token could not be decoded",
                ),
                f"App call without 'Authorization: Bearer <JWT>' (got scheme {scheme!r})",
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            return None, (*gh_error(401, "A JSON web token could not be decoded"), f"jwt: {e}")
        if header.get("alg") != "RS256":
            return None, (
                *gh_error(401, "A JSON web token could not be decoded"),
                f"jwt alg {header.get('alg')!r}, not RS256",
            )
        now = int(time.time())
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"], "verify_aud": False},
                leeway=30,  # for iat only: exp is checked below without leeway
            )
        except jwt.ExpiredSignatureError as e:
            return None, (
                *gh_error(
                    401,
                    "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires.",
                ),
                f"jwt: {e}",
            )
        except jwt.ImmatureSignatureError as e:
            return None, (
                *gh_error(
                    401,
                    "'Issued at' claim ('iat') must be an Integer representing a time in the past.",
                ),
                f"jwt: {e}",
            )
        except jwt.PyJWTError as e:
            return None, (*gh_error(401, "A JSON web token could not be decoded"), f"jwt: {e}")
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int) or not isinstance(exp, int):
            return None, (
                *gh_error(401, "A JSON web token could not be decoded"),
                "jwt: iat and exp must be integers",
            )
        if exp <= now:
            return None, (
                *gh_error(
                    401,
                    "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires.",
                ),
                "jwt: expired",
            )
        if exp - iat > 600 or exp > now + 600:
            return None, (
                *gh_error(401, "'Expiration time' claim ('exp') is too far in the future"),
                f"jwt: exp - iat = {exp - iat}, exp - now = {exp - now} (at most 600)",
            )
        if str(claims["iss"]) != self.app_id:
            return None, (
                *gh_error(
                    401,
                    "'Issuer' claim ('iss') must be an Integer",
                ),
                f"jwt: iss {claims['iss']!r}, not the App id {self.app_id}",
            )
        return claims, None

    def installation_json(self, host):
        return {
            "id": INSTALLATION_ID,
            "account": {**ACCOUNT, "url": f"http://{host}/orgs/{ACCOUNT['login']}"},
            "repository_selection": "selected",
            "access_tokens_url": f"http://{host}/app/installations/{INSTALLATION_ID}/access_tokens",
            "repositories_url": f"http://{host}/installation/repositories",
            "app_id": int(self.app_id),
            "app_slug": "keygate-test-app",
            "target_id": ACCOUNT["id"],
            "target_type": ACCOUNT["type"],
            "permissions": dict(self.grant),
            "events": [],
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "single_file_name": None,
            "suspended_at": None,
        }

    def installation_lookup(self, account, full_name, host, headers, rec):
        claims, err = self.verify_app_jwt(headers)
        if err:
            rec["reason"] = err[2]
            return err[0], err[1]
        rec["app_jwt"] = claims
        if self.control["fail_installation"]:
            rec["reason"] = "fail_installation switch"
            return gh_error(self.control["fail_installation"], "Server Error")
        installed = account == ACCOUNT["login"] and (full_name is None or full_name in INSTALLED)
        if not installed:
            rec["reason"] = f"the App is not installed on {full_name or account}"
            return gh_error(404, "Not Found")
        return 200, self.installation_json(host)

    def access_tokens(self, installation, body_text, host, headers, rec):
        claims, err = self.verify_app_jwt(headers)
        if err:
            rec["reason"] = err[2]
            return err[0], err[1]
        rec["app_jwt"] = claims
        delay = self.control["access_tokens_delay_ms"]
        if delay:
            time.sleep(delay / 1000)
        if self.control["fail_access_tokens"]:
            rec["reason"] = "fail_access_tokens switch"
            return gh_error(self.control["fail_access_tokens"], "Server Error")
        if installation != str(INSTALLATION_ID):
            rec["reason"] = f"no installation {installation}"
            return gh_error(404, "Not Found")
        try:
            body = json.loads(body_text) if body_text.strip() else {}
        except ValueError:
            rec["reason"] = "body is not JSON"
            return gh_error(400, "Problems parsing JSON")
        errors = schema_errors(body)
        if errors:
            rec["reason"] = "schema: " + "; ".join(errors)
            rec["schema_errors"] = errors
            return gh_error(422, "Invalid request.\n\n" + "\n".join(errors))
        names = body.get("repositories")
        ids = body.get("repository_ids")
        selected = set()
        for n in names or []:
            full = f"{ACCOUNT['login']}/{n}"
            if full not in INSTALLED:
                rec["reason"] = f"repository {n!r} is not in the installation"
                return gh_error(
                    422,
                    "There is at least one repository that does not exist or is not accessible to the parent installation.",
                )
            selected.add(full)
        for i in ids or []:
            full = next((f for f in INSTALLED if REPOS[f]["id"] == i), None)
            if full is None:
                rec["reason"] = f"repository id {i} is not in the installation"
                return gh_error(
                    422,
                    "There is at least one repository that does not exist or is not accessible to the parent installation.",
                )
            selected.add(full)
        asked = body.get("permissions")
        if asked:
            for perm, level in asked.items():
                have = self.grant.get(perm)
                if have is None or LEVEL[level] > LEVEL[have]:
                    rec["reason"] = f"permission {perm}:{level} is beyond the grant {self.grant}"
                    return gh_error(
                        422, "The permissions requested are not granted to this installation."
                    )
            granted = dict(asked)
        else:
            granted = dict(self.grant)
        granted.setdefault("metadata", "read")
        all_repos = names is None and ids is None
        repos = sorted(INSTALLED if all_repos else selected)
        now = time.time()
        expires = int(now) + int(self.control["token_ttl"])
        token = new_token()
        info = {
            "token": token,
            "installation_id": INSTALLATION_ID,
            "repositories": [r.split("/")[1] for r in repos],
            "full_names": repos,
            "repository_ids": [REPOS[r]["id"] for r in repos],
            "requested_permissions": asked,
            "permissions": granted,
            "expires_at": iso(expires),
            "expires_at_unix": expires,
            "repository_selection": "all" if all_repos else "selected",
        }
        with self.lock:
            self.tokens[token] = info
            self.token_order.append(token)
        rec["issued"] = token
        answer = {
            "token": token,
            "expires_at": info["expires_at"],
            "permissions": granted,
            "repository_selection": info["repository_selection"],
        }
        if not all_repos:
            answer["repositories"] = [repo_json(r, host) for r in repos]
        return 201, answer

    # -------------------------------------------------------- repositories

    def token_for(self, headers, rec):
        """(info, None) or (None, (status, body))."""
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if not auth:
            rec["reason"] = "no Authorization"
            return None, gh_error(401, "Requires authentication")
        if scheme.lower() not in ("bearer", "token"):
            rec["reason"] = f"Authorization scheme {scheme!r}"
            return None, gh_error(401, "Bad credentials")
        info = self.tokens.get(token)
        if info is None:
            rec["reason"] = "unknown token"
            return None, gh_error(401, "Bad credentials")
        if info["expires_at_unix"] <= time.time():
            rec["reason"] = "expired token"
            return None, gh_error(401, "Bad credentials")
        rec["token"] = {k: v for k, v in info.items() if k != "token"}
        return info, None

    def repo_call(self, method, full_name, rest, body_text, host, headers, rec):
        info, err = self.token_for(headers, rec)
        if err:
            return err
        if full_name not in info["full_names"]:
            rec["reason"] = f"the token cannot see {full_name}"
            return gh_error(404, "Not Found")

        def need(perm, level):
            have = info["permissions"].get(perm)
            if have is None or LEVEL[have] < LEVEL[level]:
                rec["reason"] = f"the token lacks {perm}:{level} (has {info['permissions']})"
                return (
                    *gh_error(403, "Resource not accessible by integration"),
                    {"X-Accepted-GitHub-Permissions": f"{perm}={level}"},
                )
            return None

        if method == "GET" and rest == "":
            return need("metadata", "read") or (200, repo_json(full_name, host))
        if rest == "/issues" and method == "GET":
            return need("issues", "read") or (
                200,
                [self.issue_json(full_name, i, host) for i in self.issues[full_name]],
            )
        if rest == "/issues" and method == "POST":
            refused = need("issues", "write")
            if refused:
                return refused
            try:
                asked = json.loads(body_text or "{}")
            except ValueError:
                return gh_error(400, "Problems parsing JSON")
            if not isinstance(asked, dict) or not isinstance(asked.get("title"), str):
                return gh_error(422, "Validation Failed", errors=[{"code": "missing_field"}])
            with self.lock:
                issue = {
                    "number": len(self.issues[full_name]) + 1,
                    "title": asked["title"],
                    "state": "open",
                    "body": asked.get("body"),
                }
                self.issues[full_name].append(issue)
            return 201, self.issue_json(full_name, issue, host)
        if rest == "/keys" and method == "POST":
            refused = need("administration", "write")
            if refused:
                return refused
            try:
                asked = json.loads(body_text or "{}")
            except ValueError:
                return gh_error(400, "Problems parsing JSON")
            if not isinstance(asked, dict) or not isinstance(asked.get("key"), str):
                return gh_error(422, "Validation Failed", errors=[{"code": "missing_field"}])
            with self.lock:
                key_id = self.next_key_id
                self.next_key_id += 1
                key = {
                    "id": key_id,
                    "key": asked["key"],
                    "url": f"http://{host}/repos/{full_name}/keys/{key_id}",
                    "title": asked.get("title"),
                    "verified": True,
                    "created_at": iso(time.time()),
                    "read_only": bool(asked.get("read_only", False)),
                    "added_by": "keygate-test-app[bot]",
                    "last_used": None,
                    "enabled": True,
                }
                self.keys[full_name].append(key)
            return 201, key
        if rest == "/keys" and method == "GET":
            refused = need("administration", "read")
            if refused:
                return refused
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(rec["path"]).query)
            try:
                per_page = int(query.get("per_page", ["30"])[0])
                page = int(query.get("page", ["1"])[0])
            except ValueError:
                return gh_error(422, "Validation Failed")
            per_page = max(1, min(per_page, 100, int(self.control["max_per_page"])))
            page = max(1, page)
            with self.lock:
                keys = list(self.keys[full_name])
            chunk = keys[(page - 1) * per_page : page * per_page]
            extra = {}
            if page * per_page < len(keys):
                repo_id = REPOS[full_name]["id"]
                extra["Link"] = (
                    f'<http://{host}/repositories/{repo_id}/keys?per_page={per_page}&page={page + 1}>; rel="next"'
                )
            return 200, copy.deepcopy(chunk), extra
        m = re.fullmatch(r"/keys/(\d+)", rest)
        if m and method == "DELETE":
            refused = need("administration", "write")
            if refused:
                return refused
            fail = self.control["fail_delete_keys"]
            if fail:
                rec["reason"] = "fail_delete_keys switch"
                return gh_error(int(fail), "Server Error")
            key_id = int(m.group(1))
            with self.lock:
                before = len(self.keys[full_name])
                self.keys[full_name] = [k for k in self.keys[full_name] if k["id"] != key_id]
                gone = len(self.keys[full_name]) < before
            if not gone:
                rec["reason"] = f"no deploy key {key_id} in {full_name}"
                return gh_error(404, "Not Found")
            return 204, None
        if rest.startswith("/contents/") and method == "GET":
            refused = need("contents", "read")
            if refused:
                return refused
            path = rest[len("/contents/") :]
            data = self.contents[full_name].get(path)
            if data is None:
                return gh_error(404, "Not Found")
            return 200, {
                "type": "file",
                "encoding": "base64",
                "size": len(data),
                "name": path.rsplit("/", 1)[-1],
                "path": path,
                "content": base64.b64encode(data).decode(),
                "sha": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
                "url": f"http://{host}/repos/{full_name}/contents/{path}",
            }
        refused = need("metadata", "read")
        if refused:
            return refused
        rec["reason"] = f"no such endpoint: {method} /repos/{full_name}{rest}"
        return gh_error(404, "Not Found")

    def issue_json(self, full_name, issue, host):
        return {
            "id": REPOS[full_name]["id"] * 1000 + issue["number"],
            "number": issue["number"],
            "title": issue["title"],
            "state": issue["state"],
            "body": issue["body"],
            "url": f"http://{host}/repos/{full_name}/issues/{issue['number']}",
            "repository_url": f"http://{host}/repos/{full_name}",
            "labels": [],
            "assignees": [],
            "comments": 0,
            "locked": False,
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "user": {"login": "octocat", "id": 1, "type": "User"},
        }

    # -------------------------------------------------------- dispatch

    def handle(self, method, target, headers, body_text, host):
        """(status, body, extra headers, record or None)."""
        path = target.split("?", 1)[0]
        if path.startswith("/_standin/"):
            return self.handle_standin(method, path, body_text) + (None,)
        rec = {"method": method, "path": target, "body": body_text, "time": time.time()}
        version = headers.get("x-github-api-version")
        if version is not None and version not in API_VERSIONS:
            rec["reason"] = f"unsupported API version {version!r}"
            rec["kind"] = "other"
            status, body = gh_error(400, f"API version {version} is not supported.")
            return status, body, {}, rec
        result = self.route(method, path, body_text, host, headers, rec)
        status, body = result[0], result[1]
        extra = result[2] if len(result) > 2 else {}
        return status, body, extra, rec

    def route(self, method, path, body_text, host, headers, rec):
        m = re.fullmatch(r"/app/installations/([^/]+)/access_tokens", path)
        if m:
            rec["kind"] = "access_tokens"
            if method != "POST":
                return gh_error(404, "Not Found")
            return self.access_tokens(m.group(1), body_text, host, headers, rec)
        if path == "/app" or path.startswith("/app/"):
            rec["kind"] = "app"
            claims, err = self.verify_app_jwt(headers)
            if err:
                rec["reason"] = err[2]
                return err[0], err[1]
            rec["app_jwt"] = claims
            if method == "GET" and path == "/app":
                return 200, {"id": int(self.app_id), "slug": "keygate-test-app"}
            if method == "GET" and path == "/app/installations":
                return 200, [self.installation_json(host)]
            if method == "GET" and path == f"/app/installations/{INSTALLATION_ID}":
                return 200, self.installation_json(host)
            return gh_error(404, "Not Found")
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)/installation", path)
        if m and method == "GET":
            rec["kind"] = "installation"
            full = f"{m.group(1)}/{m.group(2)}"
            if full not in REPOS:
                claims, err = self.verify_app_jwt(headers)
                if err:
                    rec["reason"] = err[2]
                    return err[0], err[1]
                rec["reason"] = f"no repository {full}"
                return gh_error(404, "Not Found")
            return self.installation_lookup(m.group(1), full, host, headers, rec)
        m = re.fullmatch(r"/(orgs|users)/([^/]+)/installation", path)
        if m and method == "GET":
            rec["kind"] = "installation"
            return self.installation_lookup(m.group(2), None, host, headers, rec)
        rec["kind"] = "api"
        if path == "/installation/token":
            # Revokes the installation token used (GitHub: 204; it stops working).
            info, err = self.token_for(headers, rec)
            if err:
                return err
            if method != "DELETE":
                return gh_error(404, "Not Found")
            info["revoked"] = True
            info["expires_at_unix"] = 0
            return 204, None
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", path)
        if m:
            full = f"{m.group(1)}/{m.group(2)}"
            rest = m.group(3) or ""
        else:
            m = re.fullmatch(r"/repositories/(\d+)(/.*)?", path)
            if not m:
                info, err = self.token_for(headers, rec)
                if err:
                    return err
                rec["reason"] = f"no such endpoint: {method} {path}"
                return gh_error(404, "Not Found")
            full = next((f for f, r in REPOS.items() if r["id"] == int(m.group(1))), None)
            rest = m.group(2) or ""
        # GitHub matches owner and repository names case-insensitively.
        full = next((f for f in REPOS if f.lower() == (full or "").lower()), None)
        if full is None:
            info, err = self.token_for(headers, rec)
            if err:
                return err
            rec["reason"] = "no such repository"
            return gh_error(404, "Not Found")
        return self.repo_call(method, full, rest.rstrip("/"), body_text, host, headers, rec)

    def handle_standin(self, method, path, body_text):
        try:
            asked = json.loads(body_text) if body_text.strip() else {}
        except ValueError:
            return 400, {"message": "body is not JSON"}, {}
        if method == "GET" and path == "/_standin/requests":
            with self.lock:
                return 200, {"requests": copy.deepcopy(self.records)}, {}
        if method == "POST" and path == "/_standin/reset":
            with self.lock:
                self.records.clear()
            return 200, {"ok": True}, {}
        if method == "GET" and path == "/_standin/keys":
            with self.lock:
                return 200, {"keys": copy.deepcopy(self.keys)}, {}
        if method == "GET" and path == "/_standin/tokens":
            with self.lock:
                return 200, {"tokens": [self.tokens[t] for t in self.token_order]}, {}
        if method == "POST" and path == "/_standin/control":
            unknown = set(asked) - set(self.control)
            if unknown:
                return 400, {"message": f"unknown switches {sorted(unknown)}"}, {}
            with self.lock:
                self.control.update(asked)
                return 200, dict(self.control), {}
        if method == "POST" and path == "/_standin/instances":
            inst = Instance(
                asked.get("app_id", self.app_id),
                asked.get("public_key", self.public_key),
                asked.get("grant"),
            )
            port = serve(inst)
            return 201, {"port": port}, {}
        if method == "POST" and path == "/_standin/shutdown":
            threading.Thread(target=self.stop, daemon=True).start()
            return 200, {"ok": True}, {}
        return 404, {"message": "no such stand-in endpoint"}, {}

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def record(self, rec):
        with self.lock:
            self.seq += 1
            rec["seq"] = self.seq
            self.records.append(rec)


# ---------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GitHub.com"
    sys_version = ""

    def log_message(self, fmt, *args):
        sys.stderr.write("standin %s: %s\n" % (self.server.server_address[1], fmt % args))

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            out = b""
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def dispatch(self):
        inst = self.server.instance
        raw = self.read_body()
        body_text = raw.decode("utf-8", errors="replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        host = headers.get("host", "api.github.com")
        try:
            status, body, extra, rec = inst.handle(self.command, self.path, headers, body_text, host)
        except Exception as e:  # a bug of the stand-in: say so loudly
            import traceback

            traceback.print_exc()
            status, body, extra, rec = 500, {"message": f"stand-in bug: {e!r}"}, {}, None
        # 204 carries no body.
        data = b"" if status == 204 else json.dumps(body).encode()
        if rec is not None:
            rec["headers"] = [[k, v] for k, v in self.headers.items()]
            rec["status"] = status
            rec["response"] = body
            inst.record(rec)
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
        self.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
        self.send_header("X-GitHub-Request-Id", secrets.token_hex(8).upper())
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = dispatch


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def serve(inst, port=0):
    server = Server(("127.0.0.1", port), Handler)
    server.instance = inst
    inst.server = server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--app-id", required=True)
    p.add_argument("--public-key", required=True, help="PEM file of the App's public key")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    with open(a.public_key, encoding="utf-8") as f:
        public_key = f.read()
    inst = Instance(a.app_id, public_key)
    port = serve(inst, a.port)
    from importlib.metadata import version

    emit(
        {
            "port": port,
            "openapi_version": OPENAPI_VERSION,
            "openapi_spec": OPENAPI_SPEC_VERSION,
            "openapi_file": os.path.relpath(OPENAPI_FILE, HERE),
            "pygithub": version("PyGithub"),
            "pyjwt": version("PyJWT"),
            "jsonschema": version("jsonschema"),
        }
    )
    sys.stdin.read()  # until the test process exits
    os._exit(0)


if __name__ == "__main__":
    main()
