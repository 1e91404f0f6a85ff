#!/bin/sh
# Install bubblewrap (the eval sandbox) when this user can; otherwise say exactly how.
command -v bwrap >/dev/null 2>&1 && exit 0
sudo=""
[ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && sudo="sudo -n"; }
if [ "$(id -u)" = 0 ] || [ -n "$sudo" ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "installing bubblewrap (the eval sandbox): apt-get install -y bubblewrap"
        $sudo apt-get install -y -q bubblewrap >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && \
            $sudo apt-get install -y -q bubblewrap >/dev/null; }
    elif command -v dnf >/dev/null 2>&1; then
        echo "installing bubblewrap (the eval sandbox): dnf install -y bubblewrap"; $sudo dnf install -y -q bubblewrap
    elif command -v pacman >/dev/null 2>&1; then
        echo "installing bubblewrap (the eval sandbox): pacman -S bubblewrap"; $sudo pacman -S --noconfirm bubblewrap
    fi
fi
command -v bwrap >/dev/null 2>&1 && exit 0
echo "bubblewrap is not installed, so the demo skips its eval part. Install it, then run make demo again:"
echo "  Debian/Ubuntu: sudo apt-get install -y bubblewrap   Fedora: sudo dnf install bubblewrap   Arch: sudo pacman -S bubblewrap"
exit 0
