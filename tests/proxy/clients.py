"""Unmodified HTTP clients as an agent runs them, configured only by the environment
(HTTPS_PROXY / HTTP_PROXY with the agent token in the URL, and the CA variable each
client reads). Nothing here knows about keygate.

usage: clients.py requests|httpx METHOD URL [URL ...]
All URLs go through one client (one session: keep-alive, so one tunnel); prints one JSON
line: {"results": [{"status": N, "body": "...", "http_version": "..."} | {"error": "..."}]}
"""

import json
import sys


def with_requests(method, urls):
    import requests

    out = []
    with requests.Session() as s:
        for url in urls:
            try:
                r = s.request(method, url, timeout=30)
                out.append({"status": r.status_code, "body": r.text, "http_version": "1.1"})
            except Exception as e:  # the test reads the error
                out.append({"error": f"{type(e).__name__}: {e}"})
    return out


def with_httpx(method, urls):
    import httpx

    out = []
    with httpx.Client(timeout=30) as c:
        for url in urls:
            try:
                r = c.request(method, url)
                out.append({"status": r.status_code, "body": r.text, "http_version": r.http_version})
            except Exception as e:
                out.append({"error": f"{type(e).__name__}: {e}"})
    return out


def main():
    client, method, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
    fn = {"requests": with_requests, "httpx": with_httpx}[client]
    print(json.dumps({"results": fn(method, urls)}))


if __name__ == "__main__":
    main()
