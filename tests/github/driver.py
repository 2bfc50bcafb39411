"""PyGithub run as an agent runs it, for tests/github_app.rs: one command per process.

The agent knows two things, from its environment: GITHUB_BASE_URL (keygate's prefix of
the GitHub tool, `http://127.0.0.1:PORT/tools/github`, or the stand-in itself) and
GITHUB_TOKEN (its keygate JWT, or for the harness a `ghs_` token). It uses them the
ordinary way:

    Github(base_url=GITHUB_BASE_URL, auth=Auth.Token(GITHUB_TOKEN))

so PyGithub sends `Authorization: token <GITHUB_TOKEN>`. Retries and PyGithub's own
throttling are off, so what reached the server is exactly one request per call.

Every command prints one JSON line on stdout: {"ok": <result>} and exits 0, or, when
PyGithub raised a GithubException, {"error": {"status", "data", "message", "type"}}
(the HTTP status, the response body as PyGithub parsed it, PyGithub's exception class)
and exits 1. Anything else is a bug of the test: a traceback and exit 2.

Commands (REPO is owner/name):
  get-repo REPO                       Github.get_repo: GET /repos/{owner}/{repo}
  list-issues REPO                    Repository.get_issues(): GET /repos/{o}/{r}/issues
  create-issue REPO --title T         Repository.create_issue: POST /repos/{o}/{r}/issues
  create-deploy-key REPO --title T --key K [--read-only]
                                      Repository.create_key: POST /repos/{o}/{r}/keys
  get-contents REPO PATH              Repository.get_contents: GET /repos/{o}/{r}/contents/PATH
  concurrent --n N list-issues REPO   N list-issues at once (threads released together by
                                      a barrier, a client each): a list of "ok" or statuses
"""

import argparse
import json
import os
import sys
import threading

from github import Auth, Github, GithubException


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def client(lazy=True):
    return Github(
        base_url=os.environ["GITHUB_BASE_URL"],
        auth=Auth.Token(os.environ["GITHUB_TOKEN"]),
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
        timeout=30,
        lazy=lazy,
    )


def repo(g, full_name):
    # Lazy (the client's default here): no request until a call is made, and the call's
    # URL is built from base_url. A repository fetched first would take its URLs from the
    # `url` fields of GitHub's answer, which name the stand-in, not keygate.
    return g.get_repo(full_name)


def get_repo(a):
    r = client(lazy=False).get_repo(a.repo)
    return {"id": r.id, "full_name": r.full_name, "private": r.private}


def list_issues(a):
    return [{"number": i.number, "title": i.title} for i in repo(client(), a.repo).get_issues()]


def create_issue(a):
    i = repo(client(), a.repo).create_issue(title=a.title)
    return {"number": i.number, "title": i.title}


def create_deploy_key(a):
    k = repo(client(), a.repo).create_key(title=a.title, key=a.key, read_only=a.read_only)
    return {"id": k.id, "title": k.title, "read_only": k.read_only}


def get_contents(a):
    c = repo(client(), a.repo).get_contents(a.path)
    return {"path": c.path, "decoded": c.decoded_content.decode()}


def concurrent(a):
    barrier = threading.Barrier(a.n)
    out = [None] * a.n
    clients = [client() for _ in range(a.n)]

    def one(i):
        barrier.wait()
        try:
            list(repo(clients[i], a.repo).get_issues())
            out[i] = "ok"
        except GithubException as e:
            out[i] = e.status

    threads = [threading.Thread(target=one, args=(i,)) for i in range(a.n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("get-repo").add_argument("repo")
    sub.add_parser("list-issues").add_argument("repo")
    ci = sub.add_parser("create-issue")
    ci.add_argument("repo")
    ci.add_argument("--title", required=True)
    dk = sub.add_parser("create-deploy-key")
    dk.add_argument("repo")
    dk.add_argument("--title", required=True)
    dk.add_argument("--key", required=True)
    dk.add_argument("--read-only", action="store_true")
    gc = sub.add_parser("get-contents")
    gc.add_argument("repo")
    gc.add_argument("path")
    cc = sub.add_parser("concurrent")
    cc.add_argument("--n", type=int, default=20)
    cc.add_argument("what", choices=["list-issues"])
    cc.add_argument("repo")
    a = p.parse_args()
    fn = {
        "get-repo": get_repo,
        "list-issues": list_issues,
        "create-issue": create_issue,
        "create-deploy-key": create_deploy_key,
        "get-contents": get_contents,
        "concurrent": concurrent,
    }[a.cmd]
    try:
        result = fn(a)
    except GithubException as e:
        emit(
            {
                "error": {
                    "status": e.status,
                    "data": e.data,
                    "message": e.message,
                    "type": type(e).__name__,
                }
            }
        )
        sys.exit(1)
    emit({"ok": result})


if __name__ == "__main__":
    main()
