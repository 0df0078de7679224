#!/usr/bin/env bash
# Formats every C and C++ file of the tree with clang-format-14 and the
# repository's .clang-format (the arbiter of layout; STYLE.md covers the
# rest). --check changes nothing and fails, naming the files, when one is
# not formatted (scripts/test.sh runs it first).
set -euo pipefail
cd "$(dirname "$0")/.."
formatter=clang-format-14
command -v "$formatter" >/dev/null || { echo "format.sh: $formatter missing (scripts/setup.sh installs it)" >&2; exit 1; }
mapfile -t files < <(git ls-files '*.cpp' '*.hpp' '*.h' '*.c')
if [ "${1:-}" = "--check" ]; then
    bad=()
    for f in "${files[@]}"; do
        "$formatter" --style=file --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
    done
    if [ ${#bad[@]} -gt 0 ]; then
        echo "format.sh: not formatted (run ./scripts/format.sh):" >&2
        printf '  %s\n' "${bad[@]}" >&2
        exit 1
    fi
    echo "format.sh: ${#files[@]} files formatted"
    exit 0
fi
"$formatter" --style=file -i "${files[@]}"
