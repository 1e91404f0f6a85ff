#!/usr/bin/env bash
# The real agent clients rigbench's tests drive through `eval --agent-cmd`, at pinned versions:
#   Claude Code (npm, global: `claude`), mini-swe-agent and aider (PyPI, each in a virtualenv of its own,
#   their pins clash with rigbench's), opencode (npm, global: `opencode`).
# The Python agents land in $RIGBENCH_AGENTS/NAME/bin (default /opt/rigbench/agents as root, readable by the
# sandbox's unprivileged user; ~/.local/share/rigbench/agents otherwise); tests find them there. Re-running is
# cheap: what is installed at the pinned version is kept.
set -uo pipefail
CLAUDE_CODE=2.1.332
MINI_SWE_AGENT=2.4.6
AIDER=0.86.2
OPENCODE=1.18.33
if [ "$(id -u)" = 0 ]; then DEFAULT=/opt/rigbench/agents; else DEFAULT=$HOME/.local/share/rigbench/agents; fi
DIR=${RIGBENCH_AGENTS:-$DEFAULT}
# the sandbox's unprivileged user runs these: a system interpreter (not one under /root, e.g. pyenv's)
if [ -z "${PY:-}" ]; then
  if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null; then PY=/usr/bin/python3
  else PY=python3; fi
fi
mkdir -p "$DIR"

npm_global() {   # package version binary
  if command -v "$3" >/dev/null 2>&1 && "$3" --version 2>/dev/null | grep -q "$2"; then return 0; fi
  command -v npm >/dev/null 2>&1 || { echo "npm missing: $1 not installed (apt-get install npm)"; return 1; }
  npm install -g --silent "$1@$2" >/dev/null 2>&1 && echo "installed $1 $2" || echo "could not install $1 $2"
}

venv_agent() {   # name pip-spec version-binary
  local v="$DIR/$1"
  if [ -x "$v/bin/$3" ] && [ -f "$v/.version" ] && [ "$(cat "$v/.version")" = "$2" ]; then return 0; fi
  rm -rf "$v"
  "$PY" -m venv "$v" && "$v/bin/pip" install -q --disable-pip-version-check "$2" >/dev/null 2>&1 \
    && echo "$2" > "$v/.version" && echo "installed $2 in $v" || echo "could not install $2"
}

npm_global @anthropic-ai/claude-code "$CLAUDE_CODE" claude
npm_global opencode-ai "$OPENCODE" opencode
venv_agent mini-swe-agent "mini-swe-agent==$MINI_SWE_AGENT" mini
venv_agent aider "aider-chat==$AIDER" aider
exit 0
