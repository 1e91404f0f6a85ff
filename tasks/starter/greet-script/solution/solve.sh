#!/bin/bash
set -euo pipefail
cat > /workspace/greet.sh <<'SH'
#!/bin/bash
echo "Hello, ${1:-world}!"
SH
chmod +x /workspace/greet.sh
