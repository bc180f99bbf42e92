# Shared by the scripts: make sure wgpu will find a GPU adapter.
# On Linux without a Vulkan driver, install the Vulkan loader and Mesa's drivers, whose
# `lavapipe` runs every kernel on the CPU. macOS (Metal) and Windows (DX12) need nothing.

ensure_adapter() {
    [ "$(uname -s)" = Linux ] || return 0
    if ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' &&
        ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
        return 0
    fi
    echo "metallic: no Vulkan driver found; installing libvulkan1 and mesa-vulkan-drivers (lavapipe)" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends libvulkan1 mesa-vulkan-drivers
}

ensure_cargo() {
    command -v cargo >/dev/null 2>&1 && return 0
    echo "metallic: cargo not found; install Rust (https://rustup.rs) and run this again" >&2
    exit 1
}

# Mesa's window-system code warns when this is unset; metallic needs no display.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
