import DgrunProvision
import DgrunRuntime
import DgrunSpec
import DgrunSystem

extension Engine {
    /// The sandbox layers this host gives a run of `request`, probed before anything starts.
    public func probeLayers(for request: RunRequest) -> [SandboxLayer] {
        let seccompWanted: Bool
        if let choice = request.seccomp {
            seccompWanted = choice != "unconfined"
        } else {
            seccompWanted = (try? provisioner.profile(for: request))?.seccompPath != nil
        }
        return HostLayers.probe(provisioner: provisioner, seccompWanted: seccompWanted)
    }

    /// The error for required layers the host does not give (exit 125), naming each and its fix;
    /// nil when every one is there.
    public static func missingLayers(_ required: [SandboxLayer.Name], in layers: [SandboxLayer]) -> DgrunError? {
        let missing = layers.filter { required.contains($0.name) && $0.state != .active }
        guard !missing.isEmpty else { return nil }
        let lines = missing.map { layer in
            let why = layer.state == .off ? "it is turned off for this run: \(layer.detail)" : layer.detail
            let fix = layer.state == .off ? "remove --seccomp unconfined (or use a profile with a filter), or drop \(layer.name.rawValue) from --require"
                : layer.fix ?? "drop \(layer.name.rawValue) from --require"
            return "  - \(layer.name.rawValue) (\(SandboxLayer.describe(layer.name))): \(why)\n    fix: \(fix)"
        }
        return DgrunError("required sandbox layers are not available on this runner; nothing was started:\n" + lines.joined(separator: "\n"),
                          code: .sandbox)
    }
}
