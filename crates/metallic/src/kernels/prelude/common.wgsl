// Shared by every kernel; `compose_source` places it after `alias T = ...;`.

// 1-D workgroup size; pipelines set it per key.
override WG: u32 = 256u;

// Linear index of an invocation in a 1-D grid that the host folded into x, y and z when it had
// more workgroups than one dimension allows.
fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + (gid.y + gid.z * nwg.y) * nwg.x * WG;
}
