#!/bin/bash
set -euo pipefail
cd /srv/inventory
python3 - > total.txt <<'PY'
import csv

rows = csv.DictReader(open("stock.csv"))
print(f"{sum(int(r['qty'] or 0) * float(r['unit_price']) for r in rows):.2f}")
PY
