#!/bin/bash
set -euo pipefail
cd /app
tr 'A-Z' 'a-z' < notes.txt | grep -oE '[a-z]+' | sort | uniq -c | awk '{print $2, $1}' \
  | sort -k2,2nr -k1,1 | head -10 > top_words.txt
