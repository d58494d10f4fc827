#!/bin/sh
# certbot deploy hook: runs after each successful renewal, so nginx serves the new certificate.
set -e
nginx -t -q
systemctl reload nginx
