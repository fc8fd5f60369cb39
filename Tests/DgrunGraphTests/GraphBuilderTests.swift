@testable import DgrunGraph
import Testing

/// Library names are told by the name alone, on thousands of paths per graph.
@Suite struct LibraryNameTests {
    @Test func sharedObjectNames() {
        let builder = GraphBuilder(taskDirectory: "/t", argv: ["x"], environment: [])
        for yes in ["/usr/lib/libc.so.6", "/lib/libz.so", "libm.so.6.0.1", "/etc/ld.so.cache"] {
            #expect(builder.looksLikeLibrary(yes), "\(yes)")
        }
        for no in ["/usr/lib/libc.a", "/usr/share/doc/soap.txt", "/x.so/readme", "/a/b.sox", ""] {
            #expect(!builder.looksLikeLibrary(no), "\(no)")
        }
    }
}
