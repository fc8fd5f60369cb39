#if canImport(Glibc)
import Glibc
#endif

/// C strings and arrays that must stay valid and unmoved while the child reads the plan.
final class CStringArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    func string(_ s: String) -> UnsafePointer<CChar> {
        let p = strdup(s)!
        allocations.append(UnsafeMutableRawPointer(p))
        return UnsafePointer(p)
    }

    func optionalString(_ s: String?) -> UnsafePointer<CChar>? { s.map(string) }

    /// A NULL-terminated array of C strings.
    func array(_ strings: [String]) -> UnsafePointer<UnsafePointer<CChar>?> {
        let raw = malloc(MemoryLayout<UnsafePointer<CChar>?>.stride * (strings.count + 1))!
        allocations.append(raw)
        let p = raw.bindMemory(to: UnsafePointer<CChar>?.self, capacity: strings.count + 1)
        for (i, s) in strings.enumerated() { p[i] = string(s) }
        p[strings.count] = nil
        return UnsafePointer(p)
    }

    func buffer<T>(_ values: [T]) -> UnsafePointer<T>? {
        guard !values.isEmpty else { return nil }
        let raw = malloc(MemoryLayout<T>.stride * values.count)!
        allocations.append(raw)
        let p = raw.bindMemory(to: T.self, capacity: values.count)
        p.initialize(from: values, count: values.count)
        return UnsafePointer(p)
    }

    deinit {
        for p in allocations { free(p) }
    }
}
