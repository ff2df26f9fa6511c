# shellcheck shell=bash
# Helpers shared by the scripts of this checkout (run-tests, run-demo,
# apxs-wrapper, packaging/*, bench/run, .ci/run). This file is sourced, not
# executed. The sourcing script sets ITK_ROOT (the checkout).

# Debian packages the build and the tests need. run-demo leaves
# libapache2-mpm-itk out: it only matters to the tests, which compare
# against the C module, and it owns /etc/apache2/mods-available/mpm_itk.load.
# shellcheck disable=SC2034 # used by the scripts that source this file
ITK_BUILD_PACKAGES=(apache2 apache2-dev libclang-dev libapache2-mod-php curl
    build-essential pkg-config)
# shellcheck disable=SC2034
# openssl: the TLS test's certificate (ALPN h2 must end as HTTP/1.1).
ITK_TEST_PACKAGES=("${ITK_BUILD_PACKAGES[@]}" libapache2-mpm-itk openssl)

# The oldest Rust that builds this crate (edition 2024).
ITK_MIN_RUST=1.85

itk_die() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

itk_pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# itk_install_missing PKG...: apt-get installs those of PKG that are not
# installed yet (apt-get update first), quietly, never prompting. Does
# nothing when everything is there. On a system without dpkg/apt it only
# says what it would need.
itk_install_missing() {
    local missing=() p log
    if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        echo "not a Debian-based system: make sure the equivalents of these are installed: $*" >&2
        return 0
    fi
    for p in "$@"; do
        itk_pkg_installed "$p" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    echo "==> installing missing packages: ${missing[*]}"
    log=$(mktemp /tmp/mpm-itk-apt.XXXXXX)
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        itk_die "apt-get failed to install: ${missing[*]}"
    fi
    rm -f "$log"
}

# itk_rust_ok CARGO: true if that cargo is Rust >= ITK_MIN_RUST.
itk_rust_ok() {
    local ver major minor
    ver=$("$1" -V 2>/dev/null | awk '{print $2}') || return 1
    major=${ver%%.*}
    minor=${ver#*.}
    minor=${minor%%.*}
    [[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] || return 1
    [ "$major" -gt "${ITK_MIN_RUST%%.*}" ] ||
        { [ "$major" -eq "${ITK_MIN_RUST%%.*}" ] && [ "$minor" -ge "${ITK_MIN_RUST#*.}" ]; }
}

# Sets CARGO to a cargo of Rust >= ITK_MIN_RUST (PATH first, then the usual
# rustup locations), or explains how to get one and exits 1.
itk_find_cargo() {
    local c too_old=''
    local candidates=()
    CARGO=
    if command -v cargo >/dev/null 2>&1; then
        candidates+=("$(command -v cargo)")
    fi
    candidates+=("${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/cargo" /root/.cargo/bin/cargo
        /usr/local/cargo/bin/cargo)
    for c in "${candidates[@]}"; do
        [ -x "$c" ] || continue
        if itk_rust_ok "$c"; then
            CARGO=$c
            break
        fi
        [ -n "$too_old" ] || too_old="$c ($("$c" -V 2>/dev/null || echo 'version unknown'))"
    done
    if [ -z "$CARGO" ]; then
        if [ -n "$too_old" ]; then
            echo "${0##*/}: only an old cargo was found: $too_old" >&2
        else
            echo "${0##*/}: cargo was not found." >&2
        fi
        cat >&2 <<EOF
This crate needs Rust >= $ITK_MIN_RUST; Debian 12's own rustc/cargo packages
(1.63) are too old. Install a current Rust with rustup, as the user that
runs this script (root):

    apt-get install -y curl build-essential
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    . "\$HOME/.cargo/env"

(or "rustup update stable" if rustup is already there), then run
${0##*/} again.
EOF
        exit 1
    fi
    # rustup's proxies and build scripts look for their siblings in PATH.
    PATH="$(dirname "$CARGO"):$PATH"
    export PATH
}

# itk_usage SCRIPT: prints the comment block at the top of SCRIPT (after
# the #! line), without the leading "# ", as its --help.
itk_usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}

# Where cargo puts the module.
itk_so_path() {
    local target=${CARGO_TARGET_DIR:-$ITK_ROOT/target}
    case $target in /*) ;; *) target=$ITK_ROOT/$target ;; esac
    printf '%s\n' "$target/release/libmpm_itk.so"
}

# Builds the release module and checks that it is there.
itk_build_release() {
    local so
    so=$(itk_so_path)
    echo "==> cargo build --release"
    (cd "$ITK_ROOT" && "$CARGO" build --release)
    [ -f "$so" ] || itk_die "cargo build succeeded but $so is missing"
}
