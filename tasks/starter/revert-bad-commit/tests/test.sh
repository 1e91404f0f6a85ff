#!/bin/bash
# Harbor verifier: add and mul work, the three original commits are kept, one new commit on top
mkdir -p /logs/verifier
cd /usr/src/calc
add=$(python3 calc.py add 2 3 2>&1); mul=$(python3 calc.py mul 4 5 2>&1)
commits=$(git rev-list --count HEAD 2>/dev/null)
kept=$(git log --format=%s 2>/dev/null | grep -c '^calc: ')
echo "add=$add mul=$mul commits=$commits kept=$kept"
if [ "$add" = 5 ] && [ "$mul" = 20 ] && [ "$commits" = 4 ] && [ "$kept" -ge 3 ] && git diff --quiet HEAD; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
