# Shared by the scripts: make sure wgpu will find a GPU adapter.
# On Linux without a Vulkan driver, install the Vulkan loader and Mesa's drivers, whose
# `lavapipe` runs every kernel on the CPU. macOS (Metal) and Windows (DX12) need nothing.

# Whether the Vulkan loader (libvulkan.so.1) is installed. ldconfig lives in /sbin, which is
# not on every user's PATH, so the usual library directories are looked at too.
has_vulkan_loader() {
    local ldconfig lib
    for ldconfig in ldconfig /sbin/ldconfig /usr/sbin/ldconfig; do
        if command -v "$ldconfig" >/dev/null 2>&1; then
            # Not `grep -q`: under `pipefail`, ldconfig killed by SIGPIPE would fail the check.
            "$ldconfig" -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null && return 0
            break
        fi
    done
    for lib in /usr/lib/*/libvulkan.so.1 /lib/*/libvulkan.so.1 /usr/lib64/libvulkan.so.1 \
        /usr/lib/libvulkan.so.1 /usr/local/lib/libvulkan.so.1; do
        [ -e "$lib" ] && return 0
    done
    return 1
}

# Whether the Vulkan loader will find a driver: a driver manifest (ICD JSON) named by
# VK_DRIVER_FILES / VK_ICD_FILENAMES when set (as the loader does), else one in any of the
# loader's standard directories. Each directory is checked on its own: a directory without
# manifests (Debian's /etc/vulkan/icd.d) must not hide the others.
has_vulkan_driver() {
    has_vulkan_loader || return 1
    local files="${VK_DRIVER_FILES:-${VK_ICD_FILENAMES:-}}" entry dir json
    if [ -n "$files" ]; then
        local IFS=:
        for entry in $files; do
            if [ -f "$entry" ]; then
                return 0
            elif [ -d "$entry" ]; then
                for json in "$entry"/*.json; do
                    [ -f "$json" ] && return 0
                done
            fi
        done
        return 1
    fi
    for dir in /usr/local/share/vulkan/icd.d /usr/share/vulkan/icd.d /etc/vulkan/icd.d \
        "${XDG_DATA_HOME:-${HOME:-/nonexistent}/.local/share}/vulkan/icd.d"; do
        for json in "$dir"/*.json; do
            [ -f "$json" ] && return 0
        done
    done
    return 1
}

ensure_adapter() {
    [ "$(uname -s)" = Linux ] || return 0
    has_vulkan_driver && return 0
    echo "metallic: no Vulkan driver found; installing libvulkan1 and mesa-vulkan-drivers (lavapipe)" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    # apt's and dpkg's progress goes to stderr: stdout belongs to the script's caller.
    $sudo apt-get update -qq >&2 || return 1
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        libvulkan1 mesa-vulkan-drivers >&2 || return 1
    has_vulkan_driver || {
        echo "metallic: still no Vulkan driver after installing mesa-vulkan-drivers" >&2
        return 1
    }
}

# Installs Debian packages (with sudo unless root); apt's output goes to stderr, which keeps
# stdout for the script's caller.
apt_install() {
    [ "$#" -gt 0 ] || return 0
    echo "metallic: installing $*" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Makes the venv $1 from the pinned requirements file $2 (installing python3-venv when python3
# cannot make one). A venv made from other pins, or half made, is made again.
ensure_venv() {
    local venv=$1 requirements=$2
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_install python3-venv
    if ! cmp -s "$requirements" "$venv/requirements.txt"; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
        cp "$requirements" "$venv/requirements.txt"
    fi
}

ensure_cargo() {
    command -v cargo >/dev/null 2>&1 && return 0
    echo "metallic: cargo not found; install Rust (https://rustup.rs) and run this again" >&2
    exit 1
}

# Mesa's window-system code warns when this is unset; metallic needs no display.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
