import DgrunSystem
import Testing
@testable import DgrunSeccomp
@testable import DgrunSpec

/// The profiles shipped in profiles/, found from this source file.
let repositoryRoot: String = {
    var parts = #filePath.split(separator: "/").map(String.init)
    parts.removeLast(3)  // Tests/DgrunSpecTests/ProfileTests.swift
    return "/" + parts.joined(separator: "/")
}()

@Suite struct ProfileTests {
    @Test func profilesAreLookedForAboveTheExecutableNearestFirst() {
        // (After $DGRUN_PROFILE_DIR, when it is set.)
        func search(_ executable: String) -> [String] {
            Array(ProfileLocator.searchDirectories(executable: executable).drop { $0 != "/etc/dgrun/profiles" })
        }
        #expect(search("/opt//dgrun/bin/dgrun") == [
            "/etc/dgrun/profiles",
            "/opt/dgrun/bin/share/dgrun/profiles", "/opt/dgrun/bin/profiles",
            "/opt/dgrun/share/dgrun/profiles", "/opt/dgrun/profiles",
            "/opt/share/dgrun/profiles", "/opt/profiles",
            "/share/dgrun/profiles", "/profiles",
        ])
        #expect(search("dgrun") == ["/etc/dgrun/profiles", "/share/dgrun/profiles", "/profiles"])
    }

    @Test func kernelPathsAndUserNamespacesAreSafeUnlessTurnedOff() throws {
        let absent = try SandboxProfile.decode(Array(#"{"name": "x"}"#.utf8), path: "p.json")
        #expect(absent.readonlyPaths.contains("/proc/sys") && absent.maskedPaths.contains("/proc/kcore"))
        #expect(absent.userNamespaces == .deny)
        let off = try SandboxProfile.decode(Array(#"{"name": "x", "readonly_paths": [], "masked_paths": [], "user_namespaces": "allow"}"#.utf8),
                                            path: "p.json")
        #expect(off.readonlyPaths.isEmpty && off.maskedPaths.isEmpty && off.userNamespaces == .allow)
        for name in ["default", "strict"] {
            let shipped = try ProfileLocator.load(repositoryRoot + "/profiles/\(name).json", executable: "/nonexistent/dgrun")
            #expect(shipped.readonlyPaths == SandboxProfile.defaultReadonlyPaths, "\(name)")
            #expect(shipped.maskedPaths == SandboxProfile.defaultMaskedPaths, "\(name)")
        }
        #expect(try SeccompCompiler.userNamespaceGuard().count > 8)
    }

    @Test(arguments: ["default", "strict", "nested"])
    func shippedProfilesLoadAndCompile(name: String) throws {
        if name == "nested" {
            let nested = try ProfileLocator.load(repositoryRoot + "/profiles/nested.json", executable: "/nonexistent/dgrun")
            #expect(nested.seccompPath == nil && nested.userNamespaces == .allow && nested.capabilities == ["CAP_SETFCAP"])
            return
        }
        let profile = try ProfileLocator.load(repositoryRoot + "/profiles/\(name).json", executable: "/nonexistent/dgrun")
        #expect(profile.name == name)
        let path = try #require(profile.seccompPath)
        let program = try SeccompCompiler.load(path: path)
        #expect(program.count > 8 && program.count % 8 == 0)
    }

    @Test func locatesByNameFromTheSourceTree() throws {
        let exe = repositoryRoot + "/.build/x86_64-unknown-linux-gnu/debug/dgrun"
        #expect(try ProfileLocator.locate("strict", executable: exe) == repositoryRoot + "/profiles/strict.json")
        #expect(throws: DgrunError.self) { try ProfileLocator.locate("no-such-profile", executable: exe) }
    }

    @Test func malformedProfilesSayWhereTheyAreWrong() {
        let cases: [(String, String)] = [
            ("{", "not a valid dgrun profile"),
            (#"{"description": "x"}"#, "missing key \"name\""),
            (#"{"name": "x", "network": "sometimes"}"#, "network"),
            (#"{"name": "x", "capabilities": ["CAP_NOPE"]}"#, "unknown capability"),
            (#"{"name": "x", "masked_path": []}"#, "unknown key \"masked_path\""),
            (#"{"name": "x", "readonly_paths": ["proc/sys"]}"#, "absolute paths"),
            (#"{"name": "x", "masked_paths": ["/proc/../etc"]}"#, "absolute paths"),
            (#"{"name": "x", "user_namespaces": "sometimes"}"#, "user_namespaces"),
        ]
        for (text, expected) in cases {
            do {
                _ = try SandboxProfile.decode(Array(text.utf8), path: "bad.json")
                Issue.record("accepted \(text)")
            } catch {
                #expect(error.message.contains(expected), "\(error.message)")
                #expect(error.message.contains("bad.json"))
            }
        }
    }

    @Test func seccompProfileErrors() throws {
        #expect(throws: DgrunError.self) {
            try SeccompProfile.decode(Array(#"{"syscalls": []}"#.utf8), path: "s.json")
        }
        let badAction = try SeccompProfile.decode(
            Array(#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["bpf"], "action": "SCMP_ACT_MAYBE"}]}"#.utf8),
            path: "s.json")
        #expect(throws: DgrunError.self) { try SeccompCompiler.compile(badAction, path: "s.json") }
        // Unknown syscall names are skipped, as runc and Docker do.
        let unknown = try SeccompProfile.decode(
            Array(#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["no_such_call", "bpf"], "action": "SCMP_ACT_ERRNO"}]}"#.utf8),
            path: "s.json")
        #expect(try SeccompCompiler.compile(unknown, path: "s.json").count > 0)
    }
}
