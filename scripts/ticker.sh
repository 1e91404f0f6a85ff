#!/bin/sh
# ticker.sh WHAT MINUTES CMD...: run CMD, saying every minute how long it has run against the expected time.
what=$1; expect=$2; shift 2
start=$(date +%s)
"$@" &
pid=$!
ticks=0
while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    ticks=$((ticks + 1))
    if [ $((ticks % 30)) = 0 ] && kill -0 "$pid" 2>/dev/null; then
        echo "  ... $what: $(( ($(date +%s) - start) / 60 )) min so far (expected about $expect min)"
    fi
done
wait "$pid"
rc=$?
s=$(( $(date +%s) - start ))
echo "  $what: finished in $((s / 60)) min $((s % 60)) s (exit $rc)"
exit $rc
