@testable import DgrunStore
import Testing

/// The stores a command keeps open: bounded, and never two Stores of one directory at once.
@Suite struct StoreCacheTests {
    let scratch = Scratch()

    @Test func theCapacityFollowsTheDescriptorLimit() {
        #expect(StoreCache.capacity(openFiles: 1024) == 192)
        #expect(StoreCache.capacity(openFiles: 100) == 16)
        #expect(StoreCache.capacity(openFiles: Int.max) == 1024)
    }

    /// Past the capacity the longest kept is closed for room, unless someone still holds it: then
    /// it is the one found again, not a second Store of the same file.
    @Test func aStoreClosedForRoomIsFoundAgainWhileHeld() throws {
        var cache = StoreCache(capacity: 2)
        let dirs = (0..<3).map { scratch.directory("store-cache-\($0)") }
        var held: Store? = try Store(directory: dirs[0])
        cache.keep(dirs[0], held!)
        cache.keep(dirs[1], try Store(directory: dirs[1]))
        cache.keep(dirs[2], try Store(directory: dirs[2]))   // dirs[0] is closed for room...
        #expect(cache.find(dirs[0]) === held)                 // ...but held here: found, kept again
        #expect(cache.find(dirs[1]) == nil)                   // closed for it, held by nobody: gone
        #expect(cache.find(dirs[2]) != nil)
        held = nil
        cache.release(dirs[0])
        #expect(cache.find(dirs[0]) == nil)                   // released and dropped: closed
    }
}
