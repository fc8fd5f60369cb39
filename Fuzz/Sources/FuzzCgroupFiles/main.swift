import DgrunCgroups
import FuzzSupport

// The cgroup files dgrun reads: /proc/self/cgroup, /proc/self/mountinfo (a mount with odd
// paths is task-influenced), and the key-value and PSI files of a run's cgroup (memory.stat,
// memory.events, cpu.stat, *.pressure).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let text = FuzzInput(data, size).text
    let memberships = CgroupMembership.parse(text)
    let mounts = CgroupMount.parse(mountinfo: text)
    for mount in mounts.prefix(16) {
        for member in memberships.prefix(16) { _ = mount.directory(for: member.path) }
    }
    // The v1 driver's bases from what was parsed (legacy: no unified tree to probe on disk).
    _ = HybridDriver(memberships: memberships, mounts: mounts, layout: .legacy).v1Bases
    _ = CgroupSample.parseKeyed(text)
    _ = CgroupSample.parsePressure(text)
    return 0
}

runFuzzer(fuzz)
