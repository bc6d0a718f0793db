#!/usr/bin/env bash
# Renders a scenario's report.html in headless Chromium (Debian's package) and checks that the
# page shows its timeline: the PNG must exist and hold more than a blank page's colours.
# Usage: scripts/screenshot-report.sh REPORT_DIR [OUT.png]
set -euo pipefail
dir=${1:?usage: $0 REPORT_DIR [OUT.png]}
out=${2:-$dir/report.png}
command -v chromium >/dev/null || { apt-get update -q && apt-get install -yq chromium; }
[ -f "$dir/report.html" ] || { echo "no $dir/report.html"; exit 1; }
grep -q '<svg' "$dir/report.html" || { echo "report.html has no SVG timeline"; exit 1; }
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,900 \
  --screenshot="$out" "file://$(realpath "$dir/report.html")" >/dev/null 2>&1
[ -s "$out" ] || { echo "chromium wrote no screenshot"; exit 1; }
# The role colours of the timeline (leader green, follower blue) must be on the page.
python3 - "$out" <<'PY'
import sys, zlib, struct
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
pos, idat, w, h = 8, b'', 0, 0
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos+8]); body = data[pos+8:pos+8+n]; pos += 12 + n
    if kind == b'IHDR': w, h, depth, ctype = struct.unpack('>IIBB', body[:10])
    if kind == b'IDAT': idat += body
raw = zlib.decompress(idat); bpp = 4 if ctype == 6 else 3; stride = w * bpp + 1
rows, prev = [], bytearray(w * bpp)
for y in range(h):
    f, line = raw[y*stride], bytearray(raw[y*stride+1:(y+1)*stride])
    for i in range(len(line)):
        a = line[i-bpp] if i >= bpp else 0; b = prev[i]; c = prev[i-bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p-a), abs(p-b), abs(p-c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(bytes(line)); prev = line
def count(rgb):
    return sum(1 for r in rows for x in range(0, len(r), bpp) if tuple(r[x:x+3]) == rgb)
green, blue = count((0x2e, 0x7d, 0x32)), count((0x1e, 0x88, 0xe5))
print(f"screenshot {sys.argv[1]}: {w}x{h}, leader-green px {green}, follower-blue px {blue}")
assert green > 500 and blue > 500, 'the timeline is not visible'
PY
