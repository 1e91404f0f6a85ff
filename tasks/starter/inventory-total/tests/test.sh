#!/bin/bash
# Harbor verifier: reward 1 when total.txt holds the stock's value
mkdir -p /logs/verifier
want=$(python3 - <<'PY'
import csv
rows = csv.DictReader(open("/srv/inventory/stock.csv"))
print(f"{sum(int(r['qty'] or 0) * float(r['unit_price']) for r in rows):.2f}")
PY
)
got=$(tr -d ' \n' < /srv/inventory/total.txt 2>/dev/null)
echo "want $want, got ${got:-nothing}"
if [ "$got" = "$want" ]; then echo 1 > /logs/verifier/reward.txt; else echo 0 > /logs/verifier/reward.txt; fi
