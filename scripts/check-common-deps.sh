#!/usr/bin/env bash
# wa_common is the platform-facing contracts crate: it must never pull a web framework, an ORM or
# a broker client (style guide §A.3).
set -euo pipefail
tree=$(cargo tree -p wa_common -e normal --prefix none --format '{p}')
if echo "$tree" | grep -E '^(actix-web|actix-http|diesel|diesel-async|lapin) ' >&2; then
  echo "wa_common must not depend on actix-web, diesel or lapin (see above)" >&2
  exit 1
fi
echo "wa_common is free of actix-web, diesel and lapin"
