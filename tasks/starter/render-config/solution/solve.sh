#!/bin/bash
set -euo pipefail
cd /root/project
sed -e 's/{{PORT}}/8080/g' -e 's/{{MODE}}/production/g' -e 's/{{WORKERS}}/4/g' app.ini.template > app.ini
