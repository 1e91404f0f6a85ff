#!/usr/bin/env bash
# A Docker daemon and the base image that the Docker tests and the starter tasks build FROM, on a machine
# where no registry of images is reachable (CI). Each step is skipped when its result is already there:
#   1. docker.io (and debootstrap) from apt-get, as root, when dockerd is missing;
#   2. a daemon, when none answers: overlay2 where the kernel mounts it (a container starts in about 1 s),
#      else vfs (every container copies its whole image: 10-20 s on 2 cores); --iptables=false --bridge=none,
#      so containers get no network of their own (a task that asks for the network runs offline, with a note);
#   3. debian:bookworm-slim, made with debootstrap (minbase with python3 and git; apt lists, docs and locales
#      removed as in the published slim image) and `docker import`, its tar kept in $RIGBENCH_CACHE/docker
#      so a second daemon (or a new driver) imports it in seconds instead of bootstrapping again.
# Prints one line per step; exits 0 even when Docker cannot be had (the Docker tests then skip with the reason).
# A daemon it starts keeps running; its pid is in $DOCKERD_PIDFILE for the caller to stop.
set -uo pipefail
IMAGE=debian:bookworm-slim
CACHE=${RIGBENCH_CACHE:-$HOME/.cache/rigbench}/docker
LOG=${TMPDIR:-/tmp}/rigbench-dockerd.log
DOCKERD_PIDFILE=${DOCKERD_PIDFILE:-${TMPDIR:-/tmp}/rigbench-dockerd.pid}
root() { [ "$(id -u)" = 0 ]; }
answers() { docker info --format '{{.Driver}}' 2>/dev/null; }
apt_install() {
  root && command -v apt-get >/dev/null 2>&1 || return 1
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >/dev/null 2>&1
}

if ! command -v dockerd >/dev/null 2>&1; then
  apt_install docker.io && echo "docker: installed docker.io" || { echo "docker: docker.io not installed"; exit 0; }
fi

start() {   # storage driver; 0 when a daemon of that driver answers within 60 s
  dockerd --storage-driver="$1" --iptables=false --bridge=none >"$LOG" 2>&1 &
  local pid=$!
  for _ in $(seq 60); do
    if [ "$(answers)" = "$1" ]; then echo "$pid" >"$DOCKERD_PIDFILE"; return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 1
  done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  return 1
}

if driver=$(answers) && [ -n "$driver" ]; then
  echo "docker: a daemon answers ($driver storage)"
elif ! root; then
  echo "docker: no daemon answers and starting one needs root"; exit 0
elif start overlay2 || start vfs; then
  echo "docker: started dockerd ($(answers) storage, no bridge network; log $LOG)"
else
  echo "docker: dockerd did not start: $(tail -n 1 "$LOG")"; exit 0
fi

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "docker: $IMAGE already loaded"; exit 0
fi
tar="$CACHE/debian-bookworm-slim.tar"
if [ ! -s "$tar" ]; then
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap || { echo "docker: no debootstrap to make $IMAGE"; exit 0; }
  mkdir -p "$CACHE"
  dir=$(mktemp -d)
  start_s=$(date +%s)
  if ! debootstrap --variant=minbase --include=python3,git bookworm "$dir" >"$CACHE/debootstrap.log" 2>&1; then
    echo "docker: debootstrap failed ($(tail -n 1 "$CACHE/debootstrap.log")): $IMAGE not made"; rm -rf "$dir"; exit 0
  fi
  rm -rf "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/locale/* "$dir"/usr/share/info/*
  tar -C "$dir" -cf "$tar.part" . && mv "$tar.part" "$tar"
  rm -rf "$dir"
  echo "docker: bootstrapped Debian bookworm in $(( $(date +%s) - start_s )) s (cached in $tar)"
fi
if docker import --change 'CMD ["bash"]' "$tar" "$IMAGE" >/dev/null; then
  echo "docker: imported $IMAGE"
else
  echo "docker: docker import of $tar failed"
fi
exit 0
