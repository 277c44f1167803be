#!/usr/bin/env bash
# Checks that crates/db/src/schema.rs is what `diesel print-schema` generates
# from migrations/: creates a scratch database, runs every migration with the
# diesel CLI, prints the schema, diffs it against the committed file and drops
# the scratch database. Exits 0 when up to date, 1 when stale, 2 on setup errors.
# Installs nothing (`make tools` does).
#
#   scripts/check-schema.sh           check (CI)
#   scripts/check-schema.sh --write   regenerate schema.rs instead (`make schema`)
#
#   SCHEMA_CHECK_SERVER_URL  server to use (default postgres://postgres@127.0.0.1:5432)
set -euo pipefail

mode=check
case "${1:-}" in
    "") ;;
    --write) mode=write ;;
    *) echo "usage: $0 [--write]" >&2; exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."

schema_file="crates/db/src/schema.rs"
server_url="${SCHEMA_CHECK_SERVER_URL:-postgres://postgres@127.0.0.1:5432}"
server_url="${server_url%/}"

if ! command -v diesel >/dev/null 2>&1; then
    echo "check-schema: the diesel CLI is not installed (needed: diesel_cli with the postgres feature," >&2
    echo "check-schema: e.g. 'cargo install diesel_cli --no-default-features --features postgres')." >&2
    exit 2
fi

scratch_db="wa_schema_check_$$_${RANDOM}"
scratch_url="${server_url}/${scratch_db}"
work_dir="$(mktemp -d)"

cleanup() {
    diesel database drop --database-url "$scratch_url" >/dev/null 2>&1 || \
        echo "check-schema: warning: could not drop scratch database ${scratch_db}" >&2
    rm -rf "$work_dir"
}
trap cleanup EXIT

# A config without [print_schema] file, so running the migrations cannot
# rewrite the committed schema.rs (which would hide staleness).
cat >"$work_dir/diesel.toml" <<TOML
[migrations_directory]
dir = "$(pwd)/migrations"
TOML

if ! diesel --config-file "$work_dir/diesel.toml" database setup --no-default-migration \
        --database-url "$scratch_url" >"$work_dir/setup.log" 2>&1; then
    cat "$work_dir/setup.log" >&2
    echo "check-schema: could not create ${scratch_db} or run the migrations on ${server_url} (see above)." >&2
    exit 2
fi

# print-schema reads the real diesel.toml for its options and writes to stdout.
if ! diesel print-schema --database-url "$scratch_url" >"$work_dir/schema.rs" 2>"$work_dir/print.log"; then
    cat "$work_dir/print.log" >&2
    echo "check-schema: diesel print-schema failed (see above)." >&2
    exit 2
fi

if [ "$mode" = write ]; then
    if cmp -s "$work_dir/schema.rs" "$schema_file"; then
        echo "check-schema: ${schema_file} was already up to date."
    else
        cp "$work_dir/schema.rs" "$schema_file"
        echo "check-schema: regenerated ${schema_file} from migrations/."
    fi
    exit 0
fi

if ! diff -u "$schema_file" "$work_dir/schema.rs" >"$work_dir/schema.diff"; then
    cat "$work_dir/schema.diff"
    echo >&2
    echo "check-schema: ${schema_file} is STALE: it differs from what the migrations generate (diff above)." >&2
    echo "check-schema: regenerate it with 'make schema' (scripts/check-schema.sh --write); never edit it by hand." >&2
    exit 1
fi

echo "check-schema: ${schema_file} is up to date with migrations/."
