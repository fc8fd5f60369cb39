import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// A detached pthread running a closure: the engine runs workspace tasks on these, each blocking
/// in its own sandbox's wait (Dispatch's pool is not for blocking work).
public enum Threads {
    private final class Box: @unchecked Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    public static func detach(_ body: @escaping @Sendable () -> Void) throws(SystemError) {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var handle = pthread_t()
        let rc = pthread_create(&handle, &attributes, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw SystemError("pthread_create", path: "task thread", errno: rc)
        }
    }
}

/// A value shared between threads under a mutex.
public final class Locked<Value>: @unchecked Sendable {
    private var value: Value
    private var mutex = pthread_mutex_t()
    public init(_ value: Value) {
        self.value = value
        pthread_mutex_init(&mutex, nil)
    }
    deinit { pthread_mutex_destroy(&mutex) }
    public func withLock<T, Failure: Error>(_ body: (inout Value) throws(Failure) -> T) throws(Failure) -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body(&value)
    }
}

extension Locked {
    /// A per-command cache: the value kept under `key`, else `make()`'s, kept for the next caller
    /// (a workspace asks for the same profile, BPF program or directory listing once per task).
    /// `make` runs outside the lock: two threads may compute one value once each, the last kept.
    public func cached<Key: Hashable, Element, Failure: Error>(_ key: Key, _ make: () throws(Failure) -> Element) throws(Failure) -> Element
        where Value == [Key: Element] {
        if let known = withLock({ $0[key] }) { return known }
        let made = try make()
        withLock { $0[key] = made }
        return made
    }
}

/// Work spread over the CPUs, for the many small independent steps of a check or a recording
/// (a stat, a hash, a store opened per item).
public enum Parallel {
    /// `body(i)` for every `i` in `0..<count`, on `workers` threads, each taking one contiguous
    /// part (neighbouring items, such as names in one directory, stay on one thread); the results
    /// in order. On the calling thread alone when there is one worker. Inlinable: unspecialised
    /// across modules, it cost the 5,045-file no-op 9 M instructions more than the loop it replaced.
    @inlinable public static func map<T>(_ count: Int, workers: Int = ProcessInfo.cpuCount, _ body: @Sendable (Int) -> T) -> [T] {
        let workers = Swift.max(1, Swift.min(workers, count))
        guard workers > 1 else { return (0..<count).map { body($0) } }
        let slots = Slots<T?>(count: count, initial: nil)
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            for i in (count * worker / workers)..<(count * (worker + 1) / workers) { slots.set(i, body(i)) }
        }
        return (0..<count).map { slots.get($0)! }
    }

    /// `a()` and `b()` at once, on two CPUs when there are two: two independent steps of one stage.
    public static func both<A, B>(_ a: @Sendable () -> A, _ b: @Sendable () -> B) -> (A, B) {
        guard ProcessInfo.cpuCount > 1 else { return (a(), b()) }
        let first = Slots<A?>(count: 1, initial: nil), second = Slots<B?>(count: 1, initial: nil)
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            if i == 0 { first.set(0, a()) } else { second.set(0, b()) }
        }
        return (first.get(0)!, second.get(0)!)
    }

    /// One result slot per item: each index is written by one worker only and read after
    /// `concurrentPerform` returns, which is why unchecked Sendable is sound here.
    @usableFromInline final class Slots<Value>: @unchecked Sendable {
        @usableFromInline let buffer: UnsafeMutableBufferPointer<Value>
        @inlinable init(count: Int, initial: Value) {
            buffer = .allocate(capacity: count)
            buffer.initialize(repeating: initial)
        }
        @inlinable func set(_ i: Int, _ value: Value) { buffer[i] = value }
        @inlinable func get(_ i: Int) -> Value { buffer[i] }
        deinit {
            buffer.deinitialize()
            buffer.deallocate()
        }
    }
}
