#!/bin/bash
# Three commits: the calculator, a multiply command, and a "cleanup" that breaks add.
set -euo pipefail
cd "$1"
git init -q -b main
cat > calc.py <<'PY'
import sys

op, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if op == "add":
    print(a + b)
PY
git add calc.py && git commit -q -m "calc: add"
cat >> calc.py <<'PY'
elif op == "mul":
    print(a * b)
PY
git commit -q -am "calc: mul"
sed -i 's/print(a + b)/print(a - b)/' calc.py
git commit -q -am "calc: tidy up"
