#!/bin/bash
# Harbor verifier with reward.json: the share of names greeted right, and each check by name.
# GREET_NAMES and GREET_SCRIPT come from task.toml's [verifier] env.
mkdir -p /logs/verifier
IFS=, read -ra names <<< "${GREET_NAMES:?[verifier] env did not reach the verifier}"
passed=0
for n in "${names[@]}" ""; do
  want="Hello, ${n:-world}!"
  if [ -n "$n" ]; then got=$("$GREET_SCRIPT" "$n" 2>&1); else got=$("$GREET_SCRIPT" 2>&1); fi
  echo "want [$want] got [$got]"
  [ "$got" = "$want" ] && passed=$((passed + 1))
done
total=$(( ${#names[@]} + 1 ))
python3 -c "import json, sys; p, t = int(sys.argv[1]), int(sys.argv[2]);
print(json.dumps({'reward': 1.0 if p == t else 0.0, 'passed': p, 'total': t}))" "$passed" "$total" \
  > /logs/verifier/reward.json
