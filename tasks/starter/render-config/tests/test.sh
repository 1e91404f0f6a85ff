#!/bin/bash
# Harbor verifier: app.ini is the template with the three values filled in; the template is untouched
mkdir -p /logs/verifier
cd /root/project
want=$(sed -e 's/{{PORT}}/8080/g' -e 's/{{MODE}}/production/g' -e 's/{{WORKERS}}/4/g' app.ini.template)
if [ -f app.ini ] && [ "$(cat app.ini)" = "$want" ] && grep -q '{{PORT}}' app.ini.template; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
