import KeyrackCore
import SecretSharing
import TrustQuorum

// Healing every fault, letting the rack settle, and the liveness checks.

extension Simulator {
    // MARK: - Healing and liveness

    /// Heals every fault, lets the cluster settle, and checks liveness.
    public func finish() -> SimulationReport {
        guard violations.isEmpty else { return report(liveness: false, detail: "stopped at a violation") }
        if partitionMask != nil { apply(.heal) }
        for index in 0..<nodes.count where !nodes[index].up { apply(.restart(node: index)) }
        apply(.reconnectAll)
        var detail = "did not settle"
        for round in 0..<200 where violations.isEmpty {
            // A run that is still in LRTQ is upgraded while it heals.
            if controlPlane.inLrtq && !controlPlane.isReconfiguring { apply(.upgradeFromLrtq) }
            deliverAll()
            apply(.tick)
            deliverAll()
            if let config = controlPlane.lastCommitted {
                for member in config.sortedMembers {
                    let index = indexOf[member]!
                    if loadedBy[index] != config.epoch,
                        nodes[index].persisted.latestCommittedEpoch == config.epoch
                    {
                        apply(.loadSecret(node: index, epoch: config.epoch.value))
                    }
                }
                deliverAll()
            }
            if let problem = unsettled() {
                detail = problem
                if round % 20 == 19 { apply(.reconnectAll) }
                continue
            }
            if let problem = checkOlderEpochs() {
                return report(liveness: false, detail: problem)
            }
            if let problem = checkLrtqSecretReadable() {
                lrtqSecretReadable = false
                return report(liveness: false, detail: problem)
            }
            return report(liveness: violations.isEmpty, detail: nil)
        }
        return report(liveness: false, detail: detail)
    }

    func deliverAll() {
        var budget = 1_000_000
        while let link = activeLinks.first, violations.isEmpty, budget > 0 {
            budget -= 1
            apply(.deliver(from: link / nodes.count, to: link % nodes.count))
        }
    }

    /// `nil` once the last configuration is committed and loaded everywhere.
    func unsettled() -> String? {
        guard let config = controlPlane.lastCommitted else { return "nothing was ever committed" }
        if controlPlane.isReconfiguring { return "a reconfiguration is still under way" }
        for member in config.sortedMembers where nodes[indexOf[member]!].persisted.latestCommittedEpoch != config.epoch
        {
            return "\(member) has not committed epoch \(config.epoch)"
        }
        for member in config.sortedMembers where loadedBy[indexOf[member]!] != config.epoch {
            return "\(member) has not loaded the secret of \(config.epoch)"
        }
        return nil
    }

    /// Every member reads a sample of older committed epochs, matching what was loaded before.
    func checkOlderEpochs() -> String? {
        guard let config = controlPlane.lastCommitted else { return "nothing committed" }
        let epochs = controlPlane.committedEpochs
        var sample = epochs.count <= 8 ? epochs : [epochs[0], epochs[epochs.count / 2], epochs[epochs.count - 2]]
        sample.append(config.epoch)
        for member in config.sortedMembers {
            let index = indexOf[member]!
            for epoch in sample {
                // Polled: the first call may start gathering shares.
                for _ in 0..<3 {
                    apply(.loadSecret(node: index, epoch: epoch.value))
                    if lastLoad != nil { break }
                    deliverAll()
                }
                guard lastLoad != nil else { return "\(member) cannot read the secret of epoch \(epoch)" }
            }
        }
        return violations.isEmpty ? nil : "violation while reading older epochs"
    }
}

extension Simulator {
    /// For a run started in LRTQ: every member of the last configuration
    /// reads epoch 1 from the chain, and it is the LRTQ secret the dealer drew.
    func checkLrtqSecretReadable() -> String? {
        guard let expected = lrtqSecret else { return nil }
        guard let config = controlPlane.lastCommitted, !controlPlane.inLrtq else {
            return "the rack was never upgraded from LRTQ"
        }
        for member in config.sortedMembers {
            let index = indexOf[member]!
            for _ in 0..<3 {
                apply(.loadSecret(node: index, epoch: Epoch.lrtq.value))
                if lastLoad != nil { break }
                deliverAll()
            }
            guard let secret = lastLoad else { return "\(member) cannot read the LRTQ secret as epoch 1" }
            guard secret == expected else { return "\(member) reads a different secret than LRTQ's as epoch 1" }
        }
        lrtqSecretReadable = true
        return violations.isEmpty ? nil : "violation while reading the LRTQ secret"
    }
}

/// A fast deterministic generator for choosing events (not for secrets).
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
