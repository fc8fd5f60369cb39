import Testing
@testable import DgrunCgroups
@testable import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

@Suite struct CgroupParsingTests {
    // As on this project's hybrid machines.
    let mountinfo = """
    30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
    31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
    33 30 0:29 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
    34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
    35 30 0:31 /sub /sys/fs/cgroup/pids rw,nosuid shared:16 - cgroup cgroup rw,pids
    36 30 0:32 / /sys/fs/cgroup/systemd rw shared:17 - cgroup cgroup rw,xattr,name=systemd
    40 25 0:40 / /mnt/with\\040space rw - ext4 /dev/vda rw
    """
    let selfCgroup = """
    9:name=systemd:/
    4:memory:/jobs/a
    3:cpu,cpuacct:/
    2:pids:/sub/x
    0::/
    """

    @Test func parsesMountsAndMemberships() {
        let mounts = CgroupMount.parse(mountinfo: mountinfo)
        #expect(mounts.count == 5)
        #expect(mounts.first { $0.version == 2 }?.mountPoint == "/sys/fs/cgroup/unified")
        #expect(mounts.first { $0.controllers.contains("cpuacct") }?.controllers == ["cpu", "cpuacct"])
        let members = CgroupMembership.parse(selfCgroup)
        #expect(members.count == 5)
        #expect(members[1] == CgroupMembership(hierarchy: 4, controllers: ["memory"], path: "/jobs/a"))

        let driver = HybridDriver(memberships: members, mounts: mounts, layout: .hybrid)
        #expect(driver.v1Bases["memory"] == "/sys/fs/cgroup/memory/jobs/a")
        #expect(driver.v1Bases["cpu"] == "/sys/fs/cgroup/cpu,cpuacct")
        #expect(driver.v1Bases["cpuacct"] == nil, "CPU time comes from rusage, not cpuacct")
        // A mount whose root is not "/" (a cgroup namespace or bind): the path is relative to it.
        #expect(driver.v1Bases["pids"] == "/sys/fs/cgroup/pids/x")
    }

    @Test func unescapesMountinfo() {
        #expect(CgroupMount.unescape("/mnt/with\\040space") == "/mnt/with space")
    }

    @Test func v2LimitWrites() {
        let writes = V2Driver.limitWrites(ResourceLimits(memoryBytes: 64 << 20, cpus: 0.5, pids: 32))
        #expect(writes.map(\.file) == ["memory.max", "memory.swap.max", "cpu.max", "pids.max"])
        #expect(writes[0].value == "67108864")
        #expect(writes[2].value == "50000 100000")
        #expect(V2Driver.limitWrites(ResourceLimits()).isEmpty)
    }

    @Test func v1LimitWrites() {
        let writes = HybridDriver.limitWrites(ResourceLimits(memoryBytes: 64 << 20, cpus: 1.5, pids: 7), hasMemsw: true)
        #expect(writes.map(\.file) == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
                                       "cpu.cfs_period_us", "cpu.cfs_quota_us", "pids.max"])
        #expect(writes[3].value == "150000")
        #expect(HybridDriver.limitWrites(ResourceLimits(memoryBytes: 1 << 30), hasMemsw: false).count == 1)
    }

    @Test func runNamesCarryTheirOwner() throws {
        let name = RunCgroupName.make()
        let owner = try #require(RunCgroupName.owner(of: name))
        #expect(owner.pid == getpid())
        #expect(!RunCgroupName.isStale(name))  // we are alive
        #expect(RunCgroupName.isStale("dgrun-999999999-1-1"))  // no such pid
        #expect(RunCgroupName.isStale("dgrun-\(getpid())-1-1"))  // our pid, another start time: reused pid
        #expect(!RunCgroupName.isStale("dgrunner-1-1-1"))  // not ours: never touched
        #expect(!RunCgroupName.isStale("user.slice"))
    }

    @Test func readsStatsFromAFixtureTree() throws {
        var template = Array("/tmp/dgrun-fixture-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        let dir = String(cString: try #require(made))
        defer {
            for f in FileIO.listDirectory(dir) { unlink(dir + "/" + f) }
            rmdir(dir)
        }
        try FileIO.write(dir + "/memory.peak", "1048576\n", create: true)
        try FileIO.write(dir + "/memory.events", "low 0\nhigh 3\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n", create: true)
        try FileIO.write(dir + "/cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_throttled 2\n", create: true)
        try FileIO.write(dir + "/pids.peak", "12\n", create: true)
        let stats = V2Run(directory: dir).stats()
        #expect(stats.memoryPeakBytes == 1 << 20)
        #expect(stats.oomKills == 1)
        #expect(stats.cpuUserMicros == 1000 && stats.cpuSystemMicros == 500)
        #expect(stats.pidsPeak == 12)
    }
}
