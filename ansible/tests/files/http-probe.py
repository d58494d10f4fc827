#!/usr/bin/python3
"""HTTP check run inside the test container: http-probe.py METHOD URL STATUS [TEXT].

Retries for up to 10 s, because an nginx reload returns before the new workers serve; exits 0
once the answer has STATUS (and contains TEXT), else prints the last answer and exits 1.
"""
import sys
import time
import urllib.error
import urllib.request

method, url, want_status = sys.argv[1], sys.argv[2], int(sys.argv[3])
want_text = sys.argv[4] if len(sys.argv) > 4 else ""
last = "no answer"
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            status, body = response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode(errors="replace")
    except OSError as error:
        status, body = None, str(error)
    last = f"{status} {body.strip()[:200]!r}"
    if status == want_status and want_text in body:
        print(f"  {method} {url} -> {last}")
        sys.exit(0)
    time.sleep(0.1)
print(f"  {method} {url}: expected {want_status} {want_text!r}, last answer {last}", file=sys.stderr)
sys.exit(1)
