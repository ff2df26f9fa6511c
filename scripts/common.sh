# shellcheck shell=bash
# Helpers shared by run-demo, run-tests and apxs-wrapper. This file is
# sourced, not executed. The sourcing script sets ITK_ROOT (the checkout).

# Debian packages the build and the tests need. run-demo leaves
# libapache2-mpm-itk out: it only matters to the tests, which compare
# against the C module, and it owns /etc/apache2/mods-available/mpm_itk.load.
# shellcheck disable=SC2034 # used by the scripts that source this file
ITK_BUILD_PACKAGES=(apache2 apache2-dev libclang-dev libapache2-mod-php curl
    build-essential pkg-config)
# shellcheck disable=SC2034
ITK_TEST_PACKAGES=("${ITK_BUILD_PACKAGES[@]}" libapache2-mpm-itk)

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

# Sets CARGO to a cargo of Rust >= ITK_MIN_RUST, or explains how to get one
# and exits 1.
itk_find_cargo() {
    local c candidates=() ver major minor want_major want_minor
    CARGO=
    if command -v cargo >/dev/null 2>&1; then
        candidates+=("$(command -v cargo)")
    fi
    candidates+=("${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/cargo" /root/.cargo/bin/cargo
        /usr/local/cargo/bin/cargo)
    for c in "${candidates[@]}"; do
        if [ -x "$c" ]; then
            CARGO=$c
            break
        fi
    done
    if [ -z "$CARGO" ]; then
        cat >&2 <<EOF
${0##*/}: cargo was not found. This crate needs Rust >= $ITK_MIN_RUST; Debian 12's
own rustc (1.63) is too old. Install a current Rust with rustup, as the user
that runs this script (root):

    apt-get install -y curl build-essential
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    . "\$HOME/.cargo/env"

then run ${0##*/} again.
EOF
        exit 1
    fi
    # rustup's proxies and build scripts look for their siblings in PATH.
    PATH="$(dirname "$CARGO"):$PATH"
    export PATH
    ver=$("$CARGO" -V 2>/dev/null | awk '{print $2}') || ver=
    major=${ver%%.*}
    minor=${ver#*.}
    minor=${minor%%.*}
    want_major=${ITK_MIN_RUST%%.*}
    want_minor=${ITK_MIN_RUST#*.}
    if ! [[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] ||
        [ "$major" -lt "$want_major" ] ||
        { [ "$major" -eq "$want_major" ] && [ "$minor" -lt "$want_minor" ]; }; then
        cat >&2 <<EOF
${0##*/}: $CARGO is version '${ver:-unknown}'; Rust >= $ITK_MIN_RUST is needed
(Debian 12's packaged rustc 1.63 is too old). With rustup:

    rustup update stable && rustup default stable

otherwise install rustup as described at https://rustup.rs and run ${0##*/} again.
EOF
        exit 1
    fi
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
