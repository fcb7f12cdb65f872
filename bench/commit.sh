#!/bin/bash
# Commit benchmark: `fim-layer commit file` on a 500 MiB writable layer
# against mksquashfs with the same compressor and level on the same tree,
# measured in one run, with the size of both results.
#
# Usage: bench/commit.sh [RUNS]
#
# The tree is half text (compressible) and half random data (not), in
# 2,000 files. Run as an ordinary user; RUNS defaults to 3.
set -euo pipefail

repository=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
runs=${1:-3}

for tool in hyperfine mksquashfs python3; do
    command -v "$tool" >/dev/null || { echo "commit.sh: '$tool' not found; run tools/deps.sh" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'chmod -R u+rwX "$work" 2>/dev/null; rm -rf "$work"' EXIT

echo "commit.sh: writing the 500 MiB tree in $work" >&2
python3 - "$work/tree" <<'PY'
import os
import random
import sys

root = sys.argv[1]
rng = random.Random(7)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))) for _ in range(5000)]
for i in range(2000):
    directory = os.path.join(root, f"d{i % 40}")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"f{i}"), "wb") as f:
        if i % 2:
            f.write(os.urandom(256 * 1024))
        else:
            f.write(b" ".join(rng.choice(words) for _ in range(40000))[: 256 * 1024])
PY

image=$work/bench.flatimage
cp "$repository/build/flatimage" "$image"
export FIM_DIR_DATA=$work/data
level=$((1 + 7 * 2)) # FIM_COMPRESSION_LEVEL's default, 7, as a zstd level

# Each run starts from the tree hard-linked into the writable layer, which
# costs no copying; the commit then empties the writable layer again.
cat >"$work/prepare.sh" <<PREPARE
#!/bin/sh
rm -rf "$work/out.layer" "$work/out.sqfs" "$FIM_DIR_DATA"
mkdir -p "$FIM_DIR_DATA"
cp -al "$work/tree" "$FIM_DIR_DATA/upper"
PREPARE
chmod +x "$work/prepare.sh"

hyperfine --style none -N --runs "$runs" --prepare "$work/prepare.sh" --export-json "$work/result.json" \
    --command-name "fim-layer commit" "$image fim-layer commit file $work/out.layer" \
    --command-name "mksquashfs" "mksquashfs $work/tree $work/out.sqfs -noappend -comp zstd -Xcompression-level $level -quiet -no-progress" \
    >/dev/null

# The prepare step deletes the outputs, so make both once more for sizes.
"$work/prepare.sh"
"$image" fim-layer commit file "$work/out.layer" >/dev/null
mksquashfs "$work/tree" "$work/out.sqfs" -noappend -comp zstd -Xcompression-level "$level" -quiet -no-progress

python3 - "$work" <<'PY'
import json
import os
import sys

work = sys.argv[1]
results = {r["command"]: r["median"] for r in json.load(open(os.path.join(work, "result.json")))["results"]}
commit = results["fim-layer commit"]
stock = results["mksquashfs"]
commit_size = os.path.getsize(os.path.join(work, "out.layer"))
stock_size = os.path.getsize(os.path.join(work, "out.sqfs"))
print(f"{'':<18} {'median s':>9} {'size MiB':>9}")
print(f"{'fim-layer commit':<18} {commit:>9.2f} {commit_size / 2**20:>9.1f}")
print(f"{'mksquashfs':<18} {stock:>9.2f} {stock_size / 2**20:>9.1f}")
print(f"ratio: time {commit / stock:.2f}, size {commit_size / stock_size:.3f}")
PY
