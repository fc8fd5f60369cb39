#if canImport(Glibc)
import Glibc
#endif

/// Byte strings kept one after another in one arena, ordered as indices: sorting the values that
/// hold them (rows of Strings, tuples) retains and releases their strings at every comparison,
/// which was most of a sort of 8,000 of them.
public enum ByteOrder {
    /// The indices of the strings `arena[starts[i]..<starts[i + 1]]`, ordered by their bytes
    /// (memcmp, a prefix first); equal strings keep their order. `starts` has one more entry
    /// than there are strings: the arena's end.
    public static func sortedIndices(arena: [UInt8], starts: [Int]) -> [Int] {
        var order = Array(0..<max(starts.count - 1, 0))
        arena.withUnsafeBufferPointer { a in
            starts.withUnsafeBufferPointer { s in
                order.sort { x, y in
                    let lx = s[x + 1] - s[x], ly = s[y + 1] - s[y], n = min(lx, ly)
                    let c = n == 0 ? 0 : memcmp(a.baseAddress! + s[x], a.baseAddress! + s[y], n)
                    if c != 0 { return c < 0 }
                    return lx != ly ? lx < ly : x < y
                }
            }
        }
        return order
    }
}
