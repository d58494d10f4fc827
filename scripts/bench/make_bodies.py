#!/usr/bin/env python3
"""Writes signed 20 KB pull_request deliveries for scripts/bench-webhooks.sh.

Usage: make_bodies.py FIXTURE SECRET OUT [PRS] [SHAS]

Each line of OUT is "sha256=<hmac>\t<compact JSON body>". Bodies are the real `synchronize` example
(from @octokit/webhooks-examples), trimmed or padded to exactly 20,480 bytes, one per (PR, sha):
line i is PR (i mod PRS)+1 at sha number i div PRS, so consecutive deliveries of a PR always carry
a new commit (the expensive path: store write, supersede, a job).
"""
import hashlib
import hmac
import json
import sys

SIZE = 20 * 1024


def main():
    fixture, secret, out = sys.argv[1:4]
    prs = int(sys.argv[4]) if len(sys.argv) > 4 else 32
    shas = int(sys.argv[5]) if len(sys.argv) > 5 else 32
    base = json.load(open(fixture))
    # The example is 22.9 KB compact: shrink it below 20 KB by dropping the `*_url` link fields
    # of the embedded user objects (fields we never read), then pad the PR body to the size.
    users = [base["sender"], base["repository"]["owner"], base["pull_request"]["user"]]
    for side in ("head", "base"):
        users += [base["pull_request"][side]["user"], base["pull_request"][side]["repo"]["owner"]]
    for user in users:
        for key in [k for k in user if k.endswith("_url") and k != "html_url"]:
            del user[key]
    base["pull_request"]["updated_at"] = "2024-05-01T10:00:00Z"
    with open(out, "w") as f:
        for i in range(prs * shas):
            pr, k = i % prs + 1, i // prs
            ev = json.loads(json.dumps(base))
            ev["action"] = "synchronize"
            ev["number"] = pr
            ev["pull_request"]["number"] = pr
            ev["pull_request"]["head"]["sha"] = "%020x%020x" % (pr, k)
            ev["pull_request"]["body"] = ""
            raw = json.dumps(ev, separators=(",", ":"))
            pad = SIZE - len(raw.encode())
            if pad < 0:
                sys.exit("fixture too large for %d bytes (%d)" % (SIZE, len(raw)))
            ev["pull_request"]["body"] = "x" * pad
            body = json.dumps(ev, separators=(",", ":")).encode()
            assert len(body) == SIZE, len(body)
            sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            f.write("sha256=%s\t%s\n" % (sig, body.decode()))


if __name__ == "__main__":
    main()
