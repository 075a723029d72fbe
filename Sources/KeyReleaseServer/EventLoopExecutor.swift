import KeyRelease
import NIOCore
import NIOPosix

/// Runs Swift concurrency on SwiftNIO's event loops instead of a separate
/// cooperative thread pool.
///
/// A request's bytes arrive on an event loop; by default its handler then
/// resumes on the cooperative pool, and every response write and every
/// awaited reply hops back, each hop a wake-up (an eventfd write) and a
/// context switch. Under load on two cores those hops cost the KMS and the
/// load generator more than the DCAP verification, and the extra threads
/// (two event loops plus two pool threads per process) compete with each
/// other for the same cores, which shows up as tail latency. With the event
/// loops as the global executor a request runs start to finish on the loop
/// that read it.
public enum EventLoopExecutor {
    /// Installs the singleton event loop group as the global executor. Call
    /// it once, first thing in `main`, from the main thread, before any task
    /// runs on the global executor. Returns whether it was installed (it is
    /// not on platforms where SwiftNIO does not support it; everything then
    /// runs as before).
    ///
    /// With `threads`, the group has that many event loops instead of one per
    /// core (a load generator sharing the machine with the server it loads
    /// may want fewer).
    @discardableResult
    public static func install(threads: Int? = nil) -> Bool {
        if let threads { NIOSingletons.groupLoopCountSuggestion = threads }
        return NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
}
