# Sourced by the other scripts: makes sure what they need is installed.
#
# need_packages PACKAGE:COMMAND...  installs each Debian/Ubuntu PACKAGE whose COMMAND is missing
#                                   (as root, or through sudo); without either, says what is
#                                   missing and goes on (tests that need it will say so).
# need_rust                         fails with instructions when cargo is missing.

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        return 1
    fi
}

need_packages() {
    missing=""
    for pair in "$@"; do
        pkg=${pair%%:*}
        cmd=${pair#*:}
        if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/sbin/$cmd" ]; then
            missing="$missing $pkg"
        fi
    done
    [ -z "$missing" ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "note: please install:$missing (no apt-get here)" >&2
        return 0
    fi
    echo "installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    if as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
        return 0
    fi
    echo "note: could not install$missing (not root and no sudo); tests that need them will say so" >&2
}

need_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        [ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH" && export PATH && return 0
                echo "error: Rust (1.85 or newer) is not installed; install it with rustup (https://rustup.rs), then run this again" >&2
        exit 1
    fi
}
